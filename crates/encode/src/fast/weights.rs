//! Where the fast models get their tensors (a safetensors file or an in-memory map), and the
//! load-time rewrites: BatchNorm folded into the conv weight and bias, PyTorch OIHW -> HWIO.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::FastError;

/// A named-tensor store with PyTorch key names.
pub trait WeightSource {
    /// The tensor's shape and f32 data, or an error naming the missing / mistyped tensor.
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FastError>;
}

/// A `.safetensors` file read into memory.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, FastError> {
        let bytes = std::fs::read(path).map_err(|source| FastError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // Parse once up front so a corrupt file fails here, naming the file.
        SafeTensors::deserialize(&bytes).map_err(|e| FastError::Weights {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
        })
    }
}

impl WeightSource for SafetensorsFile {
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FastError> {
        let err = |msg: String| FastError::Weights {
            path: self.path.clone(),
            msg,
        };
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| err(e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|_| err(format!("missing tensor `{name}`")))?;
        if view.dtype() != Dtype::F32 {
            return Err(err(format!("`{name}` is {:?}, expected F32", view.dtype())));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((view.shape().to_vec(), data))
    }
}

/// Tensors held in memory (random-weight benchmarks, tests).
#[derive(Default)]
pub struct TensorMap(pub HashMap<String, (Vec<usize>, Vec<f32>)>);

impl WeightSource for TensorMap {
    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FastError> {
        self.0.get(name).cloned().ok_or_else(|| FastError::Weights {
            path: PathBuf::from("<memory>"),
            msg: format!("missing tensor `{name}`"),
        })
    }
}

/// Reads a tensor and checks its shape.
pub fn expect(src: &dyn WeightSource, name: &str, shape: &[usize]) -> Result<Vec<f32>, FastError> {
    let (got, data) = src.tensor(name)?;
    if got != shape {
        return Err(FastError::WeightShape {
            name: name.to_string(),
            expected: shape.to_vec(),
            got,
        });
    }
    Ok(data)
}

/// A convolution with its BatchNorm folded in: `weight` is HWIO (or `[kh, kw, c]` for depthwise).
pub struct Folded {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Loads conv `conv` (OIHW, `groups` = 1 or = channels) and BatchNorm `bn`, folding
/// `gamma * (conv(x) - mean) / sqrt(var + eps) + beta` into one conv with bias.
pub fn fold_conv_bn(
    src: &dyn WeightSource,
    conv: &str,
    bn: &str,
    shape_oihw: [usize; 4],
    eps: f32,
) -> Result<Folded, FastError> {
    let [o, i, kh, kw] = shape_oihw;
    let w = expect(src, &format!("{conv}.weight"), &shape_oihw)?;
    let gamma = expect(src, &format!("{bn}.weight"), &[o])?;
    let beta = expect(src, &format!("{bn}.bias"), &[o])?;
    let mean = expect(src, &format!("{bn}.running_mean"), &[o])?;
    let var = expect(src, &format!("{bn}.running_var"), &[o])?;
    // Fold in f64: the scale can be large when var is tiny, and the fold happens once.
    let scale: Vec<f64> = (0..o)
        .map(|c| gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt())
        .collect();
    let bias = (0..o)
        .map(|c| (beta[c] as f64 - mean[c] as f64 * scale[c]) as f32)
        .collect();
    // OIHW -> HWIO: the im2col / GEMM column order is (ky, kx, ci), output channel fastest.
    let mut weight = vec![0.0; w.len()];
    for co in 0..o {
        for ci in 0..i {
            for y in 0..kh {
                for x in 0..kw {
                    let v = w[((co * i + ci) * kh + y) * kw + x] as f64 * scale[co];
                    weight[((y * kw + x) * i + ci) * o + co] = v as f32;
                }
            }
        }
    }
    Ok(Folded { weight, bias })
}

/// A linear layer `[out, in]` stored transposed as `[in, out]` so it is a GEMM right-hand side.
pub fn linear(
    src: &dyn WeightSource,
    name: &str,
    out: usize,
    inp: usize,
) -> Result<Folded, FastError> {
    let w = expect(src, &format!("{name}.weight"), &[out, inp])?;
    let bias = expect(src, &format!("{name}.bias"), &[out])?;
    let mut weight = vec![0.0; w.len()];
    for o in 0..out {
        for i in 0..inp {
            weight[i * out + o] = w[o * inp + i];
        }
    }
    Ok(Folded { weight, bias })
}

/// Deterministic pseudo-random numbers (SplitMix64) so random-weight models need no extra crate.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
