//! Extract: raw bytes of a document → text to chunk, or a reason to skip it.
//!
//! Two paths. Text (markdown, HTML, code, plain text) is decoded here, in
//! the daemon, by [`extract`]. Documents ([`DocumentFormat`]: PDF, Word,
//! PowerPoint, spreadsheets, EPUB, notebooks, images) are converted to
//! markdown sections by [`convert`] — which the daemon only ever runs in a
//! child process with limits ([`isolate`]), because their parsers read
//! hostile binary formats. Images, and PDF pages without a text layer, are
//! read by OCR ([`ocr`]: Tesseract, loaded at run time) in that child.
//!
//! Architecture invariant: pure functions, no IO (the one exception,
//! [`isolate`], runs these functions in a child). The kind of a document is
//! decided from its media type and file extension, then confirmed by looking
//! at the bytes (binary content is never embedded, whatever its name says).

use std::path::PathBuf;

use crate::nesting;

pub mod converted;
mod docx;
mod epub;
pub mod figures;
pub mod format;
mod images;
pub mod isolate;
mod notebook;
pub mod ocr;
mod odf;
mod package;
mod pdf;
mod pptx;
pub mod sandbox;
mod sheets;
mod xml;

pub use converted::{Converted, Figure, Section};
pub use figures::FigureSettings;
pub use format::{DocumentFormat, document_format};
pub use ocr::OcrSettings;

/// Bounds a conversion works within (the child's own; the daemon adds
/// time and memory caps around it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Text a document may produce; beyond it the document is skipped.
    pub max_extracted_bytes: usize,
    /// `libpdfium.so`; without it PDFs are skipped with the reason.
    pub pdfium_library: Option<PathBuf>,
    /// OCR for images and PDF pages without a text layer; `None`: off
    /// (images are skipped, such pages omitted, with the reason).
    pub ocr: Option<OcrSettings>,
    /// Pictures (image files, figures in PDF pages) handed back for
    /// description; `None`: none (`[extract.vision]` is not set).
    pub figures: Option<FigureSettings>,
}

impl Limits {
    /// Largest inflated part of a ZIP container read: office XML is several
    /// times the text it holds.
    pub fn part_cap(&self) -> u64 {
        (self.max_extracted_bytes as u64)
            .saturating_mul(8)
            .max(16 << 20)
    }

    #[cfg(test)]
    pub fn for_tests() -> Self {
        Limits {
            max_extracted_bytes: 8 << 20,
            pdfium_library: None,
            ocr: None,
            figures: None,
        }
    }
}

