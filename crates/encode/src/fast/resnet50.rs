//! ResNet-50 (He et al., 2015, "Deep Residual Learning for Image Recognition") in torchvision's
//! layout (v1.5: the stride sits on the 3x3 conv), on the fast kernels. Tensor names follow
//! torchvision (`conv1`, `bn1`, `layer1.0.conv1`, ..., `layer1.0.downsample.0`, `fc`), so a
//! torchvision `state_dict` saved as safetensors loads directly.

use std::path::Path;

use super::layers::{ConvBn, Kind, Pad, Spec};
use super::weights::{linear, Folded, SafetensorsFile, SplitMix, TensorMap, WeightSource};
use super::{in_slices, input_from_nchw, pool_and_classify, BufferPool, FastError, FastOutput};
use crate::kernels::{self, Activation, Conv2dGeom, Nhwc, Padding};

const BN_EPS: f32 = 1e-5;
/// Stages: (blocks, bottleneck width, stride of the first block).
const LAYERS: [(usize, usize, usize); 4] = [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)];
const EXPANSION: usize = 4;
const FEATURES: usize = 2048;

struct Bottleneck {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
    downsample: Option<ConvBn>,
}

pub struct FastResNet50 {
    conv1: ConvBn,
    blocks: Vec<Bottleneck>,
    fc: Folded,
    classes: usize,
    pool: BufferPool,
    sub_batch: usize,
}

fn spec(cin: usize, cout: usize, kernel: usize, stride: usize, act: Activation) -> Spec {
    Spec {
        kind: Kind::Dense,
        cin,
        cout,
        kernel,
        stride,
        pad: Pad::Fixed(kernel / 2),
        act,
    }
}

/// Every conv/BN in the network as (conv name, bn name, spec), in forward order.
fn layer_specs() -> Vec<(String, String, Spec)> {
    use Activation::{Identity, Relu};
    let mut out = vec![("conv1".into(), "bn1".into(), spec(3, 64, 7, 2, Relu))];
    let mut cin = 64;
    for (l, &(blocks, width, stride)) in LAYERS.iter().enumerate() {
        for b in 0..blocks {
            let p = format!("layer{}.{b}", l + 1);
            let s = if b == 0 { stride } else { 1 };
            let cout = width * EXPANSION;
            out.push((
                format!("{p}.conv1"),
                format!("{p}.bn1"),
                spec(cin, width, 1, 1, Relu),
            ));
            out.push((
                format!("{p}.conv2"),
                format!("{p}.bn2"),
                spec(width, width, 3, s, Relu),
            ));
            // ReLU comes after the residual add, which the epilogue does before the activation.
            out.push((
                format!("{p}.conv3"),
                format!("{p}.bn3"),
                spec(width, cout, 1, 1, Relu),
            ));
            if b == 0 {
                out.push((
                    format!("{p}.downsample.0"),
                    format!("{p}.downsample.1"),
                    spec(cin, cout, 1, s, Identity),
                ));
            }
            cin = cout;
        }
    }
    out
}

impl FastResNet50 {
    /// Loads a torchvision ResNet-50 `state_dict` saved as safetensors (1000 classes).
    pub fn from_safetensors(path: &Path) -> Result<Self, FastError> {
        Self::from_weights(&SafetensorsFile::open(path)?, 1000)
    }

    pub fn from_weights(src: &dyn WeightSource, classes: usize) -> Result<Self, FastError> {
        let mut layers = layer_specs().into_iter();
        let mut next = || -> Result<ConvBn, FastError> {
            let (conv, bn, spec) = layers
                .next()
                .ok_or_else(|| FastError::Input("layer list exhausted".into()))?;
            ConvBn::load(src, &conv, &bn, spec, BN_EPS)
        };
        let conv1 = next()?;
        let mut blocks = Vec::new();
        for &(n, _, _) in &LAYERS {
            for b in 0..n {
                let (conv1, conv2, conv3) = (next()?, next()?, next()?);
                let downsample = if b == 0 { Some(next()?) } else { None };
                blocks.push(Bottleneck {
                    conv1,
                    conv2,
                    conv3,
                    downsample,
                });
            }
        }
        let fc = linear(src, "fc", classes, FEATURES)?;
        Ok(Self {
            conv1,
            blocks,
            fc,
            classes,
            pool: BufferPool::default(),
            sub_batch: usize::MAX,
        })
    }

