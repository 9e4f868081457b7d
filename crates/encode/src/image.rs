//! Image input: decode any common format, orient, convert to 8-bit RGB, resize to a model's input
//! size and normalise into a float buffer a model (candle NCHW or the fast NHWC path) can read.
//!
//! The order matters for safety: the pixel limit is checked from the file header, before a single
//! pixel is decoded, so a decompression bomb costs a header read and nothing more.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// The default pixel limit: 50 megapixels, far above any photo a captioner sees and far below
/// what would exhaust memory (a 50 Mpx RGB image is 150 MB decoded).
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// Why one image could not be turned into model input. Every variant names its file, so a batch
/// job can report failures per file and go on.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: empty file (0 bytes)")]
    Empty { path: PathBuf },
    #[error("{path}: not a recognised image format (JPEG, PNG, WebP, GIF, BMP)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: image is {width}x{height} = {pixels} pixels, over the limit of {limit} (raise it if this image is genuine)")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("{path}: image has a zero dimension ({width}x{height})")]
    ZeroSized {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("{path}: cannot decode image (truncated or corrupt?): {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{path}: the file ends inside the JPEG's image data, so part of the picture is missing (an interrupted download or copy?)")]
    Truncated { path: PathBuf },
    #[error("{path}: cannot resize image: {message}")]
    Resize { path: PathBuf, message: String },
}

impl ImageError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ImageError::Io { path, .. }
            | ImageError::Empty { path }
            | ImageError::UnknownFormat { path }
            | ImageError::TooLarge { path, .. }
            | ImageError::ZeroSized { path, .. }
            | ImageError::Decode { path, .. }
            | ImageError::Truncated { path }
            | ImageError::Resize { path, .. } => path,
        }
    }
}

/// How an image of another aspect ratio is brought to the model's (square) input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// Stretch to the target size, ignoring aspect ratio: what the Keras seeds did
    /// (`load_img(target_size=...)`), so features match models trained that way.
    #[default]
    Squash,
    /// Resize the shorter side to the target and cut the centre: keeps proportions, loses borders.
    CenterCrop,
}

/// Memory order of the float buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Channels first, `[3, h, w]`: candle and PyTorch.
    #[default]
    Chw,
    /// Channels last, `[h, w, 3]`: TensorFlow and the fast kernels.
    Hwc,
}

/// The input statistics by name, as recorded in feature caches and model bundles: features
/// computed with one cannot be mixed with the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormalizationKind {
    /// [`Normalization::IMAGENET`].
    Imagenet,
    /// [`Normalization::INCEPTION`].
    Inception,
}

impl NormalizationKind {
    pub const ALL: [NormalizationKind; 2] =
        [NormalizationKind::Imagenet, NormalizationKind::Inception];

    /// What caches and bundles written before the name was recorded used.
    pub const LEGACY: NormalizationKind = NormalizationKind::Imagenet;

    /// [`NormalizationKind::LEGACY`], for `#[serde(default = ...)]`.
    pub fn legacy() -> Self {
        Self::LEGACY
    }

    pub fn name(self) -> &'static str {
        match self {
            NormalizationKind::Imagenet => "imagenet",
            NormalizationKind::Inception => "inception",
        }
    }

    pub fn stats(self) -> Normalization {
        match self {
            NormalizationKind::Imagenet => Normalization::IMAGENET,
            NormalizationKind::Inception => Normalization::INCEPTION,
        }
    }
}

impl std::fmt::Display for NormalizationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for NormalizationKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NormalizationKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let known = NormalizationKind::ALL
                    .map(NormalizationKind::name)
                    .join(", ");
                format!("unknown input normalization `{s}` (known: {known})")
            })
    }
}