/// Converts a document to markdown sections, or says why it cannot. Runs
/// parsers of hostile formats: call it in a child ([`isolate`]), not in
/// the daemon.
pub fn convert(
    format: DocumentFormat,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Converted, Skipped> {
    let format = format::confirm(format, bytes)?;
    let mime = format.mime();
    match format {
        DocumentFormat::Pdf => pdf::convert(bytes, mime, limits),
        DocumentFormat::Docx => docx::convert(bytes, mime, limits),
        DocumentFormat::Odt | DocumentFormat::Odp => odf::convert(bytes, mime, limits),
        DocumentFormat::Pptx => pptx::convert(bytes, mime, limits),
        DocumentFormat::Xlsx | DocumentFormat::Xls | DocumentFormat::Ods => {
            sheets::convert(bytes, mime, limits)
        }
        DocumentFormat::Csv => sheets::convert_csv(bytes, mime, limits),
        DocumentFormat::Epub => epub::convert(bytes, mime, limits),
        DocumentFormat::Notebook => notebook::convert(bytes, mime, limits),
        DocumentFormat::Html => {
            let extracted = html_to_markdown_bounded(&decode_text(bytes)?);
            let mut builder = converted::Builder::new(mime, limits.max_extracted_bytes);
            builder.text(extracted.text, None)?;
            builder.finish()
        }
        DocumentFormat::Png
        | DocumentFormat::Jpeg
        | DocumentFormat::Webp
        | DocumentFormat::Gif
        | DocumentFormat::Tiff
        | DocumentFormat::Bmp => images::convert(format, bytes, limits),
        DocumentFormat::Doc | DocumentFormat::Ppt => {
            unreachable!("format::confirm refuses legacy formats")
        }
    }
}

/// The document format `bytes` (named `key`, served as `content_type`) are
/// converted as, if any: by name or media type, else an image by its magic
/// bytes ([`format::sniffed_format`]), else HTML too large to convert in
/// the daemon ([`large_html`]).
pub fn converted_format(
    key: &str,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Option<DocumentFormat> {
    format::sniffed_format(key, content_type, &bytes[..bytes.len().min(64)])
        .or_else(|| large_html(key, content_type, bytes.len()))
}

/// Languages we chunk syntax-aware with tree-sitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeLanguage {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
}

impl CodeLanguage {
    /// The `language` chunk metadata value.
    pub fn name(self) -> &'static str {
        match self {
            CodeLanguage::Rust => "rust",
            CodeLanguage::Python => "python",
            CodeLanguage::JavaScript => "javascript",
            CodeLanguage::TypeScript => "typescript",
            CodeLanguage::Tsx => "tsx",
            CodeLanguage::Go => "go",
            CodeLanguage::Java => "java",
            CodeLanguage::C => "c",
            CodeLanguage::Cpp => "cpp",
        }
    }

    fn from_extension(extension: &str) -> Option<Self> {
        Some(match extension {
            "rs" => CodeLanguage::Rust,
            "py" | "pyi" => CodeLanguage::Python,
            "js" | "mjs" | "cjs" | "jsx" => CodeLanguage::JavaScript,
            "ts" | "mts" | "cts" => CodeLanguage::TypeScript,
            "tsx" => CodeLanguage::Tsx,
            "go" => CodeLanguage::Go,
            "java" => CodeLanguage::Java,
            "c" | "h" => CodeLanguage::C,
            "cc" | "cpp" | "cxx" | "hpp" | "hh" | "hxx" => CodeLanguage::Cpp,
            _ => return None,
        })
    }
}

/// What kind of text a document holds; decides the chunking strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Markdown,
    /// HTML converted to markdown.
    Html,
    Code(CodeLanguage),
    Plain,
}

/// A document ready to chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub text: String,
    pub kind: TextKind,
}

/// Why a document was not indexed; recorded in the job's stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped(pub String);

/// Media types that are text even though they are not `text/*`.
const TEXTUAL_APPLICATION_TYPES: &[&str] = &[
    "application/json",
    "application/xml",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "application/javascript",
    "application/x-javascript",
    "application/typescript",
    "application/x-sh",
    "application/sql",
    "application/xhtml+xml",
    "application/ld+json",
];

/// Media type prefixes that are never text.
const BINARY_TYPE_PREFIXES: &[&str] = &["image/", "audio/", "video/", "font/"];

const BINARY_APPLICATION_TYPES: &[&str] = &[
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/x-7z-compressed",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/msword",
    "application/wasm",
    "application/x-executable",
];

const BINARY_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "webp", "bmp", "ico", "tif", "tiff", "pdf", "zip", "gz", "tgz",
    "bz2", "xz", "zst", "7z", "tar", "jar", "exe", "dll", "so", "dylib", "bin", "wasm", "class",
    "o", "a", "mp3", "mp4", "wav", "ogg", "mov", "avi", "woff", "woff2", "ttf", "otf", "parquet",
    "docx", "xlsx", "pptx", "sqlite", "db",
];

