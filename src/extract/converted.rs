//! What a document converter produces: markdown in sections that remember
//! where they came from (pages, sheets), ready for the chunker.
//!
//! Architecture invariant: this is the whole protocol between the converter
//! child process and the daemon ([`super::isolate`]): a `Converted` goes out
//! as JSON on the child's stdout and nothing else crosses.

use serde::{Deserialize, Serialize};

use super::Skipped;

/// A converted document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Converted {
    /// The MIME type the converter read the bytes as (`content_type`
    /// chunk metadata).
    pub content_type: String,
    /// The title the file's own properties name (`document_title`).
    pub title: Option<String>,
    /// In document order.
    pub sections: Vec<Section>,
    /// Parts of the document left out, with why (`page 3: no text layer`).
    pub omitted: Vec<String>,
    /// Pages whose text came from OCR (1-based, ascending): their chunks
    /// carry `ocr = true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ocr_pages: Vec<u32>,
    /// Pictures to describe (`[extract.vision]` only), in marker order:
    /// figure `i` stands in the markdown as [`super::figures::marker`]`(i)`
    /// until the daemon replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<Figure>,
}

/// A picture of the document, as the vision model is sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// The page it is on (paged documents).
    pub page: Option<u32>,
    /// The picture as PNG, base64 (what a data URL holds).
    pub png: String,
}

impl Converted {
    /// Whether any of pages `first..=last` was read by OCR.
    pub fn ocr_within(&self, (first, last): (u32, u32)) -> bool {
        self.ocr_pages
            .iter()
            .any(|page| (first..=last).contains(page))
    }
}

/// A run of the document's markdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Section {
    /// Markdown; `pages` (1-based, inclusive) for paged documents: a page or
    /// slide, or two pages when a paragraph flows across a page break.
    Text {
        markdown: String,
        pages: Option<(u32, u32)>,
    },
    /// A table whose header is repeated in every chunk and whose rows are
    /// never split: a spreadsheet's sheet, a CSV file.
    Table {
        sheet: Option<String>,
        /// The header row and the separator row, as markdown.
        header: String,
        /// One markdown table row each.
        rows: Vec<String>,
    },
}

/// Output bound: converters charge every byte of text they keep, and stop
/// with a reason once `max_extracted_bytes` is spent (a small zip that
/// inflates to gigabytes of text ends here, not in the embedder).
#[derive(Debug, Clone)]
pub struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget { left: limit, limit }
    }

    pub fn charge(&mut self, bytes: usize) -> Result<(), Skipped> {
        self.left = self.left.checked_sub(bytes).ok_or_else(|| {
            Skipped(format!(
                "the extracted text exceeds max_extracted_bytes ({} bytes)",
                self.limit
            ))
        })?;
        Ok(())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Builds a document's sections, charging the budget as it goes.
#[derive(Debug)]
pub struct Builder {
    converted: Converted,
    budget: Budget,
}

impl Builder {
    pub fn new(content_type: &str, max_extracted_bytes: usize) -> Self {
        Builder {
            converted: Converted {
                content_type: content_type.to_string(),
                ..Converted::default()
            },
            budget: Budget::new(max_extracted_bytes),
        }
    }

    pub fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }

    pub fn title(&mut self, title: Option<String>) {
        self.converted.title = title
            .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
            // Tools stamp placeholders (reportlab: "untitled").
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("untitled"))
            .map(|t| truncate_chars(&t, 512));
    }

    /// Adds markdown (blank or whitespace-only text is dropped).
    pub fn text(&mut self, markdown: String, pages: Option<(u32, u32)>) -> Result<(), Skipped> {
        let markdown = markdown.trim_end().to_string();
        if markdown.trim().is_empty() {
            return Ok(());
        }
        self.budget.charge(markdown.len())?;
        self.converted
            .sections
            .push(Section::Text { markdown, pages });
        Ok(())
    }

    /// Adds a table from its cells: the first row is the header. Trailing
    /// empty columns and empty rows are dropped; an empty table adds nothing.
    /// The caller charged the cells as it read them (a cell's bytes and
    /// three for its `| ` ` |` frame), so a huge sheet stops while read.
    pub fn table(&mut self, sheet: Option<String>, rows: Vec<Vec<String>>) -> Result<(), Skipped> {
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .filter(|row| row.iter().any(|cell| !cell.trim().is_empty()))
            .collect();
        let Some(width) = rows
            .iter()
            .map(|row| {
                row.iter()
                    .rposition(|cell| !cell.trim().is_empty())
                    .map_or(0, |last| last + 1)
            })
            .max()
            .filter(|width| *width > 0)
        else {
            return Ok(());
        };
        let mut rendered = rows.iter().map(|row| table_row(row, width));
        let header = rendered.next().expect("at least one non-empty row");
        let header = format!("{header}\n{}", separator_row(width));
        let body: Vec<String> = rendered.collect();
        self.converted.sections.push(Section::Table {
            sheet,
            header,
            rows: body,
        });
        Ok(())
    }

    /// Adds markdown written (and charged) by a [`Markdown`] writer.
    pub fn markdown(&mut self, markdown: Markdown, pages: Option<(u32, u32)>) {
        let markdown = markdown.text.trim_end().to_string();
        if !markdown.trim().is_empty() {
            self.converted
                .sections
                .push(Section::Text { markdown, pages });
        }
    }

    /// Adds the text OCR read from page `page`, in page order among the
    /// sections already built (which may be of later pages).
    pub fn ocr_page(&mut self, page: u32, markdown: String) -> Result<(), Skipped> {
        let markdown = markdown.trim().to_string();
        if markdown.is_empty() {
            return Ok(());
        }
        self.budget.charge(markdown.len())?;
        let sections = &mut self.converted.sections;
        let at = sections
            .iter()
            .position(|section| {
                matches!(section, Section::Text { pages: Some((first, _)), .. } if *first > page)
            })
            .unwrap_or(sections.len());
        sections.insert(
            at,
            Section::Text {
                markdown,
                pages: Some((page, page)),
            },
        );
        let pages = &mut self.converted.ocr_pages;
        if let Err(at) = pages.binary_search(&page) {
            pages.insert(at, page);
        }
        Ok(())
    }

    /// The document's pictures to describe ([`super::figures`]).
    pub fn figures(&mut self, figures: Vec<Figure>) {
        self.converted.figures = figures;
    }

    /// Takes back an omission noted earlier (a page OCR then read).
    pub fn unomit(&mut self, what: &str) {
        self.converted.omitted.retain(|omitted| omitted != what);
    }

    pub fn omit(&mut self, what: String) {
        if self.converted.omitted.len() < 100 {
            self.converted.omitted.push(what);
        }
    }

    /// The document, or why there is nothing to index in it.
    pub fn finish(self) -> Result<Converted, Skipped> {
        if self.converted.sections.is_empty() {
            let why = match self.converted.omitted.first() {
                Some(first) => format!("no text to index ({first})"),
                None => "no text to index".to_string(),
            };
            return Err(Skipped(why));
        }
        Ok(self.converted)
    }
}

