//! Image files as documents: PNG, JPEG, WebP, GIF (its first frame), BMP
//! and TIFF (every page, up to `[extract.ocr] max_pages`), decoded with the
//! `image` and `tiff` crates (pure Rust) and read by OCR ([`super::ocr`]).
//!
//! Decompression bombs end before any pixel is decoded: a file's header
//! says how large its image is, and one over `max_pixels_per_page` is
//! skipped with its size in the reason (a 20,000 × 20,000 PNG is 100 KB on
//! disk and 400 MP decoded). The decoders also get allocation limits, so a
//! header that lies is stopped by the decoder too.
//!
//! Only ever run in a converter child ([`super::isolate`]).

use std::io::Cursor;

use super::converted::{Builder, Converted};
use super::figures::Figures;
use super::format::DocumentFormat;
use super::ocr::{self, GreyImage, OcrPage, OcrSettings, PageText};
use super::{Limits, Skipped};

pub fn convert(
    format: DocumentFormat,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Converted, Skipped> {
    let settings = limits.ocr.as_ref().ok_or_else(|| {
        Skipped(
            "image files are read by OCR, which is not enabled ([extract.ocr]: Tesseract)".into(),
        )
    })?;
    let mut builder = Builder::new(format.mime(), limits.max_extracted_bytes);
    let mut figures = limits.figures.as_ref().map(Figures::new);
    // The picture described (`[extract.vision]`): a single image, after
    // its OCR'd text; a TIFF's pages are scans, read by OCR only.
    let mut described = None;
    let texts = if format == DocumentFormat::Tiff {
        tiff_pages(bytes, settings, &mut builder)?
    } else {
        let image = decode_single(format, bytes, settings)?;
        if let Some(figures) = &mut figures {
            described = figures.add(&image, Some(1));
        }
        let page = OcrPage {
            number: 1,
            image: grey(image),
            dpi: 0,
        };
        ocr::recognize_pages(settings, 1, std::iter::once(Ok(page)))?
    };
    let single = texts.len() == 1 && format != DocumentFormat::Tiff;
    for (number, text) in texts {
        let place = if single {
            "the image".to_string()
        } else {
            format!("page {number}")
        };
        match text {
            PageText::Markdown(markdown) => builder.ocr_page(number, markdown)?,
            PageText::Nothing => builder.omit(format!("{place}: OCR found no text")),
            PageText::Unread(why) => builder.omit(format!("{place}: {why}")),
        }
    }
    if let Some(marker) = described {
        builder.text(marker, Some((1, 1)))?;
    }
    if let Some(figures) = figures {
        figures.finish(&mut builder);
    }
    builder.finish()
}

/// Width × height, refused over the budget, as the reason says it.
fn check_size(width: u32, height: u32, settings: &OcrSettings) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > settings.max_pixels_per_page {
        return Err(format!(
            "the image is {width} × {height} pixels ({:.1} MP), over [extract.ocr] \
             max_pixels_per_page ({:.1} MP); not decoded",
            pixels as f64 / 1e6,
            settings.max_pixels_per_page as f64 / 1e6
        ));
    }
    if width == 0 || height == 0 {
        return Err("the image is empty (0 pixels)".into());
    }
    Ok(())
}

/// Memory a decoder may allocate for an image within the budget: 8 bytes a
/// pixel (16-bit RGBA) and room for its buffers.
fn max_alloc(settings: &OcrSettings) -> u64 {
    settings
        .max_pixels_per_page
        .saturating_mul(8)
        .saturating_add(64 << 20)
}

fn image_format(format: DocumentFormat) -> image::ImageFormat {
    match format {
        DocumentFormat::Png => image::ImageFormat::Png,
        DocumentFormat::Jpeg => image::ImageFormat::Jpeg,
        DocumentFormat::Gif => image::ImageFormat::Gif,
        DocumentFormat::Webp => image::ImageFormat::WebP,
        DocumentFormat::Bmp => image::ImageFormat::Bmp,
        _ => image::ImageFormat::Tiff,
    }
}

/// One image (a GIF's first frame), checked against the budget from its
/// header before it is decoded.
fn decode_single(
    format: DocumentFormat,
    bytes: &[u8],
    settings: &OcrSettings,
) -> Result<image::DynamicImage, Skipped> {
    let name = format.name();
    let reader = || {
        let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format(format));
        let mut limits = image::Limits::default();
        let side = u32::try_from(settings.max_pixels_per_page).unwrap_or(u32::MAX);
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(max_alloc(settings));
        reader.limits(limits);
        reader
    };
    let (width, height) = reader()
        .into_dimensions()
        .map_err(|e| Skipped(decode_error(name, &e)))?;
    check_size(width, height, settings).map_err(Skipped)?;
    reader()
        .decode()
        .map_err(|e| Skipped(decode_error(name, &e)))
}