pub(crate) fn extension_of(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// Media type without parameters, lower-cased (`Text/HTML; charset=utf-8` → `text/html`).
pub(crate) fn essence(content_type: Option<&str>) -> Option<String> {
    let value = content_type?.split(';').next()?.trim().to_ascii_lowercase();
    (!value.is_empty()).then_some(value)
}

/// HTML up to this size is converted in the daemon; larger HTML goes to
/// the converter child ([`large_html`]). Parsing builds a DOM many times
/// the document's size (a 64 MiB page of empty elements raised the
/// daemon's memory by 1.1 GB), so only the child, under its memory and
/// time limits, may parse pages of any size.
pub const MAX_INLINE_HTML_BYTES: usize = 2 * 1024 * 1024;

/// [`DocumentFormat::Html`] for an HTML document of `len` bytes too large
/// to convert in the daemon; `None` otherwise.
pub fn large_html(key: &str, content_type: Option<&str>, len: usize) -> Option<DocumentFormat> {
    (len > MAX_INLINE_HTML_BYTES
        && document_format(key, content_type).is_none()
        && refuse_binary(key, content_type).is_ok()
        && kind_of(key, content_type).is_ok_and(|kind| kind == TextKind::Html))
    .then_some(DocumentFormat::Html)
}

/// Decides what `bytes` (named `key`, served as `content_type`) are and
/// turns them into text.
pub fn extract(key: &str, content_type: Option<&str>, bytes: &[u8]) -> Result<Extracted, Skipped> {
    refuse_binary(key, content_type)?;
    let text = decode_text(bytes)?;
    let kind = kind_of(key, content_type)?;
    Ok(match kind {
        TextKind::Html => html_to_markdown_bounded(&text),
        _ => Extracted { text, kind },
    })
}

/// HTML → markdown, or, for a document nested deeper than
/// [`nesting::MAX_HTML_DEPTH`], its text as plain text: the document still
/// ends in chunks, and no recursive (or superlinear) converter runs over it.
/// See [`crate::nesting`] for why.
pub(crate) fn html_to_markdown_bounded(html: &str) -> Extracted {
    // The estimate first (it keeps the parser's quadratic cost away), then
    // the parsed tree itself (what the converter will walk).
    if nesting::html_depth(html) <= nesting::MAX_HTML_DEPTH
        && nesting::html_tree_fits(&scraper::Html::parse_document(html))
    {
        Extracted {
            text: html_to_markdown(html),
            kind: TextKind::Html,
        }
    } else {
        Extracted {
            text: nesting::html_text(html),
            kind: TextKind::Plain,
        }
    }
}

/// Whether a document can be extracted a segment at a time: text whose
/// chunks only ever look at nearby lines (markdown, code, plain text). HTML
/// and documents (PDF, office files, CSV, notebooks) are converted as a
/// whole, and binary is not extracted at all.
pub fn streamable(key: &str, content_type: Option<&str>) -> bool {
    document_format(key, content_type).is_none()
        && refuse_binary(key, content_type).is_ok()
        && kind_of(key, content_type).is_ok_and(|kind| kind != TextKind::Html)
}

/// Why a document is skipped whatever its bytes, when its name or media
/// type already says it is binary (and not a document format we convert):
/// a source can skip it without reading it.
pub fn skipped_by_name(key: &str, content_type: Option<&str>) -> Option<String> {
    if document_format(key, content_type).is_some() {
        return None;
    }
    refuse_binary(key, content_type)
        .err()
        .map(|Skipped(reason)| reason)
}

fn refuse_binary(key: &str, content_type: Option<&str>) -> Result<(), Skipped> {
    let extension = extension_of(key);
    if let Some(media) = essence(content_type).as_deref()
        && (BINARY_TYPE_PREFIXES.iter().any(|p| media.starts_with(p))
            || BINARY_APPLICATION_TYPES.contains(&media))
    {
        return Err(Skipped(format!("binary content ({media})")));
    }
    if BINARY_EXTENSIONS.contains(&extension.as_str()) {
        return Err(Skipped(format!("binary content (.{extension} file)")));
    }
    Ok(())
}

/// What kind of text a document named `key`, served as `content_type`, is.
fn kind_of(key: &str, content_type: Option<&str>) -> Result<TextKind, Skipped> {
    let extension = extension_of(key);
    let media_type = essence(content_type);
    Ok(match (media_type.as_deref(), extension.as_str()) {
        (_, "md" | "markdown" | "mdx" | "mkd") | (Some("text/markdown" | "text/x-markdown"), _) => {
            TextKind::Markdown
        }
        (_, "html" | "htm" | "xhtml") | (Some("text/html" | "application/xhtml+xml"), _) => {
            TextKind::Html
        }
        (_, ext) if CodeLanguage::from_extension(ext).is_some() => {
            TextKind::Code(CodeLanguage::from_extension(ext).expect("checked above"))
        }
        (Some(media), _)
            if media.starts_with("text/")
                || TEXTUAL_APPLICATION_TYPES.contains(&media)
                || media == "application/octet-stream"
                || media == "binary/octet-stream" =>
        {
            TextKind::Plain
        }
        (Some(media), _) => return Err(Skipped(format!("unsupported media type {media}"))),
        (None, _) => TextKind::Plain,
    })
}

fn decode_text(bytes: &[u8]) -> Result<String, Skipped> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return Err(Skipped("binary content (NUL bytes)".to_string()));
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_string()),
        Err(_) => Err(Skipped("binary content (not valid UTF-8)".to_string())),
    }
}

