//! From positioned glyphs to markdown: lines, paragraphs, headings, tables.
//!
//! A PDF has no paragraphs, headings or tables, only glyphs drawn at
//! positions in some font size. This module rebuilds the structure the way
//! a reader sees it: glyphs on one baseline are a line; lines close together
//! in the same size are a paragraph (a word hyphenated at a line's end is
//! joined); a short line set clearly larger than the body text is a
//! heading, its level by how large; consecutive lines cut by wide gaps into
//! the same columns are a table. Lines at the top or bottom of pages that
//! repeat across pages at the same height, the same but for a page number
//! (running headers and footers), and page numbers, are dropped; headings
//! and lines of a kept paragraph never are. A paragraph that runs on from
//! one page to the next is kept whole, as a section of both pages.
//!
//! Pure: glyphs in, sections out, so it is tested without PDFium.

use crate::extract::Skipped;
use crate::extract::converted::{Builder, Markdown, markdown_table};

/// One glyph as the PDF draws it (PDF units, y grows upwards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Glyph {
    pub ch: char,
    pub left: f32,
    pub right: f32,
    pub bottom: f32,
    pub top: f32,
    /// Font size in points, after the text matrix's scaling.
    pub size: f32,
}

/// A page's glyphs in the order the PDF draws them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub number: u32,
    pub glyphs: Vec<Glyph>,
    /// Pictures to describe (`[extract.vision]`): the top of each (PDF
    /// units) and the marker put where it stands, between the blocks
    /// above and below it.
    pub figures: Vec<(f32, String)>,
}

#[derive(Debug, Clone)]
struct Line {
    text: String,
    size: f32,
    top: f32,
    bottom: f32,
    left: f32,
    right: f32,
    /// Runs of text separated by wide gaps, with where each starts.
    cells: Vec<(f32, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Block {
    Heading(u8, String),
    Paragraph(String),
    Table(Vec<Vec<String>>),
    /// A picture's marker ([`crate::extract::figures`]).
    Figure(String),
}

/// Lays out `pages` into `builder`: one text section per page (pages with
/// no text are noted as omitted), plus a two-page section wherever a
/// paragraph runs across a page break.
pub fn lay_out(pages: Vec<Page>, builder: &mut Builder) -> Result<(), Skipped> {
    let mut figures: Vec<Vec<(f32, String)>> = Vec::with_capacity(pages.len());
    let lines: Vec<(u32, Vec<Line>)> = pages
        .into_iter()
        .map(|mut page| {
            // Top of the page first, as lines are.
            page.figures.sort_by(|a, b| b.0.total_cmp(&a.0));
            figures.push(page.figures);
            (page.number, lines_of(&page.glyphs))
        })
        .collect();
    let body = body_size(&lines);
    let heading_sizes = heading_sizes(&lines, body);
    let furniture = Furniture::find(&lines, body);
    let mut laid: Vec<(u32, Vec<Block>)> = Vec::with_capacity(lines.len());
    for (page, (number, page_lines)) in lines.into_iter().enumerate() {
        let kept: Vec<Line> = page_lines
            .into_iter()
            .enumerate()
            .filter(|(index, _)| !furniture.drops(page, *index))
            .map(|(_, line)| line)
            .collect();
        laid.push((
            number,
            blocks_of(&kept, body, &heading_sizes, &figures[page]),
        ));
    }
    let mut carried: Option<(u32, String)> = None;
    let count = laid.len();
    for (index, (number, mut blocks)) in laid.into_iter().enumerate() {
        if blocks.is_empty() && carried.is_none() {
            builder.omit(format!("page {number}: no text layer (OCR not enabled)"));
            continue;
        }
        // A paragraph carried over from the page before joins this page's
        // first paragraph, as a section of both pages.
        if let Some((from, tail)) = carried.take() {
            let mut markdown = Markdown::default();
            match blocks.first() {
                Some(Block::Paragraph(head)) if continues(head) => {
                    let Block::Paragraph(head) = blocks.remove(0) else {
                        unreachable!()
                    };
                    markdown.block(builder.budget(), &join_lines(&tail, &head))?;
                    builder.markdown(markdown, Some((from, number)));
                }
                _ => {
                    markdown.block(builder.budget(), &tail)?;
                    builder.markdown(markdown, Some((from, from)));
                }
            }
        }
        // This page's last paragraph may run on to the next page.
        if index + 1 < count
            && let Some(Block::Paragraph(last)) = blocks.last()
            && runs_on(last)
        {
            let Some(Block::Paragraph(last)) = blocks.pop() else {
                unreachable!()
            };
            carried = Some((number, last));
        }
        let mut markdown = Markdown::default();
        for block in &blocks {
            match block {
                Block::Heading(level, text) => markdown.heading(builder.budget(), *level, text)?,
                Block::Paragraph(text) => markdown.block(builder.budget(), text)?,
                Block::Table(rows) => markdown.block(builder.budget(), &markdown_table(rows))?,
                Block::Figure(marker) => markdown.block(builder.budget(), marker)?,
            }
        }
        builder.markdown(markdown, Some((number, number)));
    }
    if let Some((from, tail)) = carried {
        let mut markdown = Markdown::default();
        markdown.block(builder.budget(), &tail)?;
        builder.markdown(markdown, Some((from, from)));
    }
    Ok(())
}

/// Whether a page's last paragraph stops mid-sentence.
fn runs_on(text: &str) -> bool {
    text.trim_end()
        .chars()
        .last()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, ',' | '-' | '\u{2010}'))
}