/// Per-channel normalisation applied after scaling pixels to `[0, 1]`: `(x / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// torchvision's ImageNet statistics, which the torchvision models were trained with.
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// TensorFlow's "inception-style" statistics, mean 127 and std 128 on 0-255 pixels: Google
    /// trained the EfficientNet-Lite checkpoints with these ("for better post-quantization", in
    /// `efficientnet_lite_builder.py`), so their features are sharper with them than with
    /// [`Normalization::IMAGENET`].
    pub const INCEPTION: Normalization = Normalization {
        mean: [127.0 / 255.0; 3],
        std: [128.0 / 255.0; 3],
    };

    /// Normalise one 8-bit RGB image into `out` (length `3 * w * h`) in the given layout.
    pub fn apply(&self, rgb: &RgbImage, layout: Layout, out: &mut [f32]) {
        let plane = (rgb.width() * rgb.height()) as usize;
        debug_assert_eq!(out.len(), 3 * plane);
        // Precomputed scale/shift: one multiply-add per value instead of a divide.
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * self.std[c]));
        let shift: [f32; 3] = std::array::from_fn(|c| -self.mean[c] / self.std[c]);
        let pixels = rgb.as_raw().chunks_exact(3);
        match layout {
            Layout::Chw => {
                for (i, px) in pixels.enumerate() {
                    for c in 0..3 {
                        out[c * plane + i] = f32::from(px[c]) * scale[c] + shift[c];
                    }
                }
            }
            Layout::Hwc => {
                for (dst, px) in out.chunks_exact_mut(3).zip(pixels) {
                    for (((d, &p), s), t) in dst.iter_mut().zip(px).zip(&scale).zip(&shift) {
                        *d = f32::from(p) * s + t;
                    }
                }
            }
        }
    }
}

/// One preprocessed image: `data` holds `3 * height * width` floats in `layout` order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTensor {
    pub data: Vec<f32>,
    pub height: usize,
    pub width: usize,
    pub layout: Layout,
}

impl ImageTensor {
    /// The shape in `layout` order: `[3, h, w]` or `[h, w, 3]`.
    pub fn shape(&self) -> [usize; 3] {
        match self.layout {
            Layout::Chw => [3, self.height, self.width],
            Layout::Hwc => [self.height, self.width, 3],
        }
    }

    /// The same pixels in the other layout (a copy; cheap next to decoding).
    pub fn to_layout(&self, layout: Layout) -> ImageTensor {
        if layout == self.layout {
            return self.clone();
        }
        let plane = self.height * self.width;
        let mut data = vec![0.0; 3 * plane];
        for i in 0..plane {
            for c in 0..3 {
                match layout {
                    Layout::Hwc => data[i * 3 + c] = self.data[c * plane + i],
                    Layout::Chw => data[c * plane + i] = self.data[i * 3 + c],
                }
            }
        }
        ImageTensor {
            data,
            height: self.height,
            width: self.width,
            layout,
        }
    }
}

/// Turns image files into model input. Cheap to clone and `Sync`: share one across threads.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLoader {
    /// Refuse images with more pixels than this (checked from the header, before decoding).
    pub max_pixels: u64,
    pub resize: ResizeMode,
    /// Target `(width, height)`.
    pub size: (u32, u32),
    pub normalization: Normalization,
    pub layout: Layout,
    /// Mirror left-right after resizing: a second view of each training image for augmentation.
    pub flip: bool,
}

impl ImageLoader {
    /// A loader for a square `size x size` input with ImageNet statistics, squash resize, CHW.
    pub fn new(size: u32) -> Self {
        ImageLoader {
            max_pixels: DEFAULT_MAX_PIXELS,
            resize: ResizeMode::default(),
            size: (size, size),
            normalization: Normalization::IMAGENET,
            layout: Layout::default(),
            flip: false,
        }
    }

    pub fn with_flip(mut self, flip: bool) -> Self {
        self.flip = flip;
        self
    }

    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    pub fn with_resize(mut self, resize: ResizeMode) -> Self {
        self.resize = resize;
        self
    }

    pub fn with_normalization(mut self, normalization: Normalization) -> Self {
        self.normalization = normalization;
        self
    }

    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// Decode, orient, resize and normalise one file.
    pub fn load(&self, path: &Path) -> Result<ImageTensor, ImageError> {
        let rgb = self.load_rgb(path)?;
        Ok(self.normalize(&rgb))
    }

