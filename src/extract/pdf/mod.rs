//! PDF through PDFium (the engine of Chrome's viewer), loaded at run time
//! from the shared library the `pypdfium2` wheel ships
//! (`scripts/install-pdfium`). PDFium reads the text layer: each glyph with
//! its position and size, which [`layout`] turns into markdown. Why PDFium
//! and not a pure-Rust reader: ARCHITECTURE.md says, with the measurements
//! in `bench/results/documents.md`.
//!
//! Only ever run in a converter child ([`super::isolate`]): PDFium is C++
//! reading hostile bytes.

mod layout;

use pdfium_render::prelude::*;

use super::converted::{Builder, Converted};
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
    let mut pages = Vec::new();
    for (index, page) in document.pages().iter().enumerate() {
        let number = index as u32 + 1;
        let text = match page.text() {
            Ok(text) => text,
            Err(e) => {
                builder.omit(format!("page {number}: its text could not be read ({e})"));
                pages.push(Page {
                    number,
                    glyphs: Vec::new(),
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
        pages.push(Page { number, glyphs });
    }
    layout::lay_out(pages, &mut builder)?;
    builder.finish()
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