/// Whether a page's first paragraph continues a sentence.
fn continues(text: &str) -> bool {
    text.chars().next().is_some_and(char::is_lowercase)
}

/// Glyphs → lines, in drawing order: a glyph whose vertical middle leaves
/// the current line's band, or that jumps back left, starts a new line. A
/// gap wider than a quarter of the font size is a space; wider than 0.8 of
/// it (more than a justified line stretches a space), a new cell.
fn lines_of(glyphs: &[Glyph]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    let mut current: Option<(Line, f32, f32, usize)> = None; // line, last right, size sum, count
    for glyph in glyphs {
        if glyph.ch.is_whitespace() || glyph.ch.is_control() {
            // Spaces (PDFium generates some, with no useful position) only
            // separate words; lines are told apart by position alone.
            if let Some((line, _, _, _)) = current.as_mut()
                && !line.text.ends_with(' ')
                && glyph.ch != '\r'
                && glyph.ch != '\n'
            {
                line.text.push(' ');
                if let Some((_, cell)) = line.cells.last_mut() {
                    cell.push(' ');
                }
            }
            continue;
        }
        let size = if glyph.size > 0.0 {
            glyph.size
        } else {
            (glyph.top - glyph.bottom).abs().max(1.0)
        };
        let middle = (glyph.top + glyph.bottom) / 2.0;
        let starts_new = match &current {
            None => true,
            Some((line, right, _, _)) => {
                let band = (line.bottom - size * 0.3)..(line.top + size * 0.3);
                !band.contains(&middle) || glyph.left < right - size * 2.0
            }
        };
        if starts_new {
            if let Some(done) = current.take() {
                lines.push(finish(done));
            }
            current = Some((
                Line {
                    text: String::new(),
                    size,
                    top: glyph.top,
                    bottom: glyph.bottom,
                    left: glyph.left,
                    right: glyph.right,
                    cells: vec![(glyph.left, String::new())],
                },
                glyph.left,
                0.0,
                0,
            ));
        }
        let (line, right, sum, count) = current.as_mut().expect("started above");
        let gap = glyph.left - *right;
        if gap > size * 0.8 && !line.text.is_empty() {
            line.cells.push((glyph.left, String::new()));
            if !line.text.ends_with(' ') {
                line.text.push(' ');
            }
        } else if gap > size * 0.25 && !line.text.is_empty() && !line.text.ends_with(' ') {
            line.text.push(' ');
            if let Some((_, cell)) = line.cells.last_mut() {
                cell.push(' ');
            }
        }
        line.text.push(glyph.ch);
        if let Some((_, cell)) = line.cells.last_mut() {
            cell.push(glyph.ch);
        }
        line.top = line.top.max(glyph.top);
        line.bottom = line.bottom.min(glyph.bottom);
        line.right = line.right.max(glyph.right);
        *right = glyph.right.max(*right);
        *sum += size;
        *count += 1;
    }
    if let Some(done) = current.take() {
        lines.push(finish(done));
    }
    lines.retain(|line| !line.text.trim().is_empty());
    lines
}

