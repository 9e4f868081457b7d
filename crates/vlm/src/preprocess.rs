//! Images to the pixel tensor a vision tower reads, as the `transformers` image processors do:
//! resize, rescale to `[0, 1]`, normalise per channel, channels first.

use crate::config::Preprocessor;
use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::RgbImage;

impl Preprocessor {
    /// PIL's resample codes mapped to the nearest filter of the `image` crate. The pixels are
    /// identical to `transformers` only when no resize happens (an image already at the model's
    /// size); otherwise they differ by the two libraries' interpolation, which captions tolerate.
    fn filter(&self) -> FilterType {
        match self.resample {
            0 => FilterType::Nearest,
            1 => FilterType::Lanczos3,
            3 => FilterType::CatmullRom,
            _ => FilterType::Triangle,
        }
    }

    /// `[3, H, W]` values of one image, channels first.
    pub fn pixels(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = (self.width as u32, self.height as u32);
        let resized;
        // A vision tower takes only its own input size, so a mismatched image is resized even
        // when the processor says `do_resize: false`.
        let img = if img.dimensions() != (w, h) {
            resized = image::imageops::resize(img, w, h, self.filter());
            &resized
        } else {
            img
        };
        let (iw, ih) = img.dimensions();
        let plane = (iw * ih) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                let mut v = f32::from(p.0[c]);
                if self.do_rescale {
                    v *= self.rescale_factor;
                }
                if self.do_normalize {
                    v = (v - self.mean[c]) / self.std[c];
                }
                out[c * plane + i] = v;
            }
        }
        out
    }

    /// `[N, 3, H, W]` batch.
    pub fn batch(&self, images: &[RgbImage], device: &Device) -> candle_core::Result<Tensor> {
        let mut data = Vec::with_capacity(images.len() * 3 * self.height * self.width);
        for img in images {
            data.extend(self.pixels(img));
        }
        Tensor::from_vec(data, (images.len(), 3, self.height, self.width), device)
    }
}
