//! PDF through PDFium (the engine of Chrome's viewer), loaded at run time
//! from the shared library the `pypdfium2` wheel ships
//! (`scripts/install-pdfium`). PDFium reads the text layer: each glyph with
//! its position and size, which [`layout`] turns into markdown. Why PDFium
//! and not a pure-Rust reader: ARCHITECTURE.md says, with the measurements
//! in `bench/results/documents.md`.
//!
//! Pages without a text layer (scans) are rendered by PDFium at
//! `[extract.ocr] dpi` (lowered to fit `max_pixels_per_page`) and read by
//! OCR ([`super::ocr`]) when it is on; their sections join the laid-out
//! ones in page order, marked as OCR'd.
//!
//! Only ever run in a converter child ([`super::isolate`]): PDFium is C++
//! reading hostile bytes.

mod layout;

use pdfium_render::prelude::*;

use super::converted::{Builder, Converted};
use super::figures::Figures;
use super::ocr::{self, GreyImage, OcrPage, OcrSettings, PageText};
use super::{Limits, Skipped};

pub use layout::{Glyph, Page};

pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let library = limits.pdfium_library.as_deref().ok_or_else(|| {
        Skipped("PDF support needs the PDFium library ([extract] pdfium_library)".into())
    })?;
    if !library.is_file() {
        return Err(Skipped(format!(
            "PDF support needs the PDFium library at {} (scripts/install-pdfium installs it)",
            library.display()
        )));
    }
    let bindings = Pdfium::bind_to_library(library)
        .map_err(|e| Skipped(format!("loading PDFium from {}: {e}", library.display())))?;
    let pdfium = Pdfium::new(bindings);
    let document = pdfium
        .load_pdf_from_byte_slice(bytes, None)
        .map_err(open_error)?;
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    builder.title(
        document
            .metadata()
            .get(PdfDocumentMetadataTagType::Title)
            .map(|tag| tag.value().to_string()),
    );
    // Glyphs cost more than the text they make: charge their characters
    // against a copy of the budget while reading, so a 10,000-page PDF
    // stops here rather than after holding every glyph.
    let mut reading = builder.budget().clone();
    let mut figures = limits.figures.as_ref().map(Figures::new);
    let mut pages = Vec::new();
    for (index, page) in document.pages().iter().enumerate() {
        let number = index as u32 + 1;
        let text = match page.text() {
            Ok(text) => text,
            Err(e) => {
                builder.omit(format!("page {number}: its text could not be read ({e})"));
                pages.push(Page {
                    number,
                    ..Page::default()
                });
                continue;
            }
        };
        let mut glyphs = Vec::new();
        for ch in text.chars().iter() {
            let Some(unicode) = ch.unicode_char() else {
                continue;
            };
            // PDFium reports a hyphen that ends a line as U+0002; the
            // layout joins the word again.
            let unicode = if unicode == '\u{2}' { '-' } else { unicode };
            reading.charge(unicode.len_utf8())?;
            let Ok(bounds) = ch.loose_bounds() else {
                continue;
            };
            glyphs.push(Glyph {
                ch: unicode,
                left: bounds.left().value,
                right: bounds.right().value,
                bottom: bounds.bottom().value,
                top: bounds.top().value,
                size: ch.scaled_font_size().value,
            });
        }
        // A scan with a few characters of text on it (a copier's page
        // stamp, a Bates number) is a scan all the same: with OCR on, its
        // page is read by OCR — which reads the stamp too — not by its
        // scrap of text layer.
        if limits.ocr.is_some()
            && glyphs.iter().filter(|g| !g.ch.is_whitespace()).count() < SPARSE_TEXT_CHARS
            && covered_by_an_image(&page)
        {
            glyphs.clear();
        }
        let figures = match &mut figures {
            Some(figures) => page_figures(&document, &page, number, figures),
            None => Vec::new(),
        };
        pages.push(Page {
            number,
            glyphs,
            figures,
        });
    }
    let textless: Vec<u32> = pages
        .iter()
        .filter(|page| page.glyphs.iter().all(|glyph| glyph.ch.is_whitespace()))
        .map(|page| page.number)
        .collect();
    layout::lay_out(pages, &mut builder)?;
    if let Some(figures) = figures {
        figures.finish(&mut builder);
    }
    if let Some(settings) = &limits.ocr
        && !textless.is_empty()
    {
        ocr_pages(&document, &textless, settings, &mut builder)?;
    }
    builder.finish()
}

/// A picture covering this share of its page or more is a scan (read by
/// OCR, not described).
const SCAN_COVERAGE: f32 = 0.9;

/// A page-covering scan with fewer characters of text layer than this is
/// OCR'd as if it had none.
const SPARSE_TEXT_CHARS: usize = 20;