fn decode_error(name: &str, error: &image::ImageError) -> String {
    match error {
        image::ImageError::Limits(limit) => {
            format!("the {name} image is over the decoder's limits ({limit}); not decoded")
        }
        other => format!("not a readable {name} image: {other}"),
    }
}

/// Any decoded image as 8-bit grey; transparent pixels become white
/// (paper), so dark text on a transparent background stays readable.
fn grey(image: image::DynamicImage) -> GreyImage {
    let (width, height) = (image.width(), image.height());
    let pixels = if image.color().has_alpha() {
        image
            .to_luma_alpha8()
            .pixels()
            .map(|p| {
                let [luma, alpha] = p.0;
                let (luma, alpha) = (u32::from(luma), u32::from(alpha));
                ((luma * alpha + 255 * (255 - alpha)) / 255) as u8
            })
            .collect()
    } else {
        image.into_luma8().into_raw()
    };
    GreyImage {
        width,
        height,
        pixels,
    }
}

/// Every page of a TIFF (up to `max_pages`), each checked against the
/// budget from its directory before it is decoded, OCR'd as decoded.
fn tiff_pages(
    bytes: &[u8],
    settings: &OcrSettings,
    builder: &mut Builder,
) -> Result<Vec<(u32, PageText)>, Skipped> {
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = usize::try_from(max_alloc(settings)).unwrap_or(usize::MAX);
    limits.intermediate_buffer_size = limits.decoding_buffer_size;
    let mut decoder = tiff::decoder::Decoder::new(Cursor::new(bytes))
        .map_err(|e| Skipped(format!("not a readable TIFF image: {e}")))?
        .with_limits(limits);
    let max_pages = settings.max_pages.max(1);
    let mut number = 0u32;
    let mut more_pages = false;
    // A page whose directory or data cannot be read ends the walk (the
    // next page is found from its directory); the pages before it stay.
    let mut broken = false;
    let pages = std::iter::from_fn(|| {
        if broken {
            return None;
        }
        if number > 0 {
            if !decoder.more_images() {
                return None;
            }
            if number >= max_pages {
                more_pages = true;
                return None;
            }
            if let Err(e) = decoder.next_image() {
                broken = true;
                number += 1;
                return Some(Err((number, format!("not readable: {e}"))));
            }
        }
        number += 1;
        let page = tiff_page(&mut decoder, settings);
        if matches!(&page, Err(why) if why.starts_with("not readable")) {
            broken = true;
        }
        Some(
            page.map(|image| OcrPage {
                number,
                image,
                dpi: 0,
            })
            .map_err(|why| (number, why)),
        )
    });
    let texts = ocr::recognize_pages(settings, max_pages as usize, pages)?;
    if more_pages {
        builder.omit(format!(
            "pages after page {max_pages}: not read, [extract.ocr] max_pages is {max_pages}"
        ));
    }
    Ok(texts)
}