fn finish((mut line, _, sum, count): (Line, f32, f32, usize)) -> Line {
    if count > 0 {
        line.size = sum / count as f32;
    }
    line.text = line.text.trim().to_string();
    for (_, cell) in &mut line.cells {
        *cell = cell.trim().to_string();
    }
    line.cells.retain(|(_, cell)| !cell.is_empty());
    line
}

/// The size most text is set in (by characters, to half a point).
fn body_size(pages: &[(u32, Vec<Line>)]) -> f32 {
    let mut counts: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
    for (_, lines) in pages {
        for line in lines {
            *counts.entry((line.size * 2.0).round() as i32).or_default() +=
                line.text.chars().count();
        }
    }
    counts
        .into_iter()
        .max_by_key(|(size, count)| (*count, -*size))
        .map_or(10.0, |(size, _)| size as f32 / 2.0)
}

/// The sizes headings are set in, largest first (at most four levels).
fn heading_sizes(pages: &[(u32, Vec<Line>)], body: f32) -> Vec<i32> {
    let mut sizes: Vec<i32> = pages
        .iter()
        .flat_map(|(_, lines)| lines)
        .filter(|line| is_heading_like(line, body))
        .map(|line| (line.size * 2.0).round() as i32)
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    sizes.truncate(4);
    sizes
}

fn is_heading_like(line: &Line, body: f32) -> bool {
    line.size >= body * 1.15
        && line.text.chars().count() <= 120
        && line.text.chars().any(char::is_alphabetic)
}

/// Running headers and footers, and page numbers: the lines [`lay_out`]
/// drops.
///
/// A running header or footer is among a page's first two or last two
/// lines, and on at least half the pages (two at least) a line among
/// theirs reads the same but for at most one run of digits (the page
/// number) and sits at the same height. Pages that merely look alike are
/// not enough: a line set larger than the body is a heading ("Chapter 3 of
/// the handbook" may open every page), and a line of a paragraph whose
/// other lines are kept (the same size, a line's pitch away, from the same
/// left edge) is that paragraph's. A page number (`7`, `- 7 -`, `Page 7 of
/// 9`) at a page's edge is furniture, unless it continues a paragraph where
/// no other page has its page number (`… given in listing` / `3.`).
struct Furniture {
    /// Per page, per line: whether it is dropped.
    dropped: Vec<Vec<bool>>,
}

/// A line that may be a running header or footer.
struct Candidate {
    page: usize,
    index: usize,
    middle: f32,
    size: f32,
    /// Its runs of digits, in order.
    runs: Vec<String>,
}

impl Furniture {
    fn find(pages: &[(u32, Vec<Line>)], body: f32) -> Furniture {
        let mut dropped: Vec<Vec<bool>> = pages
            .iter()
            .map(|(_, lines)| vec![false; lines.len()])
            .collect();
        // Page numbers where pages have theirs stay dropped, whatever is near.
        let mut firm = dropped.clone();
        let mut by_shape: std::collections::HashMap<String, Vec<Candidate>> =
            std::collections::HashMap::new();
        let mut page_numbers = Vec::new();
        for (page, (_, lines)) in pages.iter().enumerate() {
            for (index, line) in lines.iter().enumerate() {
                if !at_edge(index, lines.len()) || is_heading_like(line, body) {
                    continue;
                }
                let shape = shape_of(&line.text);
                let candidate = Candidate {
                    page,
                    index,
                    middle: (line.top + line.bottom) / 2.0,
                    size: line.size,
                    runs: digit_runs(&line.text),
                };
                if is_page_number(&shape) {
                    dropped[page][index] = true;
                    // Any page number is alike any other.
                    page_numbers.push(Candidate {
                        runs: Vec::new(),
                        ..candidate
                    });
                } else if lines.len() > 1 {
                    // A page's only line is its content, however often it recurs.
                    by_shape.entry(shape).or_default().push(candidate);
                }
            }
        }
        let needed = (pages.len() / 2).max(2);
        for candidate in recurring(&mut page_numbers, needed) {
            firm[candidate.page][candidate.index] = true;
        }
        for candidates in by_shape.values_mut() {
            for candidate in recurring(candidates, needed) {
                dropped[candidate.page][candidate.index] = true;
            }
        }
        // A dropped line that continues a kept paragraph is kept with it
        // (and may keep the next one).
        for (((_, lines), dropped), firm) in pages.iter().zip(&mut dropped).zip(&firm) {
            if !dropped.contains(&true) {
                continue;
            }
            let leading = leading_of(lines);
            loop {
                let kept: Vec<usize> = (0..lines.len())
                    .filter(|&line| {
                        dropped[line]
                            && !firm[line]
                            && (0..lines.len()).any(|other| {
                                !dropped[other]
                                    && one_paragraph(&lines[line], &lines[other], &leading)
                            })
                    })
                    .collect();
                if kept.is_empty() {
                    break;
                }
                for line in kept {
                    dropped[line] = false;
                }
            }
        }
        Furniture { dropped }
    }

