//! The fast-kernel EfficientNet-Lite0 ([`crate::fast`]) behind the [`Encoder`] trait.

use std::path::Path;

use super::{check_batch, EncodeError, Encoder, EncoderKind, Features, Want};
use crate::fast::FastEfficientNetLite0;
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
        let model =
            FastEfficientNetLite0::from_safetensors(path).map_err(|e| EncodeError::Weights {
                path: path.to_path_buf(),
                source: candle_core::Error::Msg(e.to_string()),
            })?;
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
