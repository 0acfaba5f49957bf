//! OpenDocument text (`.odt`) and presentations (`.odp`), from
//! `content.xml`: headings by outline level, paragraphs, lists, tables and
//! footnotes; slides one section each with title, body and speaker notes.
//! Tracked changes and comments (annotations) are left out.

use std::io::BufRead;

use super::converted::{Builder, Converted, Markdown, Tables, markdown_table};
use super::package::Package;
use super::xml::{Node, XmlStream, first_text};
use super::{Limits, Skipped};

pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let mut package = Package::open(bytes, limits.part_cap())?;
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    let title = package
        .walk_xml("meta.xml", |xml| Ok(first_text(xml, "title")))?
        .flatten();
    builder.title(title);
    let walked = package.walk_xml("content.xml", |xml| Walker::new(&mut builder).walk(xml))?;
    if walked.is_none() {
        return Err(Skipped("not an OpenDocument file (no content.xml)".into()));
    }
    builder.finish()
}

/// A paragraph or heading being read.
#[derive(Debug, Default)]
struct Paragraph {
    text: String,
    heading: Option<u8>,
    /// Inside a presentation's title frame.
    title: bool,
}

struct Walker<'a> {
    builder: &'a mut Builder,
    out: Markdown,
    notes_out: String,
    paragraphs: Vec<Paragraph>,
    tables: Tables,
    list_depth: u32,
    /// Depth inside parts that are not the document's text.
    skip: u32,
    /// Footnote being read: its citation and text.
    note: Option<(String, String)>,
    in_citation: bool,
    footnotes: Vec<(String, String)>,
    /// Presentations: the slide number, its frame's class.
    slide: u32,
    frame_class: Option<String>,
    in_notes: bool,
}

/// Elements whose text is not the document's: tracked deletions and
/// changes, comments, the slide thumbnails of notes pages.
const SKIPPED: &[&str] = &["tracked-changes", "annotation", "page-thumbnail"];

impl<'a> Walker<'a> {
    fn new(builder: &'a mut Builder) -> Self {
        Walker {
            builder,
            out: Markdown::default(),
            notes_out: String::new(),
            paragraphs: Vec::new(),
            tables: Tables::default(),
            list_depth: 0,
            skip: 0,
            note: None,
            in_citation: false,
            footnotes: Vec::new(),
            slide: 0,
            frame_class: None,
            in_notes: false,
        }
    }

    fn walk<R: BufRead>(mut self, xml: &mut XmlStream<R>) -> Result<(), Skipped> {
        for node in xml {
            let node = node?;
            if self.skip > 0 {
                match node {
                    Node::Open(tag) if SKIPPED.contains(&tag.name.as_str()) => self.skip += 1,
                    Node::Close(name) if SKIPPED.contains(&name.as_str()) => self.skip -= 1,
                    _ => {}
                }
                continue;
            }
            match node {
                Node::Open(tag) => match tag.name.as_str() {
                    name if SKIPPED.contains(&name) => self.skip += 1,
                    "h" => self.paragraphs.push(Paragraph {
                        heading: Some(
                            tag.attr("outline-level")
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(1),
                        ),
                        ..Paragraph::default()
                    }),
                    "p" => self.paragraphs.push(Paragraph {
                        title: self.frame_class.as_deref() == Some("title"),
                        ..Paragraph::default()
                    }),
                    "s" => {
                        let count = tag.attr("c").and_then(|c| c.parse().ok()).unwrap_or(1);
                        self.push_text(&" ".repeat(count.min(8)));
                    }
                    "tab" | "line-break" => self.push_text(" "),
                    "list" => self.list_depth += 1,
                    "note" => self.note = Some((String::new(), String::new())),
                    "note-citation" => self.in_citation = true,
                    "table" => self.tables.open(),
                    "table-row" => self.tables.start_row(),
                    "table-cell" => self.tables.start_cell(),
                    "page" => {
                        self.slide += 1;
                        self.out = Markdown::default();
                        self.notes_out.clear();
                    }
                    "frame" => self.frame_class = tag.attr("class").map(str::to_string),
                    "notes" => self.in_notes = true,
                    _ => {}
                },
                Node::Text(text) => self.push_text(&text),
                Node::Close(name) => match name.as_str() {
                    "h" | "p" => self.close_paragraph()?,
                    "list" => self.list_depth = self.list_depth.saturating_sub(1),
                    "note-citation" => self.in_citation = false,
                    "note" => {
                        if let Some((citation, text)) = self.note.take() {
                            let text = squeeze(&text);
                            self.builder.budget().charge(text.len() + 8)?;
                            self.footnotes.push((citation.trim().to_string(), text));
                        }
                    }
                    "table-cell" | "covered-table-cell" => self.tables.end_cell(),
                    "table-row" => self.tables.end_row(),
                    "table" => {
                        if let Some(rows) = self.tables.close() {
                            self.out
                                .block(self.builder.budget(), &markdown_table(&rows))?;
                        }
                    }
                    "frame" => self.frame_class = None,
                    "notes" => self.in_notes = false,
                    "page" => self.close_slide()?,
                    _ => {}
                },
            }
        }
        let mut out = std::mem::take(&mut self.out);
        for (citation, text) in std::mem::take(&mut self.footnotes) {
            out.block(self.builder.budget(), &format!("[^{citation}]: {text}"))?;
        }
        self.builder.markdown(out, None);
        Ok(())
    }

    fn push_text(&mut self, text: &str) {
        if self.in_citation {
            if let Some((citation, _)) = self.note.as_mut() {
                citation.push_str(text);
            }
            if let Some(p) = self.paragraphs.last_mut() {
                p.text.push_str(&format!("[^{}]", text.trim()));
            }
            return;
        }
        if let Some((_, note)) = self.note.as_mut() {
            note.push_str(text);
            note.push(' ');
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
        if self.note.is_some() {
            return Ok(()); // its text went to the footnote
        }
        let text = squeeze(&p.text);
        if text.is_empty() {
            return Ok(());
        }
        if self.tables.paragraph(&text) {
            return self.builder.budget().charge(text.len() + 1);
        }
        if self.in_notes {
            self.builder.budget().charge(text.len() + 1)?;
            self.notes_out.push(' ');
            self.notes_out.push_str(&text);
            return Ok(());
        }
        let budget = self.builder.budget();
        if let Some(level) = p.heading {
            self.out.heading(budget, level, &text)
        } else if p.title {
            self.out.heading(budget, 1, &text)
        } else if self.list_depth > 0 {
            self.out.item(budget, self.list_depth - 1, false, &text)
        } else {
            self.out.block(budget, &text)
        }
    }

    fn close_slide(&mut self) -> Result<(), Skipped> {
        let mut out = std::mem::take(&mut self.out);
        let notes = squeeze(&std::mem::take(&mut self.notes_out));
        if !notes.is_empty() {
            out.block(self.builder.budget(), &format!("Speaker notes: {notes}"))?;
        }
        let slide = self.slide;
        self.builder.markdown(out, Some((slide, slide)));
        Ok(())
    }
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
