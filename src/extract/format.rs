//! Which document format a file is: chosen by its name or media type, then
//! confirmed by its first bytes (a `.pdf` that is not a PDF is refused with
//! that reason rather than handed to a parser that expects one).

use serde::{Deserialize, Serialize};

use super::{Skipped, essence, extension_of};

/// Formats converted to markdown in a child process ([`super::isolate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    Pdf,
    Docx,
    Odt,
    Pptx,
    Odp,
    /// `.xlsx`, `.xlsm`, `.xltx`.
    Xlsx,
    Xls,
    Ods,
    Csv,
    Epub,
    /// Jupyter notebooks (`.ipynb`).
    Notebook,
    /// Legacy binary Word and PowerPoint files: recognised to say why they
    /// are not indexed.
    Doc,
    Ppt,
    /// HTML larger than [`super::MAX_INLINE_HTML_BYTES`]: never chosen by
    /// name or media type (smaller HTML is text, converted in the daemon),
    /// only by [`super::large_html`], so that a big page's DOM is built in
    /// the child, under its memory and time limits.
    Html,
}

const ZIP: &[u8] = b"PK\x03\x04";
const OLE2: &[u8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";

impl DocumentFormat {
    /// The MIME type recorded as `content_type`.
    pub fn mime(self) -> &'static str {
        match self {
            DocumentFormat::Pdf => "application/pdf",
            DocumentFormat::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            DocumentFormat::Odt => "application/vnd.oasis.opendocument.text",
            DocumentFormat::Pptx => {
                "application/vnd.openxmlformats-officedocument.presentationml.presentation"
            }
            DocumentFormat::Odp => "application/vnd.oasis.opendocument.presentation",
            DocumentFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            DocumentFormat::Xls => "application/vnd.ms-excel",
            DocumentFormat::Ods => "application/vnd.oasis.opendocument.spreadsheet",
            DocumentFormat::Csv => "text/csv",
            DocumentFormat::Epub => "application/epub+zip",
            DocumentFormat::Notebook => "application/x-ipynb+json",
            DocumentFormat::Doc => "application/msword",
            DocumentFormat::Ppt => "application/vnd.ms-powerpoint",
            DocumentFormat::Html => "text/html",
        }
    }

    fn from_extension(extension: &str) -> Option<Self> {
        Some(match extension {
            "pdf" => DocumentFormat::Pdf,
            "docx" | "docm" | "dotx" => DocumentFormat::Docx,
            "odt" => DocumentFormat::Odt,
            "pptx" | "pptm" | "ppsx" => DocumentFormat::Pptx,
            "odp" => DocumentFormat::Odp,
            "xlsx" | "xlsm" | "xltx" => DocumentFormat::Xlsx,
            "xls" => DocumentFormat::Xls,
            "ods" => DocumentFormat::Ods,
            "csv" => DocumentFormat::Csv,
            "epub" => DocumentFormat::Epub,
            "ipynb" => DocumentFormat::Notebook,
            "doc" => DocumentFormat::Doc,
            "ppt" => DocumentFormat::Ppt,
            _ => return None,
        })
    }

    fn from_media_type(media: &str) -> Option<Self> {
        const ALL: [DocumentFormat; 13] = [
            DocumentFormat::Pdf,
            DocumentFormat::Docx,
            DocumentFormat::Odt,
            DocumentFormat::Pptx,
            DocumentFormat::Odp,
            DocumentFormat::Xlsx,
            DocumentFormat::Xls,
            DocumentFormat::Ods,
            DocumentFormat::Csv,
            DocumentFormat::Epub,
            DocumentFormat::Notebook,
            DocumentFormat::Doc,
            DocumentFormat::Ppt,
        ];
        match media {
            "application/vnd.ms-excel.sheet.macroenabled.12" => Some(DocumentFormat::Xlsx),
            "application/x-pdf" => Some(DocumentFormat::Pdf),
            _ => ALL.into_iter().find(|format| format.mime() == media),
        }
    }

    /// Whether `head` (the first bytes of the file) can be this format.
    fn matches(self, head: &[u8]) -> bool {
        match self {
            // Readers accept a header within the first KiB (after junk a
            // mail gateway or a web server may have put in front).
            DocumentFormat::Pdf => head[..head.len().min(1024)]
                .windows(5)
                .any(|w| w == b"%PDF-"),
            DocumentFormat::Docx
            | DocumentFormat::Odt
            | DocumentFormat::Pptx
            | DocumentFormat::Odp
            | DocumentFormat::Xlsx
            | DocumentFormat::Ods
            | DocumentFormat::Epub => head.starts_with(ZIP),
            DocumentFormat::Xls | DocumentFormat::Doc | DocumentFormat::Ppt => {
                head.starts_with(OLE2)
            }
            DocumentFormat::Csv | DocumentFormat::Notebook | DocumentFormat::Html => {
                !head[..head.len().min(8192)].contains(&0)
            }
        }
    }
}

/// The document format of a file named `key` served as `content_type`, if
/// it is one we convert: by extension first, then by media type.
pub fn document_format(key: &str, content_type: Option<&str>) -> Option<DocumentFormat> {
    DocumentFormat::from_extension(&extension_of(key))
        .or_else(|| DocumentFormat::from_media_type(essence(content_type)?.as_str()))
}

/// `format` confirmed against the file's first bytes; legacy formats and
/// files that are not what their name says end here with the reason.
pub fn confirm(format: DocumentFormat, head: &[u8]) -> Result<DocumentFormat, Skipped> {
    if !format.matches(head) {
        return Err(Skipped(format!(
            "not a valid {} file (its bytes do not start like one)",
            format.mime()
        )));
    }
    match format {
        DocumentFormat::Doc => Err(Skipped(
            "legacy binary Word document (.doc) is not supported: save it as .docx".into(),
        )),
        DocumentFormat::Ppt => Err(Skipped(
            "legacy binary PowerPoint file (.ppt) is not supported: save it as .pptx".into(),
        )),
        _ => Ok(format),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_names_then_media_types() {
        assert_eq!(document_format("a/b.PDF", None), Some(DocumentFormat::Pdf));
        assert_eq!(
            document_format("report.xlsm", Some("application/octet-stream")),
            Some(DocumentFormat::Xlsx)
        );
        assert_eq!(
            document_format("download", Some("application/pdf; qs=0.9")),
            Some(DocumentFormat::Pdf)
        );
        assert_eq!(document_format("notes.md", None), None);
        assert_eq!(document_format("noext", Some("text/plain")), None);
    }

    #[test]
    fn bytes_confirm_the_format() {
        assert_eq!(
            confirm(DocumentFormat::Pdf, b"%PDF-1.7\n..."),
            Ok(DocumentFormat::Pdf)
        );
        let wrong = confirm(DocumentFormat::Docx, b"%PDF-1.7").unwrap_err();
        assert!(wrong.0.contains("not a valid"), "{wrong:?}");
        let legacy = confirm(DocumentFormat::Doc, OLE2).unwrap_err();
        assert!(legacy.0.contains(".doc"), "{legacy:?}");
        assert!(confirm(DocumentFormat::Csv, b"a,b\0").is_err());
    }
}
