//! OCR: page images → text, with Tesseract ([`tesseract`]), in the
//! converter child only.
//!
//! Pages come from PDFium (PDF pages without a text layer,
//! [`super::pdf`]) or from image files ([`super::images`]), one at a time
//! and in page order, on the converting thread (PDFium is not thread-safe);
//! [`recognize_pages`] hands them to `threads` OCR threads, each with its
//! own recognizer, through a channel holding at most one page per thread,
//! so rendering overlaps recognition and at most `2 × threads + 1` page
//! images are alive at once. Every page is bounded: its pixels
//! (`max_pixels_per_page`, checked before anything is rendered or decoded),
//! its time (`max_seconds_per_page`, Tesseract's own deadline) and the
//! number of pages OCR'd per document (`max_pages`).

pub mod tesseract;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Skipped;
pub use tesseract::GreyImage;

/// How the child runs OCR (the daemon's `[extract.ocr]`, resolved: OCR is
/// on whenever the child is given these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OcrSettings {
    /// `libtesseract.so.5`, or a path to it.
    pub library: PathBuf,
    /// The directory holding `<language>.traineddata`.
    pub tessdata: PathBuf,
    /// Tesseract language codes (`eng`, `deu`), tried together.
    pub languages: Vec<String>,
    /// Resolution PDF pages are rendered at.
    pub dpi: u32,
    /// Largest page image, in pixels: PDF pages are rendered at a lower
    /// resolution to fit; larger images are not decoded.
    pub max_pixels_per_page: u64,
    /// Time Tesseract may spend on one page.
    pub max_millis_per_page: u64,
    /// Pages OCR'd per document at most (PDF pages, TIFF pages).
    pub max_pages: u32,
    /// OCR threads in one converter.
    pub threads: usize,
}

impl OcrSettings {
    /// `eng+deu`, as Tesseract takes them.
    pub fn language_list(&self) -> String {
        self.languages.join("+")
    }

    /// The resolution a page of `width_points` × `height_points` (1/72 in)
    /// is rendered at: `dpi`, or the resolution of the scan on the page
    /// (`scan_dpi`, its largest image's) when that is lower — enlarging a
    /// 200-dpi scan only blurs its speckles into letters — but not below
    /// 150; then lowered until the image fits `max_pixels_per_page`. With
    /// its size in pixels.
    pub fn render_size(
        &self,
        width_points: f32,
        height_points: f32,
        scan_dpi: Option<f32>,
    ) -> (u32, u32, u32) {
        let inches = (
            f64::from(width_points.abs().max(1.0)) / 72.0,
            f64::from(height_points.abs().max(1.0)) / 72.0,
        );
        let mut dpi = f64::from(self.dpi.max(1));
        if let Some(scan) = scan_dpi.filter(|scan| scan.is_finite() && *scan > 0.0) {
            dpi = dpi.min(f64::from(scan).round().max(150.0));
        }
        let pixels = inches.0 * inches.1 * dpi * dpi;
        let budget = self.max_pixels_per_page.max(1) as f64;
        if pixels > budget {
            dpi *= (budget / pixels).sqrt();
        }
        let dpi = dpi.floor().max(1.0);
        let width = (inches.0 * dpi).floor().max(1.0) as u32;
        let height = (inches.1 * dpi).floor().max(1.0) as u32;
        (dpi as u32, width, height)
    }
}

/// One page to recognize.
#[derive(Debug)]
pub struct OcrPage {
    /// 1-based.
    pub number: u32,
    pub image: GreyImage,
    /// What it was rendered at; 0 when unknown (image files).
    pub dpi: u32,
}

/// What OCR made of one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageText {
    /// Markdown: paragraphs separated by blank lines.
    Markdown(String),
    /// OCR found no text.
    Nothing,
    /// Why the page was not read (the omitted-part reason, without the
    /// page number).
    Unread(String),
}