    /// Random weights with torchvision's names and shapes (for benchmarks: no trained ResNet-50
    /// weights ship with the project). Kaiming-uniform convs and mild random BatchNorm statistics
    /// keep activations in a realistic range through all 16 blocks.
    pub fn random_weights(seed: u64, classes: usize) -> TensorMap {
        let mut rng = SplitMix::new(seed);
        let mut map = TensorMap::default();
        let mut put = |name: String, shape: Vec<usize>, data: Vec<f32>| {
            map.0.insert(name, (shape, data));
        };
        for (conv, bn, s) in layer_specs() {
            let fan_in = s.cin * s.kernel * s.kernel;
            let bound = (6.0 / fan_in as f32).sqrt();
            let w = (0..s.cout * fan_in)
                .map(|_| rng.uniform() * bound)
                .collect();
            put(
                format!("{conv}.weight"),
                vec![s.cout, s.cin, s.kernel, s.kernel],
                w,
            );
            let c = s.cout;
            let mut v = |base: f32, spread: f32| -> Vec<f32> {
                (0..c).map(|_| base + spread * rng.uniform()).collect()
            };
            let (g, b, m, var) = (v(1.0, 0.1), v(0.0, 0.1), v(0.0, 0.1), v(1.0, 0.2));
            put(format!("{bn}.weight"), vec![c], g);
            put(format!("{bn}.bias"), vec![c], b);
            put(format!("{bn}.running_mean"), vec![c], m);
            put(format!("{bn}.running_var"), vec![c], var);
        }
        let bound = (1.0 / FEATURES as f32).sqrt();
        let w = (0..classes * FEATURES)
            .map(|_| rng.uniform() * bound)
            .collect();
        let b = (0..classes).map(|_| rng.uniform() * bound).collect();
        put("fc.weight".into(), vec![classes, FEATURES], w);
        put("fc.bias".into(), vec![classes], b);
        map
    }

    /// A ResNet-50 with [`Self::random_weights`].
    pub fn random(seed: u64, classes: usize) -> Result<Self, FastError> {
        Self::from_weights(&Self::random_weights(seed, classes), classes)
    }

    /// Runs a normalised NCHW batch `[n, 3, h, w]`.
    pub fn forward_nchw(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
    ) -> Result<FastOutput, FastError> {
        let (x, s) = input_from_nchw(input, n, 3, h, w)?;
        self.forward_nhwc(&x, s)
    }

    /// Images per internal pass (default: the whole batch). See
    /// [`super::FastEfficientNetLite0::with_sub_batch`].
    pub fn with_sub_batch(mut self, images: usize) -> Self {
        self.sub_batch = images.max(1);
        self
    }

    /// Runs a normalised NHWC batch.
    pub fn forward_nhwc(&self, input: &[f32], shape: Nhwc) -> Result<FastOutput, FastError> {
        in_slices(input, shape, self.sub_batch, |x, s| {
            self.forward_slice(x, s)
        })
    }

    fn forward_slice(&self, input: &[f32], shape: Nhwc) -> Result<FastOutput, FastError> {
        let pool = &self.pool;
        let mut x = pool.take(shape);
        x.data_mut().copy_from_slice(input);
        let stem = self.conv1.forward(&x, None, pool)?;
        pool.give(x);
        let geom = max_pool_geom();
        let mut x = pool.take(geom.output_shape(stem.shape, stem.shape.c)?);
        kernels::max_pool2d(stem.data(), stem.shape, &geom, x.data_mut())?;
        pool.give(stem);
        for b in &self.blocks {
            let h1 = b.conv1.forward(&x, None, pool)?;
            let h2 = b.conv2.forward(&h1, None, pool)?;
            pool.give(h1);
            let out = match &b.downsample {
                Some(d) => {
                    let identity = d.forward(&x, None, pool)?;
                    let out = b.conv3.forward(&h2, Some(&identity), pool)?;
                    pool.give(identity);
                    out
                }
                None => b.conv3.forward(&h2, Some(&x), pool)?,
            };
            pool.give(h2);
            pool.give(std::mem::replace(&mut x, out));
        }
        let out = pool_and_classify(&x, &self.fc, self.classes);
        pool.give(x);
        out
    }

    /// Floating-point operations of one forward pass (convolutions and classifier).
    pub fn flops(&self, n: usize, h: usize, w: usize) -> Result<u64, FastError> {
        let (mut total, s) = self.conv1.flops(Nhwc::new(n, h, w, 3))?;
        let mut s = max_pool_geom().output_shape(s, s.c)?;
        for b in &self.blocks {
            let (f1, s1) = b.conv1.flops(s)?;
            let (f2, s2) = b.conv2.flops(s1)?;
            let (f3, s3) = b.conv3.flops(s2)?;
            let fd = match &b.downsample {
                Some(d) => d.flops(s)?.0,
                None => 0,
            };
            total += f1 + f2 + f3 + fd;
            s = s3;
        }
        Ok(total + 2 * (n * FEATURES * self.classes) as u64)
    }
}

fn max_pool_geom() -> Conv2dGeom {
    Conv2dGeom::new(3, 2, Padding::symmetric(1))
}