    /// Decode, orient and resize one file to 8-bit RGB at the target size.
    pub fn load_rgb(&self, path: &Path) -> Result<RgbImage, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.decode_bytes(&bytes, path)
    }

    /// Like [`ImageLoader::load_rgb`] for an image already in memory; `path` only names it in errors.
    pub fn decode_bytes(&self, bytes: &[u8], path: &Path) -> Result<RgbImage, ImageError> {
        let rgb = decode_rgb(bytes, path, self.max_pixels)?;
        let mut rgb = self.resize_rgb(rgb, path)?;
        if self.flip {
            image::imageops::flip_horizontal_in_place(&mut rgb);
        }
        Ok(rgb)
    }

    /// Normalise an RGB image that is already at the target size.
    pub fn normalize(&self, rgb: &RgbImage) -> ImageTensor {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut data = vec![0.0; 3 * w * h];
        self.normalization.apply(rgb, self.layout, &mut data);
        ImageTensor {
            data,
            height: h,
            width: w,
            layout: self.layout,
        }
    }

    fn resize_rgb(&self, rgb: RgbImage, path: &Path) -> Result<RgbImage, ImageError> {
        let (tw, th) = self.size;
        // Already the right size: keep the stored pixels exactly (the reference tensors rely on it).
        if rgb.dimensions() == (tw, th) {
            return Ok(rgb);
        }
        let resize_err = |message: String| ImageError::Resize {
            path: path.to_path_buf(),
            message,
        };
        let (w, h) = rgb.dimensions();
        let src = fr::images::Image::from_vec_u8(w, h, rgb.into_raw(), fr::PixelType::U8x3)
            .map_err(|e| resize_err(e.to_string()))?;
        let mut dst = fr::images::Image::new(tw, th, fr::PixelType::U8x3);
        // Convolution with a bilinear kernel widens its support when downscaling, so large
        // photos are low-pass filtered (like PIL) instead of aliased.
        let mut options = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
        if self.resize == ResizeMode::CenterCrop {
            options = options.fit_into_destination(Some((0.5, 0.5)));
        }
        fr::Resizer::new()
            .resize(&src, &mut dst, &options)
            .map_err(|e| resize_err(e.to_string()))?;
        RgbImage::from_raw(tw, th, dst.into_vec())
            .ok_or_else(|| resize_err("resized buffer has the wrong length".into()))
    }
}

/// Decode `bytes` to 8-bit RGB with EXIF orientation applied, refusing images over `max_pixels`
/// before decoding them.
pub fn decode_rgb(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let path_buf = || path.to_path_buf();
    if bytes.is_empty() {
        return Err(ImageError::Empty { path: path_buf() });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| ImageError::Io {
            path: path_buf(),
            source,
        })?;
    let Some(format) = reader.format() else {
        return Err(ImageError::UnknownFormat { path: path_buf() });
    };
    // The JPEG decoder paints a cut-off scan grey instead of failing, and the model would caption
    // the grey; PIL refuses such files by default too.
    if format == image::ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        return Err(ImageError::Truncated { path: path_buf() });
    }
    let decode_err = |source| ImageError::Decode {
        path: path_buf(),
        source,
    };
    // `into_decoder` reads only the header; the pixels come in `from_decoder` below.
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageError::TooLarge {
            path: path_buf(),
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ImageError::ZeroSized {
            path: path_buf(),
            width,
            height,
        });
    }
    // A broken EXIF block should not cost the image: fall back to "as stored".
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// Whether a JPEG stream stops before its end-of-image marker. Walks the marker segments and the
/// entropy-coded scans after each start-of-scan; bytes after the end marker (some cameras append
/// data) are ignored. A stream too malformed to walk is left to the decoder to judge.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    // Restart markers: standalone, and allowed inside scan data.
    const RST0: u8 = 0xD0;
    const RST7: u8 = 0xD7;
    if !bytes.starts_with(&[0xFF, SOI]) {
        return false;
    }
    let segment_end = |at: usize| -> Option<usize> {
        let length = bytes.get(at + 2..at + 4)?;
        Some(at + 2 + usize::from(u16::from_be_bytes([length[0], length[1]])))
    };
    let mut at = 2;
    loop {
        if bytes.get(at) != Some(&0xFF) {
            // Past the end, or not at a marker: the first is a truncation, the second is the
            // decoder's to report.
            return at >= bytes.len();
        }
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at + 1) else {
            return true;
        };
        match marker {
            EOI => return false,
            0x01 | RST0..=RST7 => at += 2,
            SOS => {
                let Some(header_end) = segment_end(at) else {
                    return true;
                };
                // In scan data 0xFF is followed by 0x00 (a stuffed byte) or a restart marker;
                // anything else is the next marker.
                let mut scan = header_end;
                loop {
                    match bytes.get(scan..scan + 2) {
                        None => return true,
                        Some([0xFF, next]) if *next != 0x00 && !(RST0..=RST7).contains(next) => {
                            break
                        }
                        Some(_) => scan += 1,
                    }
                }
                at = scan;
            }
            _ => match segment_end(at) {
                Some(end) => at = end,
                None => return true,
            },
        }
    }
}