/// Recognizes `pages` (rendered lazily on this thread, in order; an `Err`
/// is a page that could not be rendered, with why) on up to
/// `settings.threads` threads, at most `expected` of them (the pages to
/// come, when known). Results are in page order. Loading Tesseract or its
/// models failing ends the document with the reason.
pub fn recognize_pages<I>(
    settings: &OcrSettings,
    expected: usize,
    pages: I,
) -> Result<Vec<(u32, PageText)>, Skipped>
where
    I: Iterator<Item = Result<OcrPage, (u32, String)>>,
{
    let library = tesseract::Library::load(&settings.library)
        .map_err(|e| Skipped(format!("OCR is unavailable: {e}")))?;
    let threads = settings.threads.clamp(1, 16).min(expected.max(1));
    let languages = settings.language_list();
    let mut engines = Vec::with_capacity(threads);
    for _ in 0..threads {
        engines.push(
            library
                .engine(&settings.tessdata, &languages)
                .map_err(|e| Skipped(format!("OCR is unavailable: {e}")))?,
        );
    }
    let deadline = Duration::from_millis(settings.max_millis_per_page.max(1));
    let (to_ocr, queue) = mpsc::sync_channel::<OcrPage>(threads);
    let queue = Arc::new(Mutex::new(queue));
    let (done, results) = mpsc::channel::<(u32, PageText)>();
    let mut unrendered = Vec::new();
    std::thread::scope(|scope| {
        for mut engine in engines {
            let queue = Arc::clone(&queue);
            let done = done.clone();
            scope.spawn(move || {
                loop {
                    // The lock is held only while waiting for the next page.
                    let next = match queue.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    let Ok(page) = next else { return };
                    let recognized = engine.recognize(&page.image, page.dpi, deadline);
                    let number = page.number;
                    drop(page);
                    if done
                        .send((number, page_text(recognized, deadline)))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        drop(done);
        for page in pages {
            match page {
                Ok(page) => {
                    if to_ocr.send(page).is_err() {
                        break;
                    }
                }
                Err((number, why)) => unrendered.push((number, PageText::Unread(why))),
            }
        }
        // No more pages: the threads finish theirs and stop.
        drop(to_ocr);
    });
    let mut texts: Vec<(u32, PageText)> = results.into_iter().chain(unrendered).collect();
    texts.sort_by_key(|(number, _)| *number);
    Ok(texts)
}

fn page_text(recognized: tesseract::Recognized, deadline: Duration) -> PageText {
    match recognized {
        tesseract::Recognized::Text(text) => {
            let markdown = to_markdown(&text);
            if markdown.is_empty() {
                PageText::Nothing
            } else {
                PageText::Markdown(markdown)
            }
        }
        tesseract::Recognized::TimedOut => PageText::Unread(format!(
            "OCR took longer than [extract.ocr] max_seconds_per_page ({} s)",
            deadline.as_secs_f64()
        )),
        tesseract::Recognized::Failed => {
            PageText::Unread("Tesseract could not read the page image".into())
        }
    }
}

/// Whether a PDF's bytes draw an image (an image XObject's dictionary,
/// `/Subtype /Image`, which is never inside a compressed object stream):
/// only then can a page without text be a scan worth loading Tesseract for
/// (about 10 ms a converter). A page PDFium finds an image on anyway (an
/// inline image) is still tried, and, Tesseract not loaded, noted.
pub fn pdf_draws_images(bytes: &[u8]) -> bool {
    static IMAGE: std::sync::LazyLock<Option<regex::bytes::Regex>> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r"/Image(?:[\s/>\[\]<(%]|$)").ok());
    IMAGE.as_ref().is_none_or(|image| image.is_match(bytes))
}

/// The child's side of [`super::isolate::probe_ocr`]: loads Tesseract and
/// its models as a converter would; Tesseract's version, or why not.
pub fn probe(settings: &OcrSettings) -> Result<String, String> {
    let library = tesseract::Library::load(&settings.library)?;
    library.engine(&settings.tessdata, &settings.language_list())?;
    Ok(library.version())
}

/// Tesseract's text → markdown paragraphs: lines of a paragraph joined
/// (a word hyphenated at a line's end made whole again), paragraphs
/// separated by a blank line, whitespace squeezed. Tesseract sometimes
/// makes each line of a scanned paragraph a paragraph of its own: a
/// "paragraph" that starts in lower case after one that stops
/// mid-sentence continues it.
pub fn to_markdown(text: &str) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
            continue;
        }
        if current.is_empty()
            && let Some(previous) = paragraphs.last()
            && !previous.ends_with(['.', '!', '?', ':', ';'])
            && line.chars().next().is_some_and(char::is_lowercase)
        {
            current = paragraphs.pop().unwrap_or_default();
        }
        let hyphenated = current.ends_with('-')
            && current
                .chars()
                .rev()
                .nth(1)
                .is_some_and(char::is_alphabetic)
            && line.chars().next().is_some_and(char::is_lowercase);
        if hyphenated {
            current.pop();
        } else if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    paragraphs.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tesseract_text_becomes_paragraphs() {
        let text = "The harbour master kept a led-\nger of every vessel.\n\n\nIn  winter the quay\nfroze at night.\n \n";
        assert_eq!(
            to_markdown(text),
            "The harbour master kept a ledger of every vessel.\n\nIn winter the quay froze at night."
        );
        assert_eq!(to_markdown(" \n\n"), "");
        // Lines Tesseract split into paragraphs of their own.
        assert_eq!(
            to_markdown("entered the bay, noting\n\nits tonnage.\n\nA survey"),
            "entered the bay, noting its tonnage.\n\nA survey"
        );
    }

    #[test]
    fn pdfs_that_draw_images_are_told_apart() {
        assert!(pdf_draws_images(
            b"<< /Type /XObject /Subtype /Image /Width 10 >>"
        ));
        assert!(pdf_draws_images(b"<</Subtype/Image/Width 10>>"));
        assert!(!pdf_draws_images(
            b"/ProcSet [/PDF /Text /ImageB /ImageC /ImageI]"
        ));
        assert!(!pdf_draws_images(b"%PDF-1.4 BT (Image) Tj ET"));
    }

    #[test]
    fn pages_are_rendered_within_the_pixel_budget() {
        let settings = OcrSettings {
            library: "libtesseract.so.5".into(),
            tessdata: "/usr/share/tesseract-ocr/5/tessdata".into(),
            languages: vec!["eng".into(), "deu".into()],
            dpi: 300,
            max_pixels_per_page: 40_000_000,
            max_millis_per_page: 1000,
            max_pages: 100,
            threads: 2,
        };
        // US letter at 300 dpi: 2550 × 3300, 8.4 MP, within the budget.
        assert_eq!(settings.render_size(612.0, 792.0, None), (300, 2550, 3300));
        // A 200-dpi scan is read at 200 dpi; a 600-dpi one at 300; a
        // 72-dpi one at 150.
        assert_eq!(settings.render_size(612.0, 792.0, Some(200.4)).0, 200);
        assert_eq!(settings.render_size(612.0, 792.0, Some(600.0)).0, 300);
        assert_eq!(settings.render_size(612.0, 792.0, Some(72.0)).0, 150);
        // A 200-inch poster: the resolution drops until it fits.
        let (dpi, width, height) = settings.render_size(14_400.0, 14_400.0, None);
        assert!(dpi < 300 && u64::from(width) * u64::from(height) <= 40_000_000);
        assert_eq!(settings.language_list(), "eng+deu");
    }
}