/// Whether an image covers the page ([`SCAN_COVERAGE`]).
fn covered_by_an_image(page: &PdfPage) -> bool {
    page.objects().iter().any(|object| {
        object.as_image_object().is_some()
            && object.bounds().is_ok_and(|bounds| covers(page, &bounds))
    })
}

/// Whether `bounds` cover [`SCAN_COVERAGE`] of `page`.
fn covers(page: &PdfPage, bounds: &PdfQuadPoints) -> bool {
    let page_area = (page.width().value * page.height().value).abs().max(1.0);
    (bounds.width().value * bounds.height().value).abs() >= page_area * SCAN_COVERAGE
}

/// The pictures on `page` to describe (image objects of at least
/// `min_pixels`, not page-covering scans), each drawn as PDFium renders it
/// (masks and filters applied) at most `max_side` pixels long: their tops
/// and markers.
fn page_figures(
    document: &PdfDocument,
    page: &PdfPage,
    number: u32,
    figures: &mut Figures,
) -> Vec<(f32, String)> {
    let mut found = Vec::new();
    for object in page.objects().iter() {
        let Some(image) = object.as_image_object() else {
            continue;
        };
        let (Ok(width), Ok(height), Ok(bounds)) = (image.width(), image.height(), object.bounds())
        else {
            continue;
        };
        let (width, height) = (width.max(0) as u32, height.max(0) as u32);
        if covers(page, &bounds) || !figures.wants(width, height) {
            continue;
        }
        let Some(picture) = figure_image(document, image, figures.max_side(), (width, height))
        else {
            continue;
        };
        if let Some(marker) = figures.add(&picture, Some(number)) {
            found.push((bounds.top().value, marker));
        }
    }
    found
}

/// An image object as pixels, scaled to fit `max_side`.
fn figure_image(
    document: &PdfDocument,
    image: &PdfPageImageObject,
    max_side: u32,
    (width, height): (u32, u32),
) -> Option<image::DynamicImage> {
    let scale = (max_side as f32 / width.max(height).max(1) as f32).min(1.0);
    let target = |side: u32| ((side as f32 * scale).round() as i32).max(1);
    let bitmap = image
        .get_processed_bitmap_with_size(document, target(width), target(height))
        .ok()?;
    let (w, h) = (bitmap.width().max(0) as u32, bitmap.height().max(0) as u32);
    let bytes = bitmap.as_rgba_bytes();
    if bitmap.format().ok()? == PdfBitmapFormat::Gray {
        image::GrayImage::from_raw(w, h, bytes).map(image::DynamicImage::ImageLuma8)
    } else {
        image::RgbaImage::from_raw(w, h, bytes).map(image::DynamicImage::ImageRgba8)
    }
}

/// What the layout notes for a page without glyphs (`layout::lay_out`);
/// taken back for pages OCR then reads.
fn no_text_layer(number: u32) -> String {
    format!("page {number}: no text layer (OCR not enabled)")
}

/// Renders the pages numbered `textless` (up to `max_pages`) and adds what
/// OCR reads on them.
fn ocr_pages(
    document: &PdfDocument,
    textless: &[u32],
    settings: &OcrSettings,
    builder: &mut Builder,
) -> Result<(), Skipped> {
    // A page with neither text nor an image (blank, or only drawings) has
    // nothing OCR could read.
    let (scans, blank): (Vec<u32>, Vec<u32>) = textless.iter().partition(|&&number| {
        i32::try_from(number - 1)
            .ok()
            .and_then(|index| document.pages().get(index).ok())
            .is_some_and(|page| {
                page.objects()
                    .iter()
                    .any(|object| object.as_image_object().is_some())
            })
    });
    for number in blank {
        builder.unomit(&no_text_layer(number));
        builder.omit(format!("page {number}: no text layer, and no image to OCR"));
    }
    let max_pages = settings.max_pages.max(1) as usize;
    let (read, left) = scans.split_at(scans.len().min(max_pages));
    let pages = read
        .iter()
        .map(|&number| render(document, number, settings).map_err(|why| (number, why)));
    // Tesseract failing to load costs these pages, not the document's text.
    let texts = ocr::recognize_pages(settings, read.len(), pages).unwrap_or_else(|Skipped(why)| {
        read.iter()
            .map(|&number| (number, PageText::Unread(why.clone())))
            .collect()
    });
    for (number, text) in texts {
        builder.unomit(&no_text_layer(number));
        match text {
            PageText::Markdown(markdown) => builder.ocr_page(number, markdown)?,
            PageText::Nothing => builder.omit(format!(
                "page {number}: no text layer, and OCR found no text"
            )),
            PageText::Unread(why) => builder.omit(format!("page {number}: no text layer; {why}")),
        }
    }
    if let (Some(first), Some(last)) = (left.first(), left.last()) {
        for &number in left {
            builder.unomit(&no_text_layer(number));
        }
        builder.omit(format!(
            "{} pages without a text layer from page {first} to {last}: not read, \
             [extract.ocr] max_pages is {max_pages}",
            left.len()
        ));
    }
    Ok(())
}