fn tiff_page(
    decoder: &mut tiff::decoder::Decoder<Cursor<&[u8]>>,
    settings: &OcrSettings,
) -> Result<GreyImage, String> {
    use tiff::ColorType;
    use tiff::decoder::DecodingResult;
    let (width, height) = decoder
        .dimensions()
        .map_err(|e| format!("not readable: {e}"))?;
    check_size(width, height, settings)?;
    let color = decoder
        .colortype()
        .map_err(|e| format!("not readable: {e}"))?;
    let decoded = decoder
        .read_image()
        .map_err(|e| format!("not readable: {e}"))?;
    // Bilevel pages (faxes, most scanners' TIFFs): one bit a pixel, rows
    // padded to a byte, 1 = white (the decoder turned WhiteIsZero round).
    if let (ColorType::Gray(1), DecodingResult::U8(bits)) = (color, &decoded) {
        let row_bytes = (width as usize).div_ceil(8);
        if bits.len() < row_bytes * height as usize {
            return Err("not readable: fewer samples than pixels".into());
        }
        let pixels = bits
            .chunks_exact(row_bytes)
            .take(height as usize)
            .flat_map(|row| {
                (0..width as usize).map(move |x| {
                    if row[x / 8] & (0x80 >> (x % 8)) != 0 {
                        255
                    } else {
                        0
                    }
                })
            })
            .collect();
        return Ok(GreyImage {
            width,
            height,
            pixels,
        });
    }
    let samples: Vec<u8> = match decoded {
        DecodingResult::U8(samples) => samples,
        DecodingResult::U16(samples) => samples.into_iter().map(|s| (s >> 8) as u8).collect(),
        _ => return Err("its sample format is not supported (floating point or 32/64-bit)".into()),
    };
    let pixels = width as usize * height as usize;
    let channels = match color {
        ColorType::Gray(8 | 16) => 1,
        ColorType::GrayA(_) => 2,
        ColorType::RGB(_) => 3,
        ColorType::RGBA(_) => 4,
        ColorType::CMYK(_) => 4,
        other => return Err(format!("its colour type ({other:?}) is not supported")),
    };
    if samples.len() < pixels * channels {
        return Err("not readable: fewer samples than pixels".into());
    }
    let grey = match color {
        ColorType::Gray(_) => samples[..pixels].to_vec(),
        ColorType::GrayA(_) => samples
            .chunks_exact(2)
            .map(|p| blend(u32::from(p[0]), u32::from(p[1])))
            .collect(),
        ColorType::RGB(_) => samples.chunks_exact(3).map(luma).collect(),
        ColorType::RGBA(_) => samples
            .chunks_exact(4)
            .map(|p| blend(u32::from(luma(p)), u32::from(p[3])))
            .collect(),
        _ => samples
            .chunks_exact(4)
            .map(|p| {
                // CMYK: ink, so 255 is dark.
                let k = 255 - u32::from(p[3]);
                let rgb = [p[0], p[1], p[2]].map(|c| ((255 - u32::from(c)) * k / 255) as u8);
                luma(&rgb)
            })
            .collect(),
    };
    Ok(GreyImage {
        width,
        height,
        pixels: grey,
    })
}

/// Rec. 601 luma of an RGB pixel.
fn luma(rgb: &[u8]) -> u8 {
    let [r, g, b] = [rgb[0], rgb[1], rgb[2]].map(u32::from);
    ((r * 299 + g * 587 + b * 114) / 1000) as u8
}

/// A grey value over white paper.
fn blend(luma: u32, alpha: u32) -> u8 {
    ((luma * alpha + 255 * (255 - alpha)) / 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OcrSettings {
        OcrSettings {
            library: "libtesseract.so.5".into(),
            tessdata: "/nonexistent".into(),
            languages: vec!["eng".into()],
            dpi: 300,
            max_pixels_per_page: 40_000_000,
            max_millis_per_page: 1000,
            max_pages: 100,
            threads: 1,
        }
    }

    /// A PNG signature and IHDR chunk claiming `width` × `height`: all a
    /// decoder reads before allocating.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        let crc = crc32(&ihdr);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        png
    }

    /// [`png_header`] followed by an empty `IDAT` chunk: a PNG whose size
    /// can be read, with no pixels behind it.
    fn png_without_pixels(width: u32, height: u32) -> Vec<u8> {
        let mut png = png_header(width, height);
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(b"IDAT");
        png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_pixel_bomb_is_refused_from_its_header() {
        let bomb = png_without_pixels(20_000, 20_000);
        let err = decode_single(DocumentFormat::Png, &bomb, &settings()).unwrap_err();
        assert!(err.0.contains("20000 × 20000"), "{err:?}");
        assert!(err.0.contains("max_pixels_per_page"), "{err:?}");
    }

    #[test]
    fn a_truncated_image_says_it_is_unreadable() {
        let header = png_header(100, 100);
        let err = decode_single(DocumentFormat::Png, &header, &settings()).unwrap_err();
        assert!(err.0.starts_with("not a readable PNG image"), "{err:?}");
    }

    #[test]
    fn transparency_becomes_white_paper() {
        let mut image = image::RgbaImage::new(2, 1);
        image.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        image.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let grey = grey(image::DynamicImage::ImageRgba8(image));
        assert_eq!(grey.pixels, vec![255, 0]);
    }

    #[test]
    fn without_ocr_images_are_skipped_saying_so() {
        let err = convert(
            DocumentFormat::Png,
            &png_header(10, 10),
            &Limits::for_tests(),
        )
        .unwrap_err();
        assert!(err.0.contains("OCR"), "{err:?}");
    }
}
