//! PowerPoint presentations (`.pptx`): slide by slide in presentation
//! order, each a section with its slide number as the page: the title as a
//! heading, body text, tables, then the speaker notes. Slide numbers,
//! dates and footers (placeholders, not content) are left out. With
//! `[extract.vision]`, each slide's pictures (`a:blip`) are handed back for
//! description, their markers after the slide's text.

use std::collections::HashMap;
use std::io::BufRead;

use super::converted::{Builder, Converted, Markdown, Tables, markdown_table};
use super::figures::{Figures, picture};
use super::package::{Package, resolve};
use super::xml::{Node, XmlStream};
use super::{Limits, Skipped};

// The part walkers are generic over the reader; a closure fixes the part's
// lifetime where passing the fn item (clippy's suggestion) does not compile.
#[allow(clippy::redundant_closure)]
pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let mut package = Package::open(bytes, limits.part_cap())?;
    let order = package
        .walk_xml("ppt/presentation.xml", |xml| slide_ids(xml))?
        .ok_or_else(|| Skipped("not a presentation (no ppt/presentation.xml)".into()))?;
    let rels = relationships(&mut package, "ppt/_rels/presentation.xml.rels")?;
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    builder.title(package.core_title());
    let mut figures = limits.figures.as_ref().map(Figures::new);
    for (index, rid) in order.iter().enumerate() {
        let number = index as u32 + 1;
        let Some(target) = rels.get(rid) else {
            continue;
        };
        let slide_path = resolve("ppt/", target);
        let Some(slide) = package.walk_xml(&slide_path, |xml| read_shapes(xml))? else {
            builder.omit(format!("slide {number}: its part {slide_path} is missing"));
            continue;
        };
        let (dir, file) = slide_path.rsplit_once('/').unwrap_or(("", &slide_path));
        let slide_rels = relationships(&mut package, &format!("{dir}/_rels/{file}.rels"))?;
        let notes = match slide_rels.get_by_type("notesSlide") {
            Some(target) => package.walk_xml(&resolve(&format!("{dir}/"), &target), |xml| {
                read_shapes(xml)
            })?,
            None => None,
        };
        let mut markdown = Markdown::default();
        let budget = builder.budget();
        if let Some(title) = &slide.title {
            markdown.heading(budget, 1, title)?;
        }
        write_blocks(&mut markdown, budget, &slide.blocks)?;
        if let Some(figures) = figures.as_mut() {
            for id in &slide.pictures {
                let marker = slide_rels.get(id).and_then(|target| {
                    let part = resolve(&format!("{dir}/"), target);
                    picture(&mut package, &part, figures, Some(number))
                });
                if let Some(marker) = marker {
                    markdown.block(budget, &marker)?;
                }
            }
        }
        if let Some(notes) = notes {
            let text = notes
                .blocks
                .iter()
                .filter_map(|block| match block {
                    Block::Paragraph { text, .. } => Some(text.as_str()),
                    Block::Table(_) => None,
                })
                .collect::<Vec<_>>()
                .join(" ");
            if !text.trim().is_empty() {
                markdown.block(budget, &format!("Speaker notes: {text}"))?;
            }
        }
        builder.markdown(markdown, Some((number, number)));
    }
    if let Some(figures) = figures {
        figures.finish(&mut builder);
    }
    builder.finish()
}

pub(super) fn write_blocks(
    markdown: &mut Markdown,
    budget: &mut super::converted::Budget,
    blocks: &[Block],
) -> Result<(), Skipped> {
    for block in blocks {
        match block {
            Block::Paragraph { level: 0, text } => markdown.block(budget, text)?,
            Block::Paragraph { level, text } => markdown.item(budget, level - 1, false, text)?,
            Block::Table(rows) => markdown.block(budget, &markdown_table(rows))?,
        }
    }
    Ok(())
}

/// Relationship id → target, of one `.rels` part (empty when missing).
struct Relationships {
    by_id: HashMap<String, String>,
    by_type: Vec<(String, String)>,
}

impl Relationships {
    fn get(&self, id: &str) -> Option<&String> {
        self.by_id.get(id)
    }

    /// The target of the first relationship whose type ends with `/{kind}`.
    fn get_by_type(&self, kind: &str) -> Option<String> {
        self.by_type
            .iter()
            .find(|(t, _)| t.rsplit('/').next() == Some(kind))
            .map(|(_, target)| target.clone())
    }
}

fn relationships(package: &mut Package<'_>, path: &str) -> Result<Relationships, Skipped> {
    let mut rels = Relationships {
        by_id: HashMap::new(),
        by_type: Vec::new(),
    };
    package.walk_xml(path, |xml| {
        for node in xml {
            if let Node::Open(tag) = node?
                && tag.name == "Relationship"
                && let (Some(id), Some(target)) = (tag.attr("Id"), tag.attr("Target"))
            {
                rels.by_id.insert(id.to_string(), target.to_string());
                rels.by_type.push((
                    tag.attr("Type").unwrap_or_default().to_string(),
                    target.to_string(),
                ));
            }
        }
        Ok(())
    })?;
    Ok(rels)
}