    /// Whether line `index` of the `page`th page (from 0) is furniture.
    fn drops(&self, page: usize, index: usize) -> bool {
        self.dropped[page][index]
    }
}

/// Of `candidates` (lines of one shape), those that recur: at the same
/// height (each within half a line of the next) and, but for at most one
/// run of digits, reading the same, on at least `needed` pages.
fn recurring(candidates: &mut [Candidate], needed: usize) -> Vec<&Candidate> {
    candidates.sort_by(|a, b| a.middle.total_cmp(&b.middle));
    let mut found = Vec::new();
    let mut start = 0;
    while start < candidates.len() {
        let mut end = start + 1;
        while end < candidates.len()
            && candidates[end].middle - candidates[end - 1].middle
                <= candidates[end].size.max(candidates[end - 1].size) * 0.5
        {
            end += 1;
        }
        found.extend(alike_on_enough_pages(&candidates[start..end], needed));
        start = end;
    }
    found
}

/// Of `alike` (lines of one shape at one height), those that, but for at
/// most one run of digits, read as on at least `needed` pages.
fn alike_on_enough_pages(alike: &[Candidate], needed: usize) -> Vec<&Candidate> {
    // Two lines differ in at most one run when they agree once some one
    // run is left out: count the pages per run left out and what remains.
    let keys = alike.first().map_or(1, |c| c.runs.len().max(1));
    let key = |candidate: &Candidate, left_out: usize| -> (usize, Vec<String>) {
        let rest = candidate
            .runs
            .iter()
            .enumerate()
            .filter(|(run, _)| *run != left_out)
            .map(|(_, digits)| digits.clone())
            .collect();
        (left_out, rest)
    };
    let mut pages: std::collections::HashMap<
        (usize, Vec<String>),
        std::collections::HashSet<usize>,
    > = std::collections::HashMap::new();
    for candidate in alike {
        for left_out in 0..keys {
            pages
                .entry(key(candidate, left_out))
                .or_default()
                .insert(candidate.page);
        }
    }
    alike
        .iter()
        .filter(|candidate| {
            (0..keys).any(|left_out| pages[&key(candidate, left_out)].len() >= needed)
        })
        .collect()
}

/// Whether two lines of a page are consecutive lines of one paragraph:
/// the same size, one a line's pitch (at most) below the other, starting
/// at the same left edge (give or take a first line's indent). A page
/// number set flush right under the last line is not its paragraph's.
fn one_paragraph(a: &Line, b: &Line, leading: &impl Fn(f32) -> f32) -> bool {
    let (above, below) = if a.top >= b.top { (a, b) } else { (b, a) };
    let pitch = above.top - below.top;
    (above.size - below.size).abs() <= above.size.max(1.0) * 0.1
        && pitch > 0.0
        && pitch <= leading(above.size) * 1.25
        && (above.left - below.left).abs() <= above.size.max(1.0) * 3.0
}

/// The runs of digits in `text`, in order.
fn digit_runs(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(str::to_string)
        .collect()
}

/// Among a page's first two or last two lines.
fn at_edge(index: usize, count: usize) -> bool {
    index < 2 || index + 2 >= count
}

/// Text with every run of digits as `#`, lower-cased, spaces squeezed.
fn shape_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_digits = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.extend(c.to_lowercase());
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `#`, `- # -`, `page #`, `# of #`, `page # of #`, `#/#`.
fn is_page_number(shape: &str) -> bool {
    let bare: String = shape
        .chars()
        .filter(|c| !matches!(c, '-' | '–' | '—' | '|' | '[' | ']' | '(' | ')' | '.'))
        .collect();
    let bare = bare.trim();
    let bare = bare.strip_prefix("page").map_or(bare, str::trim);
    matches!(bare, "#" | "# of #" | "#/#" | "# / #")
}