/// Any colour type to 8-bit RGB: grey is replicated, alpha dropped, 16-bit and float scaled down.
/// (CMYK JPEGs already arrive as RGB from the JPEG decoder.)
fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, RgbaImage};

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encode test image");
        out.into_inner()
    }

    #[test]
    fn normalization_names_round_trip_and_inception_maps_pixels_to_minus_one_one() {
        for kind in NormalizationKind::ALL {
            assert_eq!(kind.name().parse::<NormalizationKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
        assert_eq!("Inception".parse(), Ok(NormalizationKind::Inception));
        let err = "tf".parse::<NormalizationKind>().expect_err("unknown");
        assert!(
            err.contains("`tf`") && err.contains("imagenet, inception"),
            "{err}"
        );

        let rgb = RgbImage::from_fn(3, 1, |x, _| Rgb([[0u8, 127, 255][x as usize]; 3]));
        let mut out = [0.0f32; 9];
        Normalization::INCEPTION.apply(&rgb, Layout::Hwc, &mut out);
        for (c, v) in out.iter().enumerate() {
            let want = [-127.0 / 128.0, 0.0, 1.0][c / 3];
            assert!((v - want).abs() < 1e-6, "pixel {}: {v} vs {want}", c / 3);
        }
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 128])
        })
    }

    #[test]
    fn a_flipping_loader_mirrors_the_resized_pixels() {
        let bytes = encode(&DynamicImage::ImageRgb8(gradient(40, 30)), ImageFormat::Png);
        let plain = ImageLoader::new(16);
        let flipped = plain.clone().with_flip(true);
        let a = plain.decode_bytes(&bytes, Path::new("x")).expect("plain");
        let b = flipped
            .decode_bytes(&bytes, Path::new("x"))
            .expect("flipped");
        assert_ne!(a, b, "a gradient is not symmetric");
        for (x, y, px) in b.enumerate_pixels() {
            assert_eq!(px, a.get_pixel(15 - x, y), "({x}, {y})");
        }
    }

    #[test]
    fn decodes_every_supported_format_to_rgb() {
        let img = DynamicImage::ImageRgb8(gradient(40, 30));
        for format in [
            ImageFormat::Png,
            ImageFormat::Bmp,
            ImageFormat::Gif,
            ImageFormat::WebP,
        ] {
            let bytes = encode(&img, format);
            let rgb = decode_rgb(&bytes, Path::new("x"), DEFAULT_MAX_PIXELS)
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(rgb.dimensions(), (40, 30), "{format:?}");
        }
        let jpeg = encode(&img, ImageFormat::Jpeg);
        assert_eq!(
            decode_rgb(&jpeg, Path::new("x"), DEFAULT_MAX_PIXELS)
                .map(|i| i.dimensions())
                .ok(),
            Some((40, 30))
        );
    }

    #[test]
    fn grey_alpha_and_16_bit_become_rgb8() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(4, 4, image::Luma([77])));
        let rgb =
            decode_rgb(&encode(&grey, ImageFormat::Png), Path::new("g"), 100).expect("grey png");
        assert_eq!(rgb.get_pixel(1, 1), &Rgb([77, 77, 77]));

        let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(3, 3, image::Rgba([1, 2, 3, 0])));
        let rgb =
            decode_rgb(&encode(&rgba, ImageFormat::Png), Path::new("a"), 100).expect("rgba png");
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([1, 2, 3]));

        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
            2,
            2,
            Rgb([65535u16, 0, 32896]),
        ));
        let rgb =
            decode_rgb(&encode(&deep, ImageFormat::Png), Path::new("d"), 100).expect("16-bit png");
        assert_eq!(rgb.get_pixel(0, 0), &Rgb([255, 0, 128]));
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Left half red, right half blue, 40 wide, 30 high.
        let img = RgbImage::from_fn(40, 30, |x, _| {
            if x < 20 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let jpeg = encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
        // APP1 Exif segment (big-endian TIFF, one IFD entry: Orientation = 6, "rotate 90 CW").
        let mut app1 = vec![0xFF, 0xE1, 0, 34];
        app1.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08");
        app1.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&app1);
        with_exif.extend_from_slice(&jpeg[2..]);
        let rgb = decode_rgb(&with_exif, Path::new("o.jpg"), DEFAULT_MAX_PIXELS).expect("decode");
        assert_eq!(rgb.dimensions(), (30, 40));
        // After a clockwise quarter turn the left (red) half is on top.
        assert!(rgb.get_pixel(15, 5)[0] > 200 && rgb.get_pixel(15, 5)[2] < 60);
        assert!(rgb.get_pixel(15, 35)[2] > 200 && rgb.get_pixel(15, 35)[0] < 60);
    }

    /// PNG's chunk checksum (CRC-32/ISO-HDLC), bitwise: only used on a 17-byte chunk.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        // A header claiming 20000x20000 over 8x8 pixels of data: if the loader decoded first
        // it would fail with a decode error (after allocating 1.2 GB), not TooLarge.
        let png = encode(&DynamicImage::ImageRgb8(gradient(8, 8)), ImageFormat::Png);
        // The PNG decoder reads up to the first IDAT before it reports dimensions, so keep the
        // (8x8) pixel data after the forged header.
        let mut bomb = png.clone();
        bomb[16..20].copy_from_slice(&20_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20_000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]); // chunk type + data
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_rgb(&bomb, Path::new("bomb.png"), DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    pixels: 400_000_000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("bomb.png"));
    }

    #[test]
    fn broken_inputs_give_errors_naming_the_file() {
        let p = Path::new("dir/broken.jpg");
        let empty = decode_rgb(&[], p, 100).unwrap_err();
        assert!(matches!(empty, ImageError::Empty { .. }));
        let text = decode_rgb(b"hello, not an image", p, 100).unwrap_err();
        assert!(matches!(text, ImageError::UnknownFormat { .. }));
        let jpeg = encode(
            &DynamicImage::ImageRgb8(gradient(64, 64)),
            ImageFormat::Jpeg,
        );
        let header_only = decode_rgb(&jpeg[..20], p, DEFAULT_MAX_PIXELS).unwrap_err();
        for err in [empty, text, header_only] {
            assert!(err.to_string().starts_with("dir/broken.jpg: "), "{err}");
            assert_eq!(err.path(), p);
        }
    }

    /// A JPEG with an APP1 segment holding a whole small JPEG, end marker included, as EXIF
    /// thumbnails do: the end marker inside it must not count as the image's end.
    fn with_thumbnail(jpeg: &[u8]) -> Vec<u8> {
        let thumbnail = encode(&DynamicImage::ImageRgb8(gradient(8, 8)), ImageFormat::Jpeg);
        let length = u16::try_from(thumbnail.len() + 2).expect("small thumbnail");
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(length.to_be_bytes());
        out.extend(&thumbnail);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn a_jpeg_cut_anywhere_is_refused_as_truncated() {
        let baseline = encode(
            &DynamicImage::ImageRgb8(gradient(64, 48)),
            ImageFormat::Jpeg,
        );
        let progressive = include_bytes!("../tests/fixtures/progressive_48x32.jpg").to_vec();
        for (name, jpeg) in [
            ("baseline", baseline.clone()),
            ("progressive", progressive),
            ("thumbnail", with_thumbnail(&baseline)),
        ] {
            let whole = decode_rgb(&jpeg, Path::new(name), DEFAULT_MAX_PIXELS);
            assert!(whole.is_ok(), "{name}: {:?}", whole.err());
            for cut in 2..jpeg.len() {
                assert!(
                    jpeg_is_truncated(&jpeg[..cut]),
                    "{name} cut at {cut} of {} bytes passed as whole",
                    jpeg.len()
                );
            }
        }
        let p = Path::new("dir/cut.jpg");
        let err = decode_rgb(&baseline[..baseline.len() / 2], p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(err, ImageError::Truncated { .. }), "{err}");
        assert!(err.to_string().starts_with("dir/cut.jpg: "), "{err}");
        assert_eq!(err.path(), p);
    }

    #[test]
    fn bytes_after_a_jpegs_end_marker_are_ignored() {
        let mut jpeg = encode(
            &DynamicImage::ImageRgb8(gradient(64, 48)),
            ImageFormat::Jpeg,
        );
        jpeg.extend(b"\xFF\xDAmaker notes some cameras append");
        assert!(!jpeg_is_truncated(&jpeg));
        let rgb = decode_rgb(&jpeg, Path::new("t.jpg"), DEFAULT_MAX_PIXELS).expect("decode");
        assert_eq!(rgb.dimensions(), (64, 48));
    }

    #[test]
    fn resize_modes_hit_the_target_size() {
        let png = encode(
            &DynamicImage::ImageRgb8(gradient(300, 120)),
            ImageFormat::Png,
        );
        for mode in [ResizeMode::Squash, ResizeMode::CenterCrop] {
            let loader = ImageLoader::new(64).with_resize(mode);
            let rgb = loader.decode_bytes(&png, Path::new("r")).expect("resize");
            assert_eq!(rgb.dimensions(), (64, 64));
        }
        // Centre crop of a left-half-black, right-half-white image keeps both halves equally.
        let halves = RgbImage::from_fn(
            200,
            100,
            |x, _| if x < 100 { Rgb([0; 3]) } else { Rgb([255; 3]) },
        );
        let png = encode(&DynamicImage::ImageRgb8(halves), ImageFormat::Png);
        let loader = ImageLoader::new(10).with_resize(ResizeMode::CenterCrop);
        let rgb = loader.decode_bytes(&png, Path::new("h")).expect("crop");
        assert!(rgb.get_pixel(0, 5)[0] < 10 && rgb.get_pixel(9, 5)[0] > 245);
    }

    #[test]
    fn layouts_agree() {
        let loader = ImageLoader::new(5);
        let t = loader.normalize(&gradient(5, 5));
        assert_eq!(t.shape(), [3, 5, 5]);
        let hwc = t.to_layout(Layout::Hwc);
        assert_eq!(hwc.shape(), [5, 5, 3]);
        assert_eq!(hwc.to_layout(Layout::Chw), t);
        let direct = loader
            .clone()
            .with_layout(Layout::Hwc)
            .normalize(&gradient(5, 5));
        assert_eq!(direct, hwc);
        // Pixel 0 is (0, 0, 128): red channel is -mean/std.
        assert!((t.data[0] - (-0.485 / 0.229)).abs() < 1e-6);
    }
}