/// Writes markdown block by block, charging each to the budget: blocks are
/// separated by a blank line, consecutive list items by a line break.
#[derive(Debug, Default)]
pub struct Markdown {
    text: String,
    in_list: bool,
}

impl Markdown {
    /// A paragraph, heading or table (trimmed; empty ones are dropped).
    pub fn block(&mut self, budget: &mut Budget, block: &str) -> Result<(), Skipped> {
        let block = block.trim();
        if block.is_empty() {
            return Ok(());
        }
        self.separate(budget, "\n\n")?;
        self.in_list = false;
        self.push(budget, block)
    }

    /// `#` × `level` then the text.
    pub fn heading(&mut self, budget: &mut Budget, level: u8, text: &str) -> Result<(), Skipped> {
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return Ok(());
        }
        let hashes = "#".repeat(level.clamp(1, 6) as usize);
        self.block(budget, &format!("{hashes} {text}"))
    }

    /// A list item at nesting `level` (0 = top).
    pub fn item(
        &mut self,
        budget: &mut Budget,
        level: u32,
        numbered: bool,
        text: &str,
    ) -> Result<(), Skipped> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        self.separate(budget, if self.in_list { "\n" } else { "\n\n" })?;
        self.in_list = true;
        let indent = "  ".repeat(level.min(8) as usize);
        let marker = if numbered { "1." } else { "-" };
        self.push(budget, &format!("{indent}{marker} {text}"))
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces a placeholder written earlier (a picture's, once it is
    /// known whether it will be described); the budget was charged for
    /// the placeholder.
    pub fn replace(&mut self, placeholder: &str, with: &str) {
        self.text = self.text.replace(placeholder, with);
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn separate(&mut self, budget: &mut Budget, separator: &str) -> Result<(), Skipped> {
        if self.text.is_empty() {
            return Ok(());
        }
        self.push(budget, separator)
    }

    fn push(&mut self, budget: &mut Budget, text: &str) -> Result<(), Skipped> {
        budget.charge(text.len())?;
        self.text.push_str(text);
        Ok(())
    }
}

/// Tables read from office XML (`w:tbl`, `table:table`, `a:tbl`), innermost
/// last: a cell gathers its paragraphs' text; a table nested in a cell
/// joins that cell as text, row by row.
#[derive(Debug, Default)]
pub struct Tables {
    stack: Vec<TableInProgress>,
}

#[derive(Debug, Default)]
struct TableInProgress {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
}

impl Tables {
    pub fn open(&mut self) {
        self.stack.push(TableInProgress::default());
    }

    pub fn start_row(&mut self) {
        if let Some(table) = self.stack.last_mut() {
            table.row.clear();
        }
    }

    pub fn start_cell(&mut self) {
        if let Some(table) = self.stack.last_mut() {
            table.cell.clear();
        }
    }

    pub fn end_cell(&mut self) {
        if let Some(table) = self.stack.last_mut() {
            let cell = std::mem::take(&mut table.cell);
            table.row.push(cell);
        }
    }

    pub fn end_row(&mut self) {
        if let Some(table) = self.stack.last_mut() {
            let row = std::mem::take(&mut table.row);
            table.rows.push(row);
        }
    }

    /// Adds a paragraph's text to the cell being read; `false` (nothing
    /// done) outside tables. The caller charges the text.
    pub fn paragraph(&mut self, text: &str) -> bool {
        let Some(table) = self.stack.last_mut() else {
            return false;
        };
        if !table.cell.is_empty() {
            table.cell.push(' ');
        }
        table.cell.push_str(text);
        true
    }

    /// Ends the innermost table: its rows when it was the outermost, else
    /// `None` (its text went into the enclosing cell).
    pub fn close(&mut self) -> Option<Vec<Vec<String>>> {
        let table = self.stack.pop()?;
        match self.stack.last_mut() {
            Some(outer) => {
                let flat = table
                    .rows
                    .iter()
                    .map(|row| row.join(" "))
                    .collect::<Vec<_>>()
                    .join("; ");
                if !outer.cell.is_empty() {
                    outer.cell.push(' ');
                }
                outer.cell.push_str(&flat);
                None
            }
            None => Some(table.rows),
        }
    }
}

/// `| a | b |` padded to `width` cells; pipes are escaped and line breaks
/// inside a cell become spaces, so one row stays one line.
pub fn table_row(cells: &[String], width: usize) -> String {
    let mut row = String::from("|");
    for index in 0..width {
        let cell = cells.get(index).map_or("", String::as_str);
        row.push(' ');
        row.push_str(&table_cell(cell));
        row.push_str(" |");
    }
    row
}

fn table_cell(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    for word in cell.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.replace('|', "\\|"));
    }
    out
}