/// Lines → blocks: headings, tables (two or more consecutive lines cut
/// into the same columns), paragraphs (lines close together in one size);
/// each of `figures` (top first) before the first line below its top.
fn blocks_of(
    lines: &[Line],
    body: f32,
    heading_sizes: &[i32],
    figures: &[(f32, String)],
) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut figures = figures.iter().peekable();
    let mut paragraph: Option<(String, f32, f32)> = None; // text, size, top
    let leading = leading_of(lines);
    let mut index = 0;
    // The page's text width: a line that fills most of it may wrap.
    let width = lines.iter().map(|l| l.right).fold(f32::MIN, f32::max)
        - lines.iter().map(|l| l.left).fold(f32::MAX, f32::min);
    let flush = |paragraph: &mut Option<(String, f32, f32)>, blocks: &mut Vec<Block>| {
        if let Some((text, _, _)) = paragraph.take() {
            blocks.push(Block::Paragraph(text));
        }
    };
    while index < lines.len() {
        let line = &lines[index];
        while let Some((_, marker)) = figures.next_if(|(top, _)| *top > line.top) {
            flush(&mut paragraph, &mut blocks);
            blocks.push(Block::Figure(marker.clone()));
        }
        let table_end = table_run(lines, index);
        if table_end > index + 1 {
            flush(&mut paragraph, &mut blocks);
            let columns = &lines[index].cells;
            let rows = lines[index..table_end]
                .iter()
                .filter_map(|l| table_row(columns, l))
                .collect();
            blocks.push(Block::Table(rows));
            index = table_end;
            continue;
        }
        if is_heading_like(line, body) {
            flush(&mut paragraph, &mut blocks);
            let size = (line.size * 2.0).round() as i32;
            let level = heading_sizes
                .iter()
                .position(|s| *s == size)
                .map_or(heading_sizes.len() + 1, |p| p + 1);
            // A heading set on two lines is one heading: the line before
            // it is a heading of its level that filled the width, close above.
            let above = index.checked_sub(1).map(|i| &lines[i]);
            if let Some(Block::Heading(previous, text)) = blocks.last_mut()
                && *previous == level as u8
                && let Some(above) = above
                && above.right - above.left >= width * 0.7
                && (above.bottom - line.top).abs() < line.size * 0.8
            {
                text.push(' ');
                text.push_str(&line.text);
            } else {
                blocks.push(Block::Heading(level.min(6) as u8, line.text.clone()));
            }
            index += 1;
            continue;
        }
        match paragraph.as_mut() {
            Some((text, size, top))
                if (*size - line.size).abs() <= size.max(1.0) * 0.1
                    && *top - line.top > 0.0
                    && *top - line.top <= leading(*size) * 1.25 =>
            {
                *text = join_lines(text, &line.text);
                *top = line.top;
            }
            _ => {
                flush(&mut paragraph, &mut blocks);
                paragraph = Some((line.text.clone(), line.size, line.top));
            }
        }
        index += 1;
    }
    flush(&mut paragraph, &mut blocks);
    blocks.extend(figures.map(|(_, marker)| Block::Figure(marker.clone())));
    blocks
}

/// The line pitch (top to top) of each text size on the page: the
/// smallest distance between consecutive lines of that size seen twice.
/// A larger step
/// between two lines is a paragraph break; pages that give no evidence
/// fall back to 1.3 × the size (between common leading and a blank line).
fn leading_of(lines: &[Line]) -> impl Fn(f32) -> f32 + use<> {
    let mut pitches: std::collections::HashMap<(i32, i32), usize> =
        std::collections::HashMap::new();
    for pair in lines.windows(2) {
        let (above, below) = (&pair[0], &pair[1]);
        let pitch = above.top - below.top;
        if (above.size - below.size).abs() <= above.size.max(1.0) * 0.1
            && pitch > 0.0
            && pitch < above.size * 3.0
        {
            let key = (
                (above.size * 2.0).round() as i32,
                (pitch * 2.0).round() as i32,
            );
            *pitches.entry(key).or_default() += 1;
        }
    }
    // The smallest pitch seen twice: lines inside a paragraph are closer
    // than paragraphs, table rows or list items, however many of those.
    let mut best: std::collections::HashMap<i32, i32> = std::collections::HashMap::new();
    for ((size, pitch), count) in pitches {
        if count >= 2 {
            let entry = best.entry(size).or_insert(pitch);
            *entry = (*entry).min(pitch);
        }
    }
    move |size: f32| {
        best.get(&((size * 2.0).round() as i32))
            .map_or(size * 1.3, |pitch| *pitch as f32 / 2.0)
    }
}