/// Main content of an HTML page as markdown: scripts, styles and page chrome
/// (navigation, header, footer) are dropped; headings, lists, code blocks,
/// tables and link texts are kept.
pub fn html_to_markdown(html: &str) -> String {
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(vec![
            "script", "style", "noscript", "head", "nav", "header", "footer", "iframe", "svg",
            "form", "button",
        ])
        .build();
    // htmd only fails on IO errors of its in-memory reader; fall back to the raw
    // text rather than lose the document.
    converter.convert(html).unwrap_or_else(|_| html.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_extension_and_media_type() {
        type Case<'a> = (&'a str, Option<&'a str>, &'a [u8], Option<TextKind>);
        let cases: &[Case] = &[
            ("docs/a.md", None, b"# hi", Some(TextKind::Markdown)),
            (
                "a.txt",
                Some("text/markdown"),
                b"# hi",
                Some(TextKind::Markdown),
            ),
            (
                "src/lib.rs",
                None,
                b"fn main() {}",
                Some(TextKind::Code(CodeLanguage::Rust)),
            ),
            (
                "x/y.PY",
                Some("text/x-python"),
                b"x = 1",
                Some(TextKind::Code(CodeLanguage::Python)),
            ),
            (
                "a.tsx",
                None,
                b"<A/>",
                Some(TextKind::Code(CodeLanguage::Tsx)),
            ),
            ("notes", Some("text/plain"), b"plain", Some(TextKind::Plain)),
            (
                "data.json",
                Some("application/json"),
                b"{}",
                Some(TextKind::Plain),
            ),
            ("page.html", None, b"<p>x</p>", Some(TextKind::Html)),
            (
                "page",
                Some("text/html; charset=utf-8"),
                b"<p>x</p>",
                Some(TextKind::Html),
            ),
            ("img.png", None, b"\x89PNG", None),
            ("x.bin2", Some("image/jpeg"), b"\xff\xd8", None),
            ("blob", Some("application/octet-stream"), b"ab\0cd", None),
            ("latin1.txt", None, b"caf\xe9", None),
            ("file.weird", Some("application/x-msdownload"), b"MZ", None),
        ];
        for (key, media, bytes, expected) in cases {
            let got = extract(key, *media, bytes).ok().map(|e| e.kind);
            assert_eq!(got, *expected, "{key} {media:?}");
        }
    }

    #[test]
    fn skipped_documents_say_why() {
        let skipped = extract("a.png", Some("image/png"), b"x").unwrap_err();
        assert_eq!(skipped.0, "binary content (image/png)");
        let skipped = extract("blob.dat", None, b"\0\0\0").unwrap_err();
        assert!(skipped.0.contains("NUL"));
    }

    #[test]
    fn html_becomes_markdown_without_chrome() {
        let html = "<html><head><title>T</title><style>p{}</style></head><body>\
            <nav><a href='/'>Home</a></nav><h1>Guide</h1><p>Install <code>it</code>.</p>\
            <ul><li>one</li><li>two</li></ul><script>alert(1)</script>\
            <footer>(c) us</footer></body></html>";
        let text = extract("guide.html", None, html.as_bytes()).unwrap().text;
        assert!(text.contains("# Guide"), "{text}");
        assert!(text.contains("`it`"), "{text}");
        assert!(text.contains("one") && text.contains("two"), "{text}");
        assert!(!text.contains("alert"), "{text}");
        assert!(!text.contains("Home"), "{text}");
        assert!(!text.contains("(c) us"), "{text}");
    }

    #[test]
    fn bom_is_stripped() {
        let extracted = extract("a.txt", None, b"\xEF\xBB\xBFhello").unwrap();
        assert_eq!(extracted.text, "hello");
    }
}
