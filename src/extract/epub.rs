//! EPUB books: the chapters of the spine in reading order, each XHTML file
//! converted to markdown like any HTML page; the title from the package
//! document's `dc:title`.

use std::collections::HashMap;

use super::converted::{Builder, Converted};
use super::package::Package;
use super::package::resolve;
use super::xml::{Node, XmlStream};
use super::{Limits, Skipped, html_to_markdown_bounded};

// The part walkers are generic over the reader; a closure fixes the part's
// lifetime where passing the fn item (clippy's suggestion) does not compile.
#[allow(clippy::redundant_closure)]
pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let mut package = Package::open(bytes, limits.part_cap())?;
    let opf_path = package
        .walk_xml("META-INF/container.xml", |xml| {
            for node in xml {
                if let Node::Open(tag) = node?
                    && tag.name == "rootfile"
                    && let Some(path) = tag.attr("full-path")
                {
                    return Ok(Some(path.to_string()));
                }
            }
            Ok(None)
        })?
        .flatten()
        .ok_or_else(|| Skipped("not an EPUB book (no META-INF/container.xml rootfile)".into()))?;
    let base = match opf_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => String::new(),
    };
    let opf = package
        .walk_xml(&opf_path, |xml| read_package(xml))?
        .ok_or_else(|| Skipped(format!("the EPUB names {opf_path}, which is missing")))?;
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    builder.title(opf.title);
    for idref in &opf.spine {
        let Some(href) = opf.manifest.get(idref) else {
            continue;
        };
        // Hrefs are URLs: strip a fragment, undo the commonest escape.
        let href = href
            .split('#')
            .next()
            .unwrap_or_default()
            .replace("%20", " ");
        let path = resolve(&base, &href);
        let Some(chapter) = package.read(&path)? else {
            builder.omit(format!("chapter {path} is missing"));
            continue;
        };
        let html = String::from_utf8_lossy(&chapter);
        builder.text(html_to_markdown_bounded(&html).text, None)?;
    }
    builder.finish()
}

struct Opf {
    title: Option<String>,
    manifest: HashMap<String, String>,
    spine: Vec<String>,
}

fn read_package<R: std::io::BufRead>(xml: &mut XmlStream<R>) -> Result<Opf, Skipped> {
    let mut opf = Opf {
        title: None,
        manifest: HashMap::new(),
        spine: Vec::new(),
    };
    let mut in_title = false;
    let mut title = String::new();
    for node in xml {
        match node? {
            Node::Open(tag) => match tag.name.as_str() {
                "title" if opf.title.is_none() => in_title = true,
                "item" => {
                    if let (Some(id), Some(href)) = (tag.attr("id"), tag.attr("href")) {
                        opf.manifest.insert(id.to_string(), href.to_string());
                    }
                }
                "itemref" => {
                    if let Some(idref) = tag.attr("idref") {
                        opf.spine.push(idref.to_string());
                    }
                }
                _ => {}
            },
            Node::Text(text) if in_title => title.push_str(&text),
            Node::Close(name) if name == "title" && in_title => {
                in_title = false;
                opf.title = Some(title.trim().to_string()).filter(|t| !t.is_empty());
            }
            _ => {}
        }
    }
    Ok(opf)
}