/// Where the table starting at `start` ends (exclusive); `start + 1` or
/// less when no table starts there. The first line's cells (at least two)
/// set the columns; the lines after it that have two or more cells, each
/// starting where a column does (within a font size), are its rows.
fn table_run(lines: &[Line], start: usize) -> usize {
    let first = &lines[start];
    if first.cells.len() < 2 {
        return start;
    }
    let mut end = start + 1;
    while end < lines.len()
        && lines[end].cells.len() >= 2
        && table_row(&first.cells, &lines[end]).is_some()
    {
        end += 1;
    }
    end
}

/// `line`'s cells placed in the columns starting at `columns`' positions
/// (a cell that spans two columns lands in the first), or `None` when a
/// cell starts where no column does.
fn table_row(columns: &[(f32, String)], line: &Line) -> Option<Vec<String>> {
    let mut row = vec![String::new(); columns.len()];
    let mut next = 0;
    for (left, cell) in &line.cells {
        let column =
            (next..columns.len()).find(|c| (columns[*c].0 - left).abs() <= line.size.max(1.0))?;
        row[column] = cell.clone();
        next = column + 1;
    }
    Some(row)
}

/// Joins a line to the text before it: a word hyphenated at the line's end
/// is made whole again (`light-` + `house` → `lighthouse`).
fn join_lines(before: &str, line: &str) -> String {
    let mut out = before.trim_end().to_string();
    let hyphenated = out.ends_with('-')
        && out.chars().rev().nth(1).is_some_and(char::is_alphabetic)
        && line.chars().next().is_some_and(char::is_lowercase);
    if hyphenated {
        out.pop();
    } else {
        out.push(' ');
    }
    out.push_str(line.trim_start());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::converted::Section;

    /// Glyphs of `text` set at `y` in `size`, each `size / 2` wide; a
    /// `|` in the text is a wide gap (a table's column break).
    fn line(text: &str, x: f32, y: f32, size: f32) -> Vec<Glyph> {
        let mut glyphs = Vec::new();
        let mut left = x;
        for ch in text.chars() {
            if ch == '|' {
                left += size * 4.0;
                continue;
            }
            glyphs.push(Glyph {
                ch,
                left,
                right: left + size / 2.0,
                bottom: y,
                top: y + size * 0.7,
                size,
            });
            left += size / 2.0;
        }
        glyphs
    }

    fn page(number: u32, lines: &[(&str, f32, f32)]) -> Page {
        Page {
            number,
            glyphs: lines
                .iter()
                .flat_map(|(text, y, size)| line(text, 72.0, *y, *size))
                .collect(),
            figures: Vec::new(),
        }
    }

    #[test]
    fn a_figure_stands_between_the_paragraphs_above_and_below_it() {
        let mut with_figure = page(
            1,
            &[
                ("The quay froze at night.", 700.0, 10.0),
                ("The ferry left at dawn.", 400.0, 10.0),
            ],
        );
        with_figure.figures = vec![
            (80.0, "[figure n 1]".into()),
            (600.0, "[figure n 0]".into()),
        ];
        let texts = texts(vec![with_figure]);
        assert_eq!(
            texts[0].0,
            "The quay froze at night.\n\n[figure n 0]\n\nThe ferry left at dawn.\n\n[figure n 1]"
        );
    }

    fn texts(pages: Vec<Page>) -> Vec<(String, Option<(u32, u32)>)> {
        let mut builder = Builder::new("application/pdf", 1 << 20);
        lay_out(pages, &mut builder).unwrap();
        builder
            .finish()
            .unwrap()
            .sections
            .into_iter()
            .map(|s| match s {
                Section::Text { markdown, pages } => (markdown, pages),
                Section::Table { .. } => panic!("no tables here"),
            })
            .collect()
    }

    #[test]
    fn headings_paragraphs_hyphens_and_tables() {
        let out = texts(vec![page(
            1,
            &[
                ("Annual Report", 700.0, 20.0),
                ("The keeper trims the light-", 660.0, 10.0),
                ("house wick each evening.", 648.0, 10.0),
                ("A second paragraph starts here.", 620.0, 10.0),
                ("Vessel|Tonnage", 590.0, 10.0),
                ("Kestrel|1200", 578.0, 10.0),
            ],
        )]);
        assert_eq!(
            out[0].0,
            "# Annual Report\n\nThe keeper trims the lighthouse wick each evening.\n\n\
             A second paragraph starts here.\n\n| Vessel | Tonnage |\n| --- | --- |\n| Kestrel | 1200 |"
        );
        assert_eq!(out[0].1, Some((1, 1)));
    }

    #[test]
    fn running_headers_footers_and_page_numbers_are_dropped() {
        let words = ["alpha", "beta", "gamma"];
        let pages = (1..=3)
            .map(|n| {
                let body = format!(
                    "The {} page, the longest line of it, ends here.",
                    words[n as usize - 1]
                );
                let footer = format!("Page {n}");
                page(
                    n,
                    &[
                        ("ACME internal survey", 760.0, 8.0),
                        (&body, 600.0, 10.0),
                        (&footer, 30.0, 8.0),
                    ],
                )
            })
            .collect();
        let out = texts(pages);
        assert_eq!(out.len(), 3);
        for (n, (text, pages)) in out.iter().enumerate() {
            assert_eq!(
                text,
                &format!("The {} page, the longest line of it, ends here.", words[n])
            );
            let n = n as u32 + 1;
            assert_eq!(*pages, Some((n, n)));
        }
    }

    /// Issue 32's handbook: each page opens with "Chapter N of the
    /// handbook" (larger than the body) and a paragraph that differs from
    /// the other pages' only in its numbers, and ends with another such
    /// paragraph; `furniture` adds a running header and footer.
    fn handbook(furniture: bool) -> (Vec<Page>, Vec<String>) {
        let mut pages = Vec::new();
        let mut wanted = Vec::new();
        for n in 1..=3u32 {
            let opening = [
                format!(
                    "In {} the {} wardens of district {n} walked",
                    2020 + n,
                    n + 10
                ),
                format!(
                    "{} miles along the river and counted {} herons",
                    n * 3 + 40,
                    n + 60
                ),
                format!("between the {} weirs of the lower valley.", n + 4),
            ];
            let own = [
                format!(
                    "The {} page has a paragraph of its",
                    ["first", "second", "third"][n as usize - 1]
                ),
                "own, unlike the others around it.".to_string(),
            ];
            let closing = [
                format!("By the end of season {n} the {} volunteers", n + 30),
                format!("had planted {} rows in the pale gold of", n + 90),
                "valley yarrow.".to_string(),
            ];
            let heading = format!("Chapter {n} of the handbook");
            let header = format!("The Handbook \u{2014} page {n}");
            let footer = format!("Handbook revision 7 \u{2014} page {n} of 3");
            let mut lines: Vec<(&str, f32, f32)> = Vec::new();
            if furniture {
                lines.push((&header, 760.0, 8.0));
            }
            lines.push((&heading, 700.0, 18.0));
            let mut y = 670.0;
            for paragraph in [&opening[..], &own[..], &closing[..]] {
                for text in paragraph {
                    lines.push((text, y, 10.0));
                    y -= 12.0;
                }
                y -= 10.0;
            }
            if furniture {
                lines.push((&footer, 30.0, 8.0));
            }
            pages.push(page(n, &lines));
            wanted.push(format!(
                "# {heading}\n\n{}\n\n{}\n\n{}",
                opening.join(" "),
                own.join(" "),
                closing.join(" ")
            ));
        }
        (pages, wanted)
    }

    #[test]
    fn pages_alike_but_for_their_numbers_are_content() {
        for furniture in [false, true] {
            let (pages, wanted) = handbook(furniture);
            let out: Vec<String> = texts(pages).into_iter().map(|(text, _)| text).collect();
            assert_eq!(out, wanted, "with a running header and footer: {furniture}");
        }
    }

    #[test]
    fn a_repeated_line_at_another_place_on_each_page_is_content() {
        let pages = (1..=3)
            .map(|n| {
                let body = format!(
                    "Page {} of the log says what happened there.",
                    ["one", "two", "three"][n as usize - 1]
                );
                // The same closing line, lower on each page.
                let y = 600.0 - n as f32 * 60.0;
                page(
                    n,
                    &[
                        ("ACME internal survey", 760.0, 8.0),
                        (&body, 700.0, 10.0),
                        ("Nothing else was seen.", y, 10.0),
                    ],
                )
            })
            .collect();
        let out: Vec<String> = texts(pages).into_iter().map(|(text, _)| text).collect();
        assert_eq!(
            out,
            vec![
                "Page one of the log says what happened there.\n\nNothing else was seen.",
                "Page two of the log says what happened there.\n\nNothing else was seen.",
                "Page three of the log says what happened there.\n\nNothing else was seen.",
            ]
        );
    }

    #[test]
    fn a_line_whose_numbers_differ_in_more_than_the_page_number_is_content() {
        let pages = (1..=3)
            .map(|n| {
                let tally = format!("Tally {}: {} gulls", n, n * 7 + 20);
                let body = format!(
                    "The {} count is in, made from the harbour wall at dawn.",
                    ["first", "second", "third"][n as usize - 1]
                );
                let footer = format!("Page {n} of 3");
                page(
                    n,
                    &[
                        (&tally, 760.0, 8.0),
                        (&body, 700.0, 10.0),
                        (&footer, 30.0, 8.0),
                    ],
                )
            })
            .collect();
        let out: Vec<String> = texts(pages).into_iter().map(|(text, _)| text).collect();
        assert_eq!(
            out,
            vec![
                "Tally 1: 27 gulls\n\nThe first count is in, made from the harbour wall at dawn.",
                "Tally 2: 34 gulls\n\nThe second count is in, made from the harbour wall at dawn.",
                "Tally 3: 41 gulls\n\nThe third count is in, made from the harbour wall at dawn.",
            ]
        );
    }

    #[test]
    fn page_numbers_go_unless_they_end_a_sentence_where_no_page_number_stands() {
        let out: Vec<String> = texts(vec![
            page(
                1,
                &[
                    ("The first page opens here and", 700.0, 10.0),
                    ("goes on for a while.", 688.0, 10.0),
                    ("1", 40.0, 10.0),
                ],
            ),
            // Its number sits a line's pitch under the text, where every
            // page has its number.
            page(
                2,
                &[
                    ("The second page opens here and", 700.0, 10.0),
                    ("goes on for a while.", 688.0, 10.0),
                    ("Then it runs down to the foot", 64.0, 10.0),
                    ("of the page, just above its number.", 52.0, 10.0),
                    ("2", 40.0, 10.0),
                ],
            ),
            // `3.` ends a sentence, where no page has its number.
            page(
                3,
                &[
                    ("The third page opens here and", 700.0, 10.0),
                    ("goes on for a while.", 688.0, 10.0),
                    ("The method is given in listing", 650.0, 10.0),
                    ("3.", 638.0, 10.0),
                    ("3", 40.0, 10.0),
                ],
            ),
        ])
        .into_iter()
        .map(|(text, _)| text)
        .collect();
        assert_eq!(
            out,
            vec![
                "The first page opens here and goes on for a while.",
                "The second page opens here and goes on for a while.\n\n\
                 Then it runs down to the foot of the page, just above its number.",
                "The third page opens here and goes on for a while.\n\n\
                 The method is given in listing 3.",
            ]
        );
    }

    #[test]
    fn a_paragraph_across_a_page_break_stays_whole() {
        let out = texts(vec![
            page(
                1,
                &[
                    ("First page opens.", 700.0, 10.0),
                    ("This sentence runs on to", 600.0, 10.0),
                ],
            ),
            page(
                2,
                &[
                    ("the next page and ends.", 700.0, 10.0),
                    ("Then another one.", 600.0, 10.0),
                ],
            ),
        ]);
        let texts: Vec<_> = out.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        assert_eq!(
            texts,
            vec![
                ("First page opens.", Some((1, 1))),
                (
                    "This sentence runs on to the next page and ends.",
                    Some((1, 2))
                ),
                ("Then another one.", Some((2, 2))),
            ]
        );
    }

    #[test]
    fn a_page_without_text_is_noted() {
        let mut builder = Builder::new("application/pdf", 1 << 20);
        lay_out(
            vec![
                page(1, &[("Only page one has text.", 700.0, 10.0)]),
                page(2, &[]),
            ],
            &mut builder,
        )
        .unwrap();
        let converted = builder.finish().unwrap();
        assert_eq!(
            converted.omitted,
            vec!["page 2: no text layer (OCR not enabled)".to_string()]
        );
    }
}