/// Page `number` as grey pixels at the configured resolution (lowered to
/// fit the pixel budget).
fn render(document: &PdfDocument, number: u32, settings: &OcrSettings) -> Result<OcrPage, String> {
    let index = i32::try_from(number - 1).map_err(|_| "beyond the last page".to_string())?;
    let page = document
        .pages()
        .get(index)
        .map_err(|e| format!("could not be opened to render it ({e})"))?;
    let (dpi, width, height) =
        settings.render_size(page.width().value, page.height().value, scan_dpi(&page));
    let width = i32::try_from(width).map_err(|_| "too large to render".to_string())?;
    let height = i32::try_from(height).map_err(|_| "too large to render".to_string())?;
    let config = PdfRenderConfig::new()
        .set_target_width(width)
        .set_maximum_height(height)
        // Grey pixels in a 32-bit bitmap (PDFium draws no images into
        // 8-bit grey bitmaps).
        .use_grayscale_rendering(true)
        .render_form_data(true);
    let bitmap = page
        .render_with_config(&config)
        .map_err(|e| format!("could not be rendered ({e})"))?;
    let (width, height) = (bitmap.width().max(0) as u32, bitmap.height().max(0) as u32);
    let raw = bitmap.as_raw_bytes();
    let format = bitmap.format().unwrap_or(PdfBitmapFormat::BGRA);
    Ok(OcrPage {
        number,
        image: grey(&raw, width, height, format)?,
        dpi,
    })
}

/// The resolution of the largest image drawn on `page` (a scan), if any.
fn scan_dpi(page: &PdfPage) -> Option<f32> {
    page.objects()
        .iter()
        .filter_map(|object| {
            let image = object.as_image_object()?;
            let pixels = image.width().ok()? as f32 * image.height().ok()? as f32;
            Some((pixels, image.horizontal_dpi().ok()?))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, dpi)| dpi)
}

/// A PDFium bitmap's rows (each `stride` bytes) as tightly packed grey.
fn grey(raw: &[u8], width: u32, height: u32, format: PdfBitmapFormat) -> Result<GreyImage, String> {
    let bytes_per_pixel = match format {
        PdfBitmapFormat::Gray => 1,
        PdfBitmapFormat::BGR => 3,
        PdfBitmapFormat::BGRx | PdfBitmapFormat::BGRA => 4,
    };
    let (w, h) = (width as usize, height as usize);
    if h == 0 || w == 0 || raw.len() / h < w * bytes_per_pixel {
        return Err("rendered to an empty image".into());
    }
    let stride = raw.len() / h;
    if bytes_per_pixel == 4 && stride == w * 4 && raw.len() == w * h * 4 {
        // The common case (PDFium's 32-bit bitmaps have no row padding):
        // the `image` crate's conversion, optimised even in debug builds.
        // Read as RGBA, blue and red swap places in the luma weights:
        // pages are rendered grey ([`render`]), so that changes nothing.
        if let Some(buffer) = image::RgbaImage::from_raw(width, height, raw.to_vec()) {
            return Ok(GreyImage {
                width,
                height,
                pixels: image::DynamicImage::ImageRgba8(buffer)
                    .into_luma8()
                    .into_raw(),
            });
        }
    }
    let mut pixels = Vec::with_capacity(w * h);
    for row in raw.chunks_exact(stride).take(h) {
        let row = &row[..w * bytes_per_pixel];
        if bytes_per_pixel == 1 {
            pixels.extend_from_slice(row);
        } else {
            pixels.extend(row.chunks_exact(bytes_per_pixel).map(|p| {
                let [b, g, r] = [p[0], p[1], p[2]].map(u32::from);
                ((r * 299 + g * 587 + b * 114) / 1000) as u8
            }));
        }
    }
    Ok(GreyImage {
        width,
        height,
        pixels,
    })
}

fn open_error(error: PdfiumError) -> Skipped {
    match error {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => Skipped(
            "encrypted PDF that needs a password (only an empty user password is tried)".into(),
        ),
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            Skipped("encrypted PDF with an unsupported security handler".into())
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::FormatError) => {
            Skipped("not a readable PDF (corrupt or truncated)".into())
        }
        other => Skipped(format!("not a readable PDF: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OCR takes back the layout's note for a page it reads: the two must
    /// spell it alike.
    #[test]
    fn the_layouts_note_for_a_page_without_text_is_the_one_ocr_takes_back() {
        let mut builder = Builder::new("application/pdf", 1 << 20);
        let page = Page {
            number: 2,
            ..Page::default()
        };
        layout::lay_out(vec![page], &mut builder).unwrap();
        builder.unomit(&no_text_layer(2));
        assert_eq!(builder.finish().unwrap_err().0, "no text to index");
    }
}