/// Slide relationship ids in presentation order.
fn slide_ids<R: BufRead>(xml: &mut XmlStream<R>) -> Result<Vec<String>, Skipped> {
    let mut ids = Vec::new();
    for node in xml {
        if let Node::Open(tag) = node?
            && tag.name == "sldId"
            && let Some(rid) = tag.attr("r:id")
        {
            ids.push(rid.to_string());
        }
    }
    Ok(ids)
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Block {
    /// `level` 0 is a paragraph, 1… a list item nested `level - 1` deep.
    Paragraph {
        level: u32,
        text: String,
    },
    Table(Vec<Vec<String>>),
}

#[derive(Debug, Default)]
struct Shapes {
    title: Option<String>,
    blocks: Vec<Block>,
    /// Pictures' relationship ids (`a:blip r:embed`), in drawing order.
    pictures: Vec<String>,
}

/// Placeholders whose text is page furniture, not content.
const FURNITURE: &[&str] = &["sldNum", "dt", "ftr", "hdr", "sldImg"];

/// The text of a slide's (or notes page's) shapes, in drawing order.
fn read_shapes<R: BufRead>(xml: &mut XmlStream<R>) -> Result<Shapes, Skipped> {
    let mut shapes = Shapes::default();
    // Per shape: what its placeholder says it is.
    let mut placeholder: Option<String> = None;
    let mut shape_blocks: Vec<Block> = Vec::new();
    let mut paragraph: Option<(u32, String)> = None;
    let mut tables = Tables::default();
    let mut in_text = false;
    for node in xml {
        match node? {
            Node::Open(tag) => match tag.name.as_str() {
                "sp" | "graphicFrame" => {
                    placeholder = None;
                    shape_blocks.clear();
                }
                "ph" => placeholder = Some(tag.attr("type").unwrap_or("body").to_string()),
                "p" => {
                    paragraph = Some((0, String::new()));
                }
                "pPr" => {
                    if let Some((level, _)) = paragraph.as_mut() {
                        *level = tag.attr("lvl").and_then(|l| l.parse().ok()).unwrap_or(0);
                    }
                }
                "t" => in_text = true,
                "br" => {
                    if let Some((_, text)) = paragraph.as_mut() {
                        text.push(' ');
                    }
                }
                "tbl" => tables.open(),
                "tr" => tables.start_row(),
                "tc" => tables.start_cell(),
                "blip" => {
                    if let Some(id) = tag.attr("r:embed") {
                        shapes.pictures.push(id.to_string());
                    }
                }
                _ => {}
            },
            Node::Text(t) if in_text => {
                if let Some((_, text)) = paragraph.as_mut() {
                    text.push_str(&t);
                }
            }
            Node::Text(_) => {}
            Node::Close(name) => match name.as_str() {
                "t" => in_text = false,
                "p" => {
                    let Some((level, text)) = paragraph.take() else {
                        continue;
                    };
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    if text.is_empty() {
                        continue;
                    }
                    if !tables.paragraph(&text) {
                        shape_blocks.push(Block::Paragraph { level, text });
                    }
                }
                "tc" => tables.end_cell(),
                "tr" => tables.end_row(),
                "tbl" => {
                    if let Some(rows) = tables.close() {
                        shape_blocks.push(Block::Table(rows));
                    }
                }
                "sp" | "graphicFrame" => {
                    let blocks = std::mem::take(&mut shape_blocks);
                    match placeholder.take().as_deref() {
                        Some(kind) if FURNITURE.contains(&kind) => {}
                        Some("title" | "ctrTitle") if shapes.title.is_none() => {
                            let title = blocks
                                .iter()
                                .filter_map(|b| match b {
                                    Block::Paragraph { text, .. } => Some(text.as_str()),
                                    Block::Table(_) => None,
                                })
                                .collect::<Vec<_>>()
                                .join(" ");
                            shapes.title = Some(title).filter(|t| !t.is_empty());
                        }
                        _ => shapes.blocks.extend(blocks),
                    }
                }
                _ => {}
            },
        }
    }
    Ok(shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_against_their_folder() {
        assert_eq!(
            resolve("ppt/", "slides/slide1.xml"),
            "ppt/slides/slide1.xml"
        );
        assert_eq!(
            resolve("ppt/slides/", "../notesSlides/notesSlide1.xml"),
            "ppt/notesSlides/notesSlide1.xml"
        );
        assert_eq!(resolve("ppt/", "/ppt/slides/s.xml"), "ppt/slides/s.xml");
        assert_eq!(resolve("a/", "../../../x"), "x");
    }
}
