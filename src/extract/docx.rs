//! Word documents (`.docx`): headings as `#` levels (from the paragraph's
//! style or outline level), paragraphs, lists, tables as markdown tables,
//! footnotes at the end. Tracked deletions and comments are left out: only
//! `w:t` text is read, and deleted runs hold `w:delText`; moved-away text
//! (`w:moveFrom`) is skipped explicitly.

use std::collections::HashMap;
use std::io::BufRead;

use super::converted::{Budget, Builder, Converted, Markdown, Tables, markdown_table};
use super::figures::{Figures, picture};
use super::package::Package;
use super::package::resolve;
use super::xml::{Node, XmlStream};
use super::{Limits, Skipped};

#[derive(Debug, Clone, Copy, Default)]
struct StyleInfo {
    heading: Option<u8>,
    list: Option<bool>,
}

// The part walkers are generic over the reader; a closure fixes the part's
// lifetime where passing the fn item (clippy's suggestion) does not compile.
#[allow(clippy::redundant_closure)]
pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let mut package = Package::open(bytes, limits.part_cap())?;
    if !package.has("word/document.xml") {
        return Err(Skipped("not a Word document (no word/document.xml)".into()));
    }
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    builder.title(package.core_title());
    let styles = package
        .walk_xml("word/styles.xml", |xml| Ok(read_styles(xml)))?
        .unwrap_or_default();
    let mut markdown = Markdown::default();
    let pictures = package
        .walk_xml("word/document.xml", |xml| {
            Body::new(
                &styles,
                builder.budget(),
                &mut markdown,
                limits.figures.is_some(),
            )
            .walk(xml)
        })?
        .unwrap_or_default();
    if let Some(settings) = &limits.figures {
        let mut figures = Figures::new(settings);
        let targets = package
            .walk_xml("word/_rels/document.xml.rels", |xml| Ok(relationships(xml)))?
            .unwrap_or_default();
        for (index, id) in pictures.iter().enumerate() {
            let marker = targets.get(id).and_then(|target| {
                picture(&mut package, &resolve("word/", target), &mut figures, None)
            });
            markdown.replace(&placeholder(index), marker.as_deref().unwrap_or(""));
        }
        figures.finish(&mut builder);
    }
    let footnotes = package
        .walk_xml("word/footnotes.xml", |xml| read_footnotes(xml))?
        .unwrap_or_default();
    for (id, text) in footnotes {
        markdown.block(builder.budget(), &format!("[^{id}]: {text}"))?;
    }
    builder.markdown(markdown, None);
    builder.finish()
}

/// Where picture `index` stands until it is known whether it is
/// described: NUL, which XML text cannot hold, so no document writes it.
fn placeholder(index: usize) -> String {
    format!("\u{0}{index}\u{0}")
}

