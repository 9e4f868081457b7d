//! The fast-kernel encoders ([`crate::fast`]: EfficientNet-Lite0, ResNet-50) behind the [`Encoder`]
//! trait.

use std::path::Path;

use super::{check_batch, EncodeError, Encoder, EncoderKind, Features, Want};
use crate::fast::{FastEfficientNetLite0, FastResNet50};
use crate::image::Layout;
use crate::kernels::Nhwc;

/// NHWC in, NHWC out: the spatial map it returns is already `[n, 49, 1280]` channel-last.
pub struct FastLite0 {
    model: FastEfficientNetLite0,
}

impl FastLite0 {
    /// Load from a `.safetensors` file with the original key names (`.pth` is not supported by
    /// the fast loader; use the candle encoder or convert it).
    pub fn load(path: &Path) -> Result<Self, EncodeError> {
        let model = FastEfficientNetLite0::from_safetensors(path)
            .map_err(|e| EncodeError::weights(path, candle_core::Error::Msg(e.to_string())))?;
        Ok(Self { model })
    }
}

impl Encoder for FastLite0 {
    fn kind(&self) -> EncoderKind {
        EncoderKind::EfficientNetLite0
    }

    fn input_layout(&self) -> Layout {
        Layout::Hwc
    }

    fn encode(&self, images: &[f32], batch: usize, want: Want) -> Result<Features, EncodeError> {
        check_batch(self.kind(), images, batch)?;
        let side = self.kind().input_size() as usize;
        let out = self
            .model
            .forward_nhwc(images, Nhwc::new(batch, side, side, 3))
            .map_err(|e| EncodeError::Fast(e.to_string()))?;
        Ok(Features {
            batch,
            pooled: out.pooled,
            spatial: want.spatial.then_some(out.spatial),
            logits: want.logits.then_some(out.logits),
        })
    }
}

/// The fast-kernel ResNet-50 ([`crate::fast::FastResNet50`]) behind the [`Encoder`] trait; NHWC
/// in, `[n, 49, 2048]` channel-last spatial map out.
pub struct FastResNet50Encoder {
    model: FastResNet50,
}

impl FastResNet50Encoder {
    /// Load a torchvision `state_dict` saved as `.safetensors` (`.pth` goes through the candle
    /// encoder, or convert it).
    pub fn load(path: &Path) -> Result<Self, EncodeError> {
        let model = FastResNet50::from_safetensors(path)
            .map_err(|e| EncodeError::weights(path, candle_core::Error::Msg(e.to_string())))?;
        Ok(Self { model })
    }
}

impl Encoder for FastResNet50Encoder {
    fn kind(&self) -> EncoderKind {
        EncoderKind::Resnet50
    }

    fn input_layout(&self) -> Layout {
        Layout::Hwc
    }

    fn encode(&self, images: &[f32], batch: usize, want: Want) -> Result<Features, EncodeError> {
        check_batch(self.kind(), images, batch)?;
        let side = self.kind().input_size() as usize;
        let out = self
            .model
            .forward_nhwc(images, Nhwc::new(batch, side, side, 3))
            .map_err(|e| EncodeError::Fast(e.to_string()))?;
        Ok(Features {
            batch,
            pooled: out.pooled,
            spatial: want.spatial.then_some(out.spatial),
            logits: want.logits.then_some(out.logits),
        })
    }
}