pub fn separator_row(width: usize) -> String {
    let mut row = String::from("|");
    for _ in 0..width {
        row.push_str(" --- |");
    }
    row
}

/// A whole markdown table (first row the header), for tables inside text.
pub fn markdown_table(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    for (index, row) in rows.iter().enumerate() {
        out.push_str(&table_row(row, width));
        out.push('\n');
        if index == 0 {
            out.push_str(&separator_row(width));
            out.push('\n');
        }
    }
    out
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(row: &[&str]) -> Vec<String> {
        row.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn tables_escape_pipes_and_keep_rows_on_one_line() {
        let mut builder = Builder::new("text/csv", 1 << 20);
        builder
            .table(
                Some("Q1".into()),
                vec![
                    cells(&["name", "note", ""]),
                    cells(&["", "", ""]),
                    cells(&["a|b", "two\nlines", ""]),
                ],
            )
            .unwrap();
        let converted = builder.finish().unwrap();
        let Section::Table {
            sheet,
            header,
            rows,
        } = &converted.sections[0]
        else {
            panic!("not a table: {converted:?}");
        };
        assert_eq!(sheet.as_deref(), Some("Q1"));
        assert_eq!(header, "| name | note |\n| --- | --- |");
        assert_eq!(rows, &vec!["| a\\|b | two lines |".to_string()]);
    }

    #[test]
    fn the_budget_stops_a_document_that_grows_too_large() {
        let mut builder = Builder::new("text/plain", 10);
        builder.text("12345".into(), None).unwrap();
        let err = builder.text("123456".into(), None).unwrap_err();
        assert!(err.0.contains("max_extracted_bytes"), "{err:?}");
    }

    #[test]
    fn ocr_pages_join_in_page_order_and_are_marked() {
        let mut builder = Builder::new("application/pdf", 1 << 20);
        builder.text("one".into(), Some((1, 1))).unwrap();
        builder.text("three".into(), Some((3, 3))).unwrap();
        builder.omit("page 2: no text layer".into());
        builder.ocr_page(2, "two\n".into()).unwrap();
        builder.unomit("page 2: no text layer");
        builder.ocr_page(4, "four".into()).unwrap();
        let converted = builder.finish().unwrap();
        let order: Vec<_> = converted
            .sections
            .iter()
            .map(|s| match s {
                Section::Text { markdown, pages } => (markdown.as_str(), *pages),
                Section::Table { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("one", Some((1, 1))),
                ("two", Some((2, 2))),
                ("three", Some((3, 3))),
                ("four", Some((4, 4)))
            ]
        );
        assert_eq!(converted.ocr_pages, vec![2, 4]);
        assert!(converted.omitted.is_empty());
        assert!(converted.ocr_within((1, 2)) && !converted.ocr_within((3, 3)));
    }

    #[test]
    fn an_empty_document_says_why() {
        let mut builder = Builder::new("application/pdf", 100);
        builder.omit("page 1: no text layer (OCR not enabled)".into());
        let err = builder.finish().unwrap_err();
        assert_eq!(
            err.0,
            "no text to index (page 1: no text layer (OCR not enabled))"
        );
    }
}
