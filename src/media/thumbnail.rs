//! Thumbnails of JPEG, PNG, WebP and GIF images: pure functions from bytes to bytes.
//!
//! `scale` fits the image inside the requested box keeping its aspect ratio; `crop` fills the
//! box and cuts the overflow from the centre, so the result is exactly the box. Neither ever
//! makes an image larger than the original: a box bigger than the image is shrunk to it.
//! Like Synapse, JPEG sources give JPEG thumbnails (photos) and the others PNG (transparency).

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits, codecs::jpeg::JpegEncoder};

use crate::config::ThumbnailMethod;

/// The content types a thumbnail can be made of.
pub(crate) fn can_thumbnail(content_type: &str) -> bool {
    matches!(
        essence(content_type).as_str(),
        "image/jpeg" | "image/jpg" | "image/png" | "image/webp" | "image/gif"
    )
}

/// Content types that may hold several frames: an animated thumbnail request may get the original.
pub(crate) fn may_be_animated(content_type: &str) -> bool {
    matches!(essence(content_type).as_str(), "image/gif" | "image/webp")
}

/// The media type without parameters, lowercased.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A generated thumbnail.
#[derive(Debug)]
pub(crate) struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ThumbnailError {
    #[error("cannot decode the image: {0}")]
    Decode(#[from] image::ImageError),
    #[error("cannot read the image: {0}")]
    Io(#[from] std::io::Error),
}

/// The size of an image of `w`×`h` scaled to fit in `box_w`×`box_h`, never larger than it was.
pub(crate) fn scaled_size(w: u32, h: u32, box_w: u32, box_h: u32) -> (u32, u32) {
    let factor = (box_w as f64 / w as f64)
        .min(box_h as f64 / h as f64)
        .min(1.0);
    let nw = ((w as f64 * factor).round() as u32).clamp(1, w);
    let nh = ((h as f64 * factor).round() as u32).clamp(1, h);
    (nw, nh)
}

/// For `crop`: the size to scale `w`×`h` to (filling the box, never enlarging), and the box
/// cut from its centre (the requested box, or less where the image is smaller).
pub(crate) fn crop_plan(w: u32, h: u32, box_w: u32, box_h: u32) -> ((u32, u32), (u32, u32)) {
    let factor = (box_w as f64 / w as f64)
        .max(box_h as f64 / h as f64)
        .min(1.0);
    let sw = ((w as f64 * factor).round() as u32).clamp(1, w);
    let sh = ((h as f64 * factor).round() as u32).clamp(1, h);
    ((sw, sh), (box_w.min(sw), box_h.min(sh)))
}

/// Decodes `bytes` (the first frame of an animation) and makes the thumbnail.
pub(crate) fn generate(
    bytes: &[u8],
    box_w: u32,
    box_h: u32,
    method: ThumbnailMethod,
) -> Result<Thumbnail, ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    reader.limits(limits);
    let source_format = reader.format();
    let image = reader.decode()?;
    let (w, h) = (image.width().max(1), image.height().max(1));
    let thumb = match method {
        ThumbnailMethod::Scale => {
            let (nw, nh) = scaled_size(w, h, box_w, box_h);
            resize(image, nw, nh)
        }
        ThumbnailMethod::Crop => {
            let ((sw, sh), (cw, ch)) = crop_plan(w, h, box_w, box_h);
            let scaled = resize(image, sw, sh);
            scaled.crop_imm((sw - cw) / 2, (sh - ch) / 2, cw, ch)
        }
    };
    encode(thumb, source_format == Some(ImageFormat::Jpeg))
}

fn resize(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
    if (image.width(), image.height()) == (w, h) {
        image
    } else {
        image.thumbnail_exact(w, h)
    }
}

fn encode(image: DynamicImage, as_jpeg: bool) -> Result<Thumbnail, ThumbnailError> {
    let (width, height) = (image.width(), image.height());
    let mut bytes = Vec::new();
    let content_type = if as_jpeg {
        let rgb = image.to_rgb8();
        JpegEncoder::new_with_quality(&mut bytes, 80).encode_image(&rgb)?;
        "image/jpeg"
    } else {
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)?;
        "image/png"
    };
    Ok(Thumbnail {
        bytes,
        content_type,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_fits_inside_and_keeps_aspect() {
        assert_eq!(scaled_size(400, 200, 100, 100), (100, 50));
        assert_eq!(scaled_size(200, 400, 100, 100), (50, 100));
        assert_eq!(
            scaled_size(300, 200, 640, 480),
            (300, 200),
            "never upscaled"
        );
        assert_eq!(scaled_size(1000, 1, 10, 10), (10, 1), "never zero");
    }

    #[test]
    fn crop_fills_the_box_and_never_upscales() {
        assert_eq!(crop_plan(400, 200, 100, 100), ((200, 100), (100, 100)));
        assert_eq!(crop_plan(200, 400, 64, 32), ((64, 128), (64, 32)));
        assert_eq!(crop_plan(100, 50, 64, 64), ((100, 50), (64, 50)));
        assert_eq!(crop_plan(20, 20, 64, 64), ((20, 20), (20, 20)));
    }

    #[test]
    fn only_images_are_thumbnailed() {
        assert!(can_thumbnail("image/PNG"));
        assert!(can_thumbnail("image/jpeg; charset=binary"));
        assert!(!can_thumbnail("image/svg+xml"));
        assert!(!can_thumbnail("application/pdf"));
    }
}
