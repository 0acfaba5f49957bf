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
    /// Image files, read by OCR ([`super::images`]).
    Png,
    Jpeg,
    Webp,
    /// Its first frame.
    Gif,
    /// Every page (up to `[extract.ocr] max_pages`).
    Tiff,
    Bmp,
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
            DocumentFormat::Png => "image/png",
            DocumentFormat::Jpeg => "image/jpeg",
            DocumentFormat::Webp => "image/webp",
            DocumentFormat::Gif => "image/gif",
            DocumentFormat::Tiff => "image/tiff",
            DocumentFormat::Bmp => "image/bmp",
        }
    }

    /// Image files, which only OCR reads.
    pub fn is_image(self) -> bool {
        matches!(
            self,
            DocumentFormat::Png
                | DocumentFormat::Jpeg
                | DocumentFormat::Webp
                | DocumentFormat::Gif
                | DocumentFormat::Tiff
                | DocumentFormat::Bmp
        )
    }

    /// Whether converting may run OCR (images; PDF pages without text).
    pub fn may_need_ocr(self) -> bool {
        self.is_image() || self == DocumentFormat::Pdf
    }

    /// The format's name in reasons (`PNG`).
    pub fn name(self) -> &'static str {
        match self {
            DocumentFormat::Png => "PNG",
            DocumentFormat::Jpeg => "JPEG",
            DocumentFormat::Webp => "WebP",
            DocumentFormat::Gif => "GIF",
            DocumentFormat::Tiff => "TIFF",
            DocumentFormat::Bmp => "BMP",
            other => other.mime(),
        }
    }

    /// The image format whose first bytes `head` are, if any: for files
    /// whose name and media type say nothing (`application/octet-stream`).
    pub fn sniff_image(head: &[u8]) -> Option<Self> {
        [
            DocumentFormat::Png,
            DocumentFormat::Jpeg,
            DocumentFormat::Gif,
            DocumentFormat::Webp,
            DocumentFormat::Tiff,
            DocumentFormat::Bmp,
        ]
        .into_iter()
        .find(|format| format.matches(head))
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
            "png" => DocumentFormat::Png,
            "jpg" | "jpeg" | "jpe" | "jfif" => DocumentFormat::Jpeg,
            "webp" => DocumentFormat::Webp,
            "gif" => DocumentFormat::Gif,
            "tif" | "tiff" => DocumentFormat::Tiff,
            "bmp" | "dib" => DocumentFormat::Bmp,
            _ => return None,
        })
    }

    fn from_media_type(media: &str) -> Option<Self> {
        const ALL: [DocumentFormat; 19] = [
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
            DocumentFormat::Png,
            DocumentFormat::Jpeg,
            DocumentFormat::Webp,
            DocumentFormat::Gif,
            DocumentFormat::Tiff,
            DocumentFormat::Bmp,
        ];
        match media {
            "image/jpg" | "image/pjpeg" => Some(DocumentFormat::Jpeg),
            "image/x-ms-bmp" | "image/x-bmp" => Some(DocumentFormat::Bmp),
            "image/tif" | "image/x-tiff" => Some(DocumentFormat::Tiff),
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
            DocumentFormat::Png => head.starts_with(b"\x89PNG\r\n\x1a\n"),
            DocumentFormat::Jpeg => head.starts_with(b"\xFF\xD8\xFF"),
            DocumentFormat::Gif => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
            DocumentFormat::Webp => {
                head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP"
            }
            // Classic and BigTIFF, either byte order.
            DocumentFormat::Tiff => [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"]
                .iter()
                .any(|magic| head.starts_with(*magic)),
            // "BM", then a DIB header of a size some BMP version uses.
            DocumentFormat::Bmp => {
                head.len() >= 18
                    && head.starts_with(b"BM")
                    && matches!(
                        u32::from_le_bytes([head[14], head[15], head[16], head[17]]),
                        12 | 16 | 40 | 52 | 56 | 64 | 108 | 124
                    )
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

/// The format of a file named `key`, served as `content_type`, whose
/// bytes start with `head`: by name and media type ([`document_format`]),
/// else, for a file whose name has no extension and whose media type is
/// generic (`application/octet-stream`) or absent, an image recognised by
/// its magic bytes.
pub fn sniffed_format(
    key: &str,
    content_type: Option<&str>,
    head: &[u8],
) -> Option<DocumentFormat> {
    if let Some(format) = document_format(key, content_type) {
        return Some(format);
    }
    let generic = match essence(content_type).as_deref() {
        None | Some("application/octet-stream" | "binary/octet-stream") => true,
        Some(_) => false,
    };
    (generic && extension_of(key).is_empty())
        .then(|| DocumentFormat::sniff_image(head))
        .flatten()
}

/// `format` confirmed against the file's first bytes; legacy formats and
/// files that are not what their name says end here with the reason.
pub fn confirm(format: DocumentFormat, head: &[u8]) -> Result<DocumentFormat, Skipped> {
    // Images are often served under another image type's name (a JPEG
    // saved as `.png`): their bytes decide which image they are.
    if format.is_image()
        && !format.matches(head)
        && let Some(actual) = DocumentFormat::sniff_image(head)
    {
        return Ok(actual);
    }
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

    #[test]
    fn images_are_known_by_name_type_and_bytes() {
        assert_eq!(
            document_format("scan.JPG", None),
            Some(DocumentFormat::Jpeg)
        );
        assert_eq!(
            document_format("download", Some("image/tiff")),
            Some(DocumentFormat::Tiff)
        );
        assert_eq!(document_format("logo.svg", Some("image/svg+xml")), None);
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(
            sniffed_format("inbox/scan-0001", Some("application/octet-stream"), png),
            Some(DocumentFormat::Png)
        );
        // Only a nameless, untyped file is sniffed: text stays text.
        assert_eq!(sniffed_format("notes.txt", None, png), None);
        assert_eq!(sniffed_format("readme", Some("text/plain"), png), None);
        assert_eq!(sniffed_format("BMW", None, b"BMW report, 2024"), None);
        // A JPEG named .png is read as the JPEG it is.
        assert_eq!(
            confirm(DocumentFormat::Png, b"\xFF\xD8\xFF\xE0\0\x10JFIF"),
            Ok(DocumentFormat::Jpeg)
        );
        assert!(confirm(DocumentFormat::Gif, b"not an image").is_err());
    }
}
