//! Image dimensions and thumbnails, decoded under limits so that a small file declaring a huge
//! image (a decompression bomb) is refused before anything large is allocated.

use std::io::{BufReader, Cursor};

use image::{
    codecs::{jpeg::JpegEncoder, png::PngEncoder},
    DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits,
};

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 400;
/// Most pixels an image may declare (40 megapixels: a large phone photo is 12 to 50).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Longest side an image may declare, in pixels.
pub const MAX_SIDE: u32 = 20_000;
/// Most bytes the decoder may allocate for one image.
pub const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// A decoded image: its dimensions (after its EXIF orientation) and its thumbnail.
#[derive(Debug)]
pub struct Thumbnailed {
    pub width: u32,
    pub height: u32,
    /// The thumbnail's bytes, JPEG for opaque images and PNG for those with transparent pixels.
    pub thumbnail: Vec<u8>,
    pub thumbnail_type: &'static str,
}

/// Why an image was not thumbnailed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// It declares more pixels than [`MAX_PIXELS`] (or a side over [`MAX_SIDE`]), or decoding it
    /// would need more than [`MAX_DECODE_BYTES`].
    #[error("the image is too large to process ({width}×{height} pixels; the most is {MAX_PIXELS} pixels, {MAX_SIDE} on a side)")]
    TooLarge { width: u32, height: u32 },
    /// Its bytes are not a valid image of its format.
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
}

/// The format of content type `content_type` when it is one this server decodes.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    match content_type {
        "image/png" => Some(ImageFormat::Png),
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// Reads the image in file `path` (of `format`), checks its declared size against the limits,
/// decodes it, and makes its thumbnail. CPU-bound: run it on the blocking pool.
pub fn thumbnail(path: &std::path::Path, format: ImageFormat) -> Result<Thumbnailed, ImageError> {
    let corrupt = |e: &dyn std::fmt::Display| ImageError::Corrupt(e.to_string());
    let open = || -> Result<ImageReader<BufReader<std::fs::File>>, ImageError> {
        let file = std::fs::File::open(path).map_err(|e| corrupt(&e))?;
        let mut reader = ImageReader::with_format(BufReader::new(file), format);
        reader.limits(limits());
        Ok(reader)
    };
    // The header alone first: a bomb is refused before any pixel is decoded.
    let (width, height) = open()?.into_dimensions().map_err(|e| refusal(e, 0, 0))?;
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    let mut decoder = open()?
        .into_decoder()
        .map_err(|e| refusal(e, width, height))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(|e| refusal(e, width, height))?;
    decoded.apply_orientation(orientation);
    let small = decoded.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
    let mut bytes = Vec::new();
    // PNG only where transparency shows: many opaque images carry an alpha channel anyway (and
    // resampling can leave an opaque edge a unit short of 255).
    let transparent = small.color().has_alpha() && small.to_rgba8().pixels().any(|p| p.0[3] < 250);
    let thumbnail_type = if transparent {
        small
            .write_with_encoder(PngEncoder::new(Cursor::new(&mut bytes)))
            .map_err(|e| corrupt(&e))?;
        "image/png"
    } else {
        small
            .to_rgb8()
            .write_with_encoder(JpegEncoder::new_with_quality(Cursor::new(&mut bytes), 80))
            .map_err(|e| corrupt(&e))?;
        "image/jpeg"
    };
    Ok(Thumbnailed {
        width: decoded.width(),
        height: decoded.height(),
        thumbnail: bytes,
        thumbnail_type,
    })
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

fn refusal(err: image::ImageError, width: u32, height: u32) -> ImageError {
    match err {
        image::ImageError::Limits(_) => ImageError::TooLarge { width, height },
        other => ImageError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        DynamicImage::new_rgb8(width, height)
            .save_with_format(file.path(), ImageFormat::Png)
            .unwrap();
        file
    }

    #[test]
    fn a_thumbnail_fits_its_box_and_keeps_the_shape() {
        let file = png(1200, 600);
        let t = thumbnail(file.path(), ImageFormat::Png).unwrap();
        assert_eq!((t.width, t.height), (1200, 600));
        assert_eq!(t.thumbnail_type, "image/jpeg");
        let small = image::load_from_memory(&t.thumbnail).unwrap();
        assert_eq!((small.width(), small.height()), (400, 200));
    }

    #[test]
    fn a_declared_giant_is_refused_before_decoding() {
        // A valid PNG header declaring 30,000 × 30,000 pixels, with no pixel data at all.
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(30_000u32.to_be_bytes());
        ihdr.extend(30_000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let crc = crc32fast::hash(&ihdr);
        bytes.extend(13u32.to_be_bytes());
        bytes.extend(&ihdr);
        bytes.extend(crc.to_be_bytes());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        assert!(matches!(
            thumbnail(file.path(), ImageFormat::Png),
            Err(ImageError::TooLarge { .. })
        ));
    }
}
