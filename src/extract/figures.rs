//! Pictures handed back for description (`[extract.vision]`).
//!
//! The converter child may not open a socket (it is sandboxed, and it
//! reads hostile bytes), so it does not describe pictures itself: it puts
//! a marker where a picture stands in the markdown and hands the picture
//! back, downscaled and PNG-encoded, in [`super::Converted::figures`]. The
//! daemon asks the vision model about each and replaces each marker with
//! the description before chunking (`pipeline::figures`).
//!
//! Markers carry a nonce the daemon drew for this conversion, so text in a
//! document cannot pass for one. Everything is bounded here, in the child:
//! the number of figures, the bytes of all of them, their size in pixels.

use std::io::Cursor;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::converted::{Builder, Figure};
use super::package::Package;

/// What the child collects (the daemon's `[extract.vision]`, resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FigureSettings {
    /// Smallest picture described, in pixels (width × height): icons,
    /// bullets and rules are left alone.
    pub min_pixels: u64,
    /// Longest side of a picture as sent; larger ones are downscaled.
    pub max_side: u32,
    /// Figures per document at most; later ones are noted as omitted.
    pub max_count: usize,
    /// PNG bytes of a document's figures together at most.
    pub max_bytes: usize,
    /// Drawn by the daemon per conversion ([`marker`]).
    pub nonce: String,
}

/// The text standing for figure `index` until the daemon replaces it.
pub fn marker(nonce: &str, index: usize) -> String {
    format!("[figure {nonce} {index}]")
}

/// A document's figures as they are found, within the bounds.
#[derive(Debug)]
pub struct Figures<'a> {
    settings: &'a FigureSettings,
    figures: Vec<Figure>,
    bytes: usize,
    /// Pictures large enough but past a bound.
    dropped: usize,
}

impl<'a> Figures<'a> {
    pub fn new(settings: &'a FigureSettings) -> Self {
        Figures {
            settings,
            figures: Vec::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Longest side a kept picture has.
    pub fn max_side(&self) -> u32 {
        self.settings.max_side.max(16)
    }

    /// Whether a picture of `width` × `height` pixels is one to describe
    /// and there is room for it (checked before it is decoded).
    pub fn wants(&mut self, width: u32, height: u32) -> bool {
        let pixels = u64::from(width) * u64::from(height);
        if pixels < self.settings.min_pixels.max(1) {
            return false;
        }
        if self.figures.len() >= self.settings.max_count {
            self.dropped += 1;
            return false;
        }
        true
    }

    /// Keeps `image` (of page `page`), downscaled and encoded: the marker
    /// to put where it stands, or `None` when it is over the bounds.
    pub fn add(&mut self, image: &image::DynamicImage, page: Option<u32>) -> Option<String> {
        if !self.wants(image.width(), image.height()) {
            return None;
        }
        let side = self.max_side();
        let resized;
        let image = if image.width().max(image.height()) > side {
            resized = image.resize(side, side, image::imageops::FilterType::Triangle);
            &resized
        } else {
            image
        };
        // PNG takes RGB(A) and grey; 16-bit or float pictures are turned
        // to 8-bit RGBA first.
        let image = image::DynamicImage::ImageRgba8(image.to_rgba8());
        let mut png = Vec::new();
        if image
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .is_err()
            || self.bytes + png.len() > self.settings.max_bytes
        {
            self.dropped += 1;
            return None;
        }
        self.bytes += png.len();
        let index = self.figures.len();
        self.figures.push(Figure {
            page,
            png: base64::engine::general_purpose::STANDARD.encode(&png),
        });
        Some(marker(&self.settings.nonce, index))
    }

    /// Hands the figures to the document; pictures left out are noted.
    pub fn finish(self, builder: &mut Builder) {
        if self.dropped > 0 {
            builder.omit(format!(
                "{} pictures: not described, over the figures a document may have described \
                 ({} pictures, {} MB)",
                self.dropped,
                self.settings.max_count,
                self.settings.max_bytes >> 20
            ));
        }
        builder.figures(self.figures);
    }
}

/// Largest picture in a document decoded for description, in pixels.
const MAX_PICTURE_PIXELS: u64 = 40_000_000;

/// The picture in part `name`, kept for description: its marker, or
/// `None` (missing, unreadable, too small, too large, over the bounds).
pub(super) fn picture(
    package: &mut Package<'_>,
    name: &str,
    figures: &mut Figures,
    page: Option<u32>,
) -> Option<String> {
    let bytes = package.read(name).ok()??;
    let reader = || {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .ok()?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_PICTURE_PIXELS * 8);
        reader.limits(limits);
        Some(reader)
    };
    let (width, height) = reader()?.into_dimensions().ok()?;
    if u64::from(width) * u64::from(height) > MAX_PICTURE_PIXELS || !figures.wants(width, height) {
        return None;
    }
    let image = reader()?.decode().ok()?;
    figures.add(&image, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_count: usize) -> FigureSettings {
        FigureSettings {
            min_pixels: 100,
            max_side: 64,
            max_count,
            max_bytes: 1 << 20,
            nonce: "n0nce".into(),
        }
    }

    #[test]
    fn small_pictures_are_skipped_large_ones_downscaled_and_the_count_bounded() {
        let settings = settings(1);
        let mut figures = Figures::new(&settings);
        let icon = image::DynamicImage::new_rgb8(8, 8);
        assert_eq!(figures.add(&icon, Some(1)), None);
        let photo = image::DynamicImage::new_rgb8(640, 320);
        assert_eq!(figures.add(&photo, Some(1)).unwrap(), "[figure n0nce 0]");
        assert_eq!(figures.add(&photo, Some(2)), None);
        let mut builder = Builder::new("application/pdf", 1 << 20);
        builder.text("text".into(), None).unwrap();
        figures.finish(&mut builder);
        let converted = builder.finish().unwrap();
        assert_eq!(converted.figures.len(), 1);
        assert!(converted.omitted[0].starts_with("1 pictures: not described"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(&converted.figures[0].png)
            .unwrap();
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 32));
    }
}
