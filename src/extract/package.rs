//! ZIP containers (OOXML, OpenDocument, EPUB), read with bounds: a part
//! that inflates beyond the cap, too many entries, or an encrypted part is
//! a reason to skip the document, never a reason to run out of memory.

use std::io::{BufRead, BufReader, Cursor, Read};

use zip::ZipArchive;
use zip::result::ZipError;

use super::Skipped;
use super::xml::{XmlStream, first_text};

/// More entries than any real document has; a zip of a million empty files
/// is refused before its directory is walked twice.
const MAX_ENTRIES: usize = 20_000;

pub struct Package<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    /// Largest inflated size of one part we read.
    part_cap: u64,
}

impl<'a> Package<'a> {
    pub fn open(bytes: &'a [u8], part_cap: u64) -> Result<Self, Skipped> {
        let archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_error("", e))?;
        if archive.len() > MAX_ENTRIES {
            return Err(Skipped(format!(
                "the ZIP container has {} entries (at most {MAX_ENTRIES})",
                archive.len()
            )));
        }
        Ok(Package { archive, part_cap })
    }

    pub fn has(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// The part's bytes, or `None` when there is no such part.
    pub fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, Skipped> {
        let cap = self.part_cap;
        let file = match self.archive.by_name(name) {
            Ok(file) => file,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(zip_error(name, e)),
        };
        let mut bytes = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Skipped(format!("reading {name} from the ZIP container: {e}")))?;
        if bytes.len() as u64 > cap {
            return Err(Skipped(format!(
                "{name} inflates beyond {cap} bytes (decompression bomb guard)"
            )));
        }
        Ok(Some(bytes))
    }

    /// Runs `walk` over the part's XML as it inflates (nothing is held but
    /// what `walk` keeps). `None` when there is no such part.
    pub fn walk_xml<T>(
        &mut self,
        name: &str,
        walk: impl FnOnce(&mut XmlStream<Box<dyn BufRead + '_>>) -> Result<T, Skipped>,
    ) -> Result<Option<T>, Skipped> {
        let cap = self.part_cap;
        let file = match self.archive.by_name(name) {
            Ok(file) => file,
            Err(ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(zip_error(name, e)),
        };
        let reader: Box<dyn BufRead + '_> = Box::new(BufReader::new(Capped {
            inner: file,
            left: cap,
            name: name.to_string(),
        }));
        let mut stream = XmlStream::new(reader, name);
        walk(&mut stream).map(Some)
    }

    /// `docProps/core.xml`'s `dc:title` (OOXML).
    pub fn core_title(&mut self) -> Option<String> {
        self.walk_xml("docProps/core.xml", |stream| {
            Ok(first_text(stream, "title"))
        })
        .ok()
        .flatten()
        .flatten()
    }
}

/// A part reader that fails (instead of growing) past its cap.
struct Capped<R> {
    inner: R,
    left: u64,
    name: String,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.left = self.left.checked_sub(read as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} inflates beyond the cap (decompression bomb guard)",
                self.name
            ))
        })?;
        Ok(read)
    }
}

fn zip_error(name: &str, error: ZipError) -> Skipped {
    let part = if name.is_empty() {
        String::new()
    } else {
        format!(" ({name})")
    };
    match error {
        ZipError::UnsupportedArchive(why) if why.contains("ncrypt") || why.contains("assword") => {
            Skipped(format!("encrypted document{part}: {why}"))
        }
        other => Skipped(format!("not a readable ZIP container{part}: {other}")),
    }
}

/// `target` relative to the folder `base` (ends with `/`), with `..` steps
/// resolved; absolute targets (`/ppt/…`) are taken from the package root.
pub fn resolve(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if let Some(absolute) = target.strip_prefix('/') {
        return absolute.to_string();
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for step in target.split('/') {
        match step {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            step => parts.push(step),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_of(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut out);
        for (name, bytes) in parts {
            writer
                .start_file(
                    *name,
                    zip::write::SimpleFileOptions::default()
                        .compression_method(zip::CompressionMethod::Deflated),
                )
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn a_part_that_inflates_past_the_cap_is_refused() {
        let big = vec![b'a'; 1 << 20];
        let bytes = zip_of(&[("word/document.xml", &big)]);
        assert!(bytes.len() < 10_000, "deflate squeezes it");
        let mut package = Package::open(&bytes, 1000).unwrap();
        let err = package.read("word/document.xml").unwrap_err();
        assert!(err.0.contains("decompression bomb"), "{err:?}");
        assert_eq!(package.read("missing.xml").unwrap(), None);
    }

    #[test]
    fn garbage_is_not_a_zip() {
        let err = Package::open(b"PK\x03\x04garbage", 1000).err().unwrap();
        assert!(err.0.contains("ZIP"), "{err:?}");
    }
}