/// Relationship id → target (`rId5` → `media/image1.png`).
fn relationships<R: BufRead>(xml: &mut XmlStream<R>) -> HashMap<String, String> {
    xml.by_ref()
        .map_while(Result::ok)
        .filter_map(|node| match node {
            Node::Open(tag) if tag.name == "Relationship" => {
                Some((tag.attr("Id")?.to_string(), tag.attr("Target")?.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// Style id → what its name or outline level says (`heading 2`, `List Bullet`).
fn read_styles<R: BufRead>(xml: &mut XmlStream<R>) -> HashMap<String, StyleInfo> {
    let mut styles = HashMap::new();
    let mut current: Option<(String, StyleInfo)> = None;
    for node in xml.by_ref().map_while(Result::ok) {
        match node {
            Node::Open(tag) if tag.name == "style" => {
                current = tag
                    .attr("styleId")
                    .map(|id| (id.to_string(), StyleInfo::default()));
            }
            Node::Open(tag) if tag.name == "name" => {
                if let (Some((_, info)), Some(name)) = (current.as_mut(), tag.attr("val")) {
                    let name = name.to_ascii_lowercase();
                    if name == "title" {
                        info.heading = Some(1);
                    } else if let Some(level) = name.strip_prefix("heading ") {
                        info.heading = level.trim().parse::<u8>().ok().map(|l| l.clamp(1, 6));
                    } else if name.starts_with("list number") {
                        info.list = Some(true);
                    } else if name.starts_with("list bullet") || name == "list paragraph" {
                        info.list = Some(false);
                    }
                }
            }
            Node::Open(tag) if tag.name == "outlineLvl" => {
                if let (Some((_, info)), Some(level)) = (current.as_mut(), tag.attr("val"))
                    && info.heading.is_none()
                {
                    info.heading = level.parse::<u8>().ok().filter(|l| *l < 9).map(|l| l + 1);
                }
            }
            Node::Close(name) if name == "style" => {
                if let Some((id, info)) = current.take() {
                    styles.insert(id, info);
                }
            }
            _ => {}
        }
    }
    styles
}

/// A paragraph being read.
#[derive(Debug, Default)]
struct Paragraph {
    text: String,
    style: Option<String>,
    outline: Option<u8>,
    list_level: Option<u32>,
}

struct Body<'a> {
    styles: &'a HashMap<String, StyleInfo>,
    budget: &'a mut Budget,
    out: &'a mut Markdown,
    paragraphs: Vec<Paragraph>,
    tables: Tables,
    in_text: bool,
    /// Depth inside `w:del`/`w:moveFrom`: text there is not the document's.
    deleted: u32,
    /// Pictures' relationship ids (`a:blip r:embed`), in order, when they
    /// are collected for description; each stands as its [`placeholder`].
    pictures: Option<Vec<String>>,
}

impl<'a> Body<'a> {
    fn new(
        styles: &'a HashMap<String, StyleInfo>,
        budget: &'a mut Budget,
        out: &'a mut Markdown,
        pictures: bool,
    ) -> Self {
        Body {
            styles,
            budget,
            out,
            paragraphs: Vec::new(),
            tables: Tables::default(),
            in_text: false,
            deleted: 0,
            pictures: pictures.then(Vec::new),
        }
    }

    /// Reads the body into the markdown: the pictures' relationship ids.
    fn walk<R: BufRead>(mut self, xml: &mut XmlStream<R>) -> Result<Vec<String>, Skipped> {
        for node in xml {
            match node? {
                Node::Open(tag) => match tag.name.as_str() {
                    "p" => self.paragraphs.push(Paragraph::default()),
                    "pStyle" => {
                        if let Some(p) = self.paragraphs.last_mut() {
                            p.style = tag.attr("val").map(str::to_string);
                        }
                    }
                    "outlineLvl" => {
                        if let Some(p) = self.paragraphs.last_mut() {
                            p.outline = tag.attr("val").and_then(|v| v.parse().ok());
                        }
                    }
                    "ilvl" => {
                        if let Some(p) = self.paragraphs.last_mut() {
                            p.list_level = tag.attr("val").and_then(|v| v.parse().ok());
                        }
                    }
                    "numPr" => {
                        if let Some(p) = self.paragraphs.last_mut() {
                            p.list_level.get_or_insert(0);
                        }
                    }
                    "t" => self.in_text = true,
                    "tab" | "br" | "cr" => self.push_text(" "),
                    "noBreakHyphen" => self.push_text("-"),
                    "footnoteReference" => {
                        if let Some(id) = tag.attr("id") {
                            self.push_text(&format!("[^{id}]"));
                        }
                    }
                    "del" | "moveFrom" => self.deleted += 1,
                    "blip" if self.deleted == 0 => {
                        if let (Some(pictures), Some(id)) = (&mut self.pictures, tag.attr("embed"))
                        {
                            pictures.push(id.to_string());
                            let index = pictures.len() - 1;
                            self.push_text(&format!(" {} ", placeholder(index)));
                        }
                    }
                    "tbl" => self.tables.open(),
                    "tr" => self.tables.start_row(),
                    "tc" => self.tables.start_cell(),
                    _ => {}
                },
                Node::Text(text) if self.in_text => self.push_text(&text),
                Node::Text(_) => {}
                Node::Close(name) => match name.as_str() {
                    "t" => self.in_text = false,
                    "del" | "moveFrom" => self.deleted = self.deleted.saturating_sub(1),
                    "p" => self.close_paragraph()?,
                    "tc" => self.tables.end_cell(),
                    "tr" => self.tables.end_row(),
                    "tbl" => {
                        if let Some(rows) = self.tables.close() {
                            self.out.block(self.budget, &markdown_table(&rows))?;
                        }
                    }
                    _ => {}
                },
            }
        }
        Ok(self.pictures.unwrap_or_default())
    }

    fn push_text(&mut self, text: &str) {
        if self.deleted > 0 {
            return;
        }
        if let Some(p) = self.paragraphs.last_mut() {
            p.text.push_str(text);
        }
    }

    fn close_paragraph(&mut self) -> Result<(), Skipped> {
        let Some(p) = self.paragraphs.pop() else {
            return Ok(());
        };
        let text = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return Ok(());
        }
        if self.tables.paragraph(&text) {
            return self.budget.charge(text.len() + 1);
        }
        let style = p
            .style
            .as_deref()
            .and_then(|id| self.styles.get(id))
            .copied()
            .unwrap_or_default();
        let heading = style
            .heading
            .or_else(|| p.outline.filter(|l| *l < 9).map(|l| l + 1));
        if let Some(level) = heading {
            return self.out.heading(self.budget, level, &text);
        }
        match (p.list_level, style.list) {
            (Some(level), numbered) => {
                self.out
                    .item(self.budget, level, numbered.unwrap_or(false), &text)
            }
            (None, Some(numbered)) => self.out.item(self.budget, 0, numbered, &text),
            (None, None) => self.out.block(self.budget, &text),
        }
    }
}

/// `(id, text)` of each real footnote (separators left out), in order.
fn read_footnotes<R: BufRead>(xml: &mut XmlStream<R>) -> Result<Vec<(String, String)>, Skipped> {
    let mut notes = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut in_text = false;
    for node in xml {
        match node? {
            Node::Open(tag) if tag.name == "footnote" => {
                let separator = tag
                    .attr("type")
                    .is_some_and(|t| t.contains("eparator") || t == "continuationNotice");
                current = (!separator)
                    .then(|| tag.attr("id").map(|id| (id.to_string(), String::new())))
                    .flatten();
            }
            Node::Open(tag) if tag.name == "t" => in_text = true,
            Node::Open(tag) if tag.name == "p" => {
                if let Some((_, text)) = current.as_mut()
                    && !text.is_empty()
                {
                    text.push(' ');
                }
            }
            Node::Close(name) if name == "t" => in_text = false,
            Node::Text(t) if in_text => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&t);
                }
            }
            Node::Close(name) if name == "footnote" => {
                if let Some((id, text)) = current.take() {
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !text.is_empty() {
                        notes.push((id, text));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_targets_become_part_names() {
        assert_eq!(
            resolve("word/", "media/image1.png"),
            "word/media/image1.png"
        );
        assert_eq!(resolve("word/", "../media/a.png"), "media/a.png");
        assert_eq!(resolve("word/", "/word/media/b.png"), "word/media/b.png");
        assert_eq!(resolve("word/", "../../../etc/passwd"), "etc/passwd");
    }
}
