//! Chunk: extracted text → ordered chunks with line ranges.
//!
//! Architecture invariant: pure (no IO) and deterministic — the same text and
//! settings always give the same chunks, which is what makes chunk IDs stable
//! across re-syncs.
//!
//! Syntax-aware chunks (tree-sitter for code, markdown structure for markdown
//! and HTML, sentence/word boundaries for plain text) come from
//! `text-splitter`, sized in model tokens so that no chunk is silently cut by
//! the embedder's 256-token window, and also bounded in bytes. The `lines`
//! strategy groups whole lines, as the hosted service's fallback does.

use std::sync::Arc;

use text_splitter::{ChunkConfig, ChunkSizer, CodeSplitter, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

use crate::extract::{CodeLanguage, Converted, Extracted, Section, TextKind};
use crate::model::ChunkingConfig;
use crate::nesting;

/// Default bound in bytes for syntax-aware chunks and for line chunks.
pub const DEFAULT_MAX_SIZE_BYTES: usize = 4096;
/// Default number of lines per chunk for the `lines` strategy.
pub const DEFAULT_MAX_LINES: usize = 10;

/// The `chunk_strategy` metadata value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    TreeSitter,
    Markdown,
    Lines,
    Text,
    /// Spreadsheet rows under their repeated header.
    Table,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::TreeSitter => "tree_sitter",
            Strategy::Markdown => "markdown",
            Strategy::Lines => "lines",
            Strategy::Text => "text",
            Strategy::Table => "table",
        }
    }
}

/// One chunk and where it sits in its document (1-based, inclusive lines;
/// for converted documents, lines of their markdown).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    pub text: String,
    pub start_line: u32,
    pub end_line: u32,
    /// Paged documents: the first and last page (or slide) the text is from.
    pub pages: Option<(u32, u32)>,
    /// Spreadsheets: the sheet the rows are from.
    pub sheet: Option<String>,
    /// Its text was read by OCR (from a scanned page or an image file).
    pub ocr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    pub strategy: Strategy,
    pub language: Option<CodeLanguage>,
    pub chunks: Vec<Chunk>,
    /// Converted documents: what they are and what they call themselves.
    pub document: Option<DocumentFacts>,
}

/// Document-wide chunk metadata of converted documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFacts {
    /// The MIME type the document was read as.
    pub content_type: String,
    /// The title its properties name.
    pub title: Option<String>,
}

/// Splits documents; cheap to share between threads.
#[derive(Clone)]
pub struct Chunker {
    /// The embedding model's tokenizer with truncation and padding off, so it
    /// counts every token. `None` sizes by bytes alone.
    tokenizer: Option<Arc<Tokenizer>>,
    /// Tokens per chunk, leaving room for `[CLS]` and `[SEP]`.
    max_tokens: usize,
    /// See [`ModelSizer`]; always on outside tests.
    shortcut: bool,
    /// Bytes per chunk at most, whatever the source asks: the window of a
    /// model whose tokenizer is unknown (a token is at least a byte).
    max_bytes_cap: usize,
}

impl Chunker {
    /// `model_max_tokens` is the embedder's window (256 for all-MiniLM-L6-v2).
    pub fn new(tokenizer: Option<Tokenizer>, model_max_tokens: usize) -> Self {
        let tokenizer = tokenizer.map(|mut tokenizer| {
            tokenizer.with_padding(None);
            // Only fails for invalid truncation params; `None` is always valid.
            let _ = tokenizer.with_truncation(None);
            Arc::new(tokenizer)
        });
        Chunker {
            tokenizer,
            max_tokens: model_max_tokens.saturating_sub(2).max(8),
            shortcut: true,
            max_bytes_cap: usize::MAX,
        }
    }

    /// The same chunker, with chunks of at most `max_bytes` bytes.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes_cap = max_bytes.saturating_sub(2).max(16);
        self
    }

    /// The same chunker with room for `tokens` more in every chunk's
    /// window (a prompt prepended before embedding); `in_bytes` when the
    /// window is counted in bytes.
    pub fn reserving(&self, tokens: usize, in_bytes: bool) -> Self {
        let mut chunker = self.clone();
        chunker.max_tokens = self.max_tokens.saturating_sub(tokens).max(8);
        if in_bytes && self.max_bytes_cap != usize::MAX {
            chunker.max_bytes_cap = self.max_bytes_cap.saturating_sub(tokens).max(16);
        }
        chunker
    }

    /// The same chunker tokenizing every span text-splitter sizes, for
    /// checking that skipping spans that cannot fit changes no chunk.
    #[doc(hidden)]
    pub fn without_size_shortcut(mut self) -> Self {
        self.shortcut = false;
        self
    }

    /// Chunks `doc` following the source's `chunking` setting, or the
    /// per-kind default when it has none.
    pub fn chunk(&self, doc: &Extracted, config: Option<&ChunkingConfig>) -> Chunked {
        let language = match doc.kind {
            TextKind::Code(language) => Some(language),
            _ => None,
        };
        let (strategy, max_bytes, max_lines) = match (config, doc.kind) {
            (
                Some(ChunkingConfig::Lines {
                    max_lines,
                    max_size_bytes,
                }),
                _,
            ) => (
                Strategy::Lines,
                max_size_bytes.map_or(DEFAULT_MAX_SIZE_BYTES, |b| b as usize),
                max_lines.map_or(DEFAULT_MAX_LINES, |l| l as usize),
            ),
            (Some(ChunkingConfig::TreeSitter { max_size_bytes }), kind) => (
                syntax_strategy(kind),
                max_size_bytes.map_or(DEFAULT_MAX_SIZE_BYTES, |b| b as usize),
                0,
            ),
            (None, TextKind::Plain) => (Strategy::Lines, DEFAULT_MAX_SIZE_BYTES, DEFAULT_MAX_LINES),
            (None, kind) => (syntax_strategy(kind), DEFAULT_MAX_SIZE_BYTES, 0),
        };
        let max_bytes = max_bytes.min(self.max_bytes_cap).max(16);
        let strategy = if too_nested(&doc.text, strategy, language) {
            // See `crate::nesting`: the syntax-aware splitters are
            // superlinear in nesting depth. The text splitter is not.
            Strategy::Text
        } else {
            strategy
        };
        let chunks = match strategy {
            Strategy::Lines => chunk_lines(&doc.text, max_lines.max(1), max_bytes),
            _ => self.chunk_syntax(&doc.text, strategy, language, max_bytes),
        };
        Chunked {
            strategy,
            language,
            chunks,
            document: None,
        }
    }

    /// Chunks a converted document section by section, so that a chunk
    /// never mixes pages that are not consecutive nor two sheets: text
    /// sections as markdown (or lines, if the source asks for them), table
    /// sections as runs of whole rows under the repeated header.
    pub fn chunk_converted(&self, doc: &Converted, config: Option<&ChunkingConfig>) -> Chunked {
        let max_bytes = match config {
            Some(ChunkingConfig::Lines { max_size_bytes, .. })
            | Some(ChunkingConfig::TreeSitter { max_size_bytes }) => {
                max_size_bytes.map_or(DEFAULT_MAX_SIZE_BYTES, |b| b as usize)
            }
            None => DEFAULT_MAX_SIZE_BYTES,
        }
        .min(self.max_bytes_cap)
        .max(16);
        let mut chunks = Vec::new();
        let mut strategy = Strategy::Markdown;
        let mut lines_before = 0u32;
        for section in &doc.sections {
            let (mut section_chunks, lines) = match section {
                Section::Text { markdown, pages } => {
                    let text = Extracted {
                        text: markdown.clone(),
                        kind: TextKind::Markdown,
                    };
                    let chunked = self.chunk(&text, config);
                    strategy = chunked.strategy;
                    let mut section_chunks = chunked.chunks;
                    let ocr = pages.is_some_and(|pages| doc.ocr_within(pages));
                    for chunk in &mut section_chunks {
                        chunk.pages = *pages;
                        chunk.ocr = ocr;
                    }
                    (section_chunks, count_newlines(markdown) + 1)
                }
                Section::Table {
                    sheet,
                    header,
                    rows,
                } => {
                    strategy = Strategy::Table;
                    let mut section_chunks = self.chunk_table(header, rows, max_bytes);
                    for chunk in &mut section_chunks {
                        chunk.sheet = sheet.clone();
                    }
                    (section_chunks, rows.len() as u32 + 2)
                }
            };
            for chunk in &mut section_chunks {
                chunk.start_line += lines_before;
                chunk.end_line += lines_before;
            }
            chunks.extend(section_chunks);
            // Sections are joined by a blank line in the document's markdown.
            lines_before += lines + 1;
        }
        Chunked {
            strategy,
            language: None,
            chunks,
            document: Some(DocumentFacts {
                content_type: doc.content_type.clone(),
                title: doc.title.clone(),
            }),
        }
    }

    /// Whole rows under `header` (header and separator lines), as many per
    /// chunk as fit in tokens and bytes. Rows join with line breaks, which
    /// split words for the tokenizer as much as any whitespace does, so a
    /// chunk's count is the sum of its rows'. A single row too big for any
    /// chunk is cut into text pieces, each under the header: nothing of it
    /// is lost.
    fn chunk_table(&self, header: &str, rows: &[String], max_bytes: usize) -> Vec<Chunk> {
        let tokens = |text: &str| {
            self.tokenizer.as_deref().map_or(0, |tokenizer| {
                tokenizer
                    .encode_fast(text, false)
                    .map(|encoding| encoding.len())
                    .unwrap_or(text.len())
            })
        };
        let header_size = (tokens(header), header.len() + 1);
        let mut chunks = Vec::new();
        let mut text = String::new();
        let mut size = header_size;
        let mut first_row = 0usize;
        let flush = |text: &mut String, first: usize, last: usize, chunks: &mut Vec<Chunk>| {
            if !text.is_empty() {
                chunks.push(Chunk {
                    text: format!("{header}\n{text}"),
                    // Line 1 and 2 are the header; row i is line i + 3.
                    start_line: first as u32 + 3,
                    end_line: last as u32 + 3,
                    ..Chunk::default()
                });
                text.clear();
            }
        };
        for (index, row) in rows.iter().enumerate() {
            let row_size = (tokens(row), row.len() + 1);
            let fits = |size: (usize, usize)| {
                size.0 + row_size.0 <= self.max_tokens && size.1 + row_size.1 <= max_bytes
            };
            if !text.is_empty() && !fits(size) {
                flush(&mut text, first_row, index - 1, &mut chunks);
                size = header_size;
            }
            if text.is_empty() {
                first_row = index;
                if !fits(header_size) {
                    // Too big for one chunk even alone.
                    let room = max_bytes.saturating_sub(header.len() + 1).max(16);
                    let piece_text = Extracted {
                        text: row.clone(),
                        kind: TextKind::Plain,
                    };
                    let config = ChunkingConfig::TreeSitter {
                        max_size_bytes: Some(room.min(u32::MAX as usize) as u32),
                    };
                    let budget = Chunker {
                        max_tokens: self.max_tokens.saturating_sub(header_size.0).max(8),
                        ..self.clone()
                    };
                    for piece in budget.chunk(&piece_text, Some(&config)).chunks {
                        text.push_str(&piece.text);
                        flush(&mut text, index, index, &mut chunks);
                    }
                    continue;
                }
            } else {
                text.push('\n');
            }
            text.push_str(row);
            size = (size.0 + row_size.0, size.1 + row_size.1);
        }
        flush(
            &mut text,
            first_row,
            rows.len().saturating_sub(1),
            &mut chunks,
        );
        chunks
    }

    fn chunk_syntax(
        &self,
        text: &str,
        strategy: Strategy,
        language: Option<CodeLanguage>,
        max_bytes: usize,
    ) -> Vec<Chunk> {
        let sizer = ModelSizer {
            tokenizer: self.tokenizer.as_deref(),
            max_tokens: self.max_tokens,
            max_bytes,
            shortcut: self.shortcut,
        };
        let pieces: Vec<(usize, &str)> = windows(text, SYNTAX_WINDOW_BYTES)
            .into_iter()
            .flat_map(|(offset, window)| {
                split_window(&sizer, self.max_tokens, strategy, language, window)
                    .into_iter()
                    .map(move |(at, piece)| (offset + at, piece))
            })
            .collect();
        with_line_numbers(text, pieces)
    }
}

/// One window's `(offset, text)` pieces from the splitter for `strategy`.
fn split_window<'t>(
    sizer: &ModelSizer<'_>,
    max_tokens: usize,
    strategy: Strategy,
    language: Option<CodeLanguage>,
    window: &'t str,
) -> Vec<(usize, &'t str)> {
    let config = || ChunkConfig::new(max_tokens).with_sizer(sizer);
    match (strategy, language) {
        (Strategy::TreeSitter, Some(language)) => {
            match CodeSplitter::new(tree_sitter_language(language), config()) {
                Ok(splitter) => splitter.chunk_indices(window).collect(),
                Err(_) => TextSplitter::new(config()).chunk_indices(window).collect(),
            }
        }
        (Strategy::Markdown, _) => MarkdownSplitter::new(config())
            .chunk_indices(window)
            .collect(),
        _ => TextSplitter::new(config()).chunk_indices(window).collect(),
    }
}

/// Largest span handed to one syntax-aware split. text-splitter rescans the
/// rest of its input for every chunk it cuts, so one split costs about
/// chunks × spans, growing with the square of the size: 1.2 MB of Python
/// took 11 s, of markdown 4.6 s (`bench/nesting_bench.rs` has the shapes).
/// Cut into windows first, chunking is linear in the document's size; where
/// a window ends depends on the bytes alone, so chunks (and IDs) are stable.
pub const SYNTAX_WINDOW_BYTES: usize = 64 * 1024;

/// `text` cut into spans of at most `size` bytes (with their offsets): at a
/// blank line in a window's last quarter, else at its last line break, else
/// (one huge line) at a character boundary.
fn windows(text: &str, size: usize) -> Vec<(usize, &str)> {
    let mut spans = Vec::new();
    let mut start = 0;
    while text.len() - start > size {
        let window = &text[start..text.floor_char_boundary(start + size)];
        let cut = window
            .rfind("\n\n")
            .map(|at| at + 2)
            .filter(|cut| *cut >= size * 3 / 4)
            .or_else(|| window.rfind('\n').map(|at| at + 1))
            .filter(|cut| *cut > 0)
            .unwrap_or(window.len())
            .max(1);
        spans.push((start, &text[start..start + cut]));
        start += cut;
    }
    spans.push((start, &text[start..]));
    spans
}

/// Whether `text` nests too deeply for `strategy`'s splitter (the bounds of
/// [`crate::nesting`]): code by its brackets, then by its syntax tree;
/// markdown by its quote and list levels.
fn too_nested(text: &str, strategy: Strategy, language: Option<CodeLanguage>) -> bool {
    match (strategy, language) {
        (Strategy::TreeSitter, Some(language)) => {
            if nesting::bracket_depth(text) > nesting::MAX_CODE_DEPTH {
                return true;
            }
            let mut parser = tree_sitter::Parser::new();
            if parser
                .set_language(&tree_sitter_language(language).into())
                .is_err()
            {
                return false; // the splitter falls back to text itself
            }
            parser.parse(text, None).is_none_or(|tree| {
                nesting::tree_depth(&tree, nesting::MAX_CODE_DEPTH) > nesting::MAX_CODE_DEPTH
            })
        }
        (Strategy::Markdown, _) => nesting::markdown_depth(text) > nesting::MAX_MARKDOWN_DEPTH,
        _ => false,
    }
}

fn syntax_strategy(kind: TextKind) -> Strategy {
    match kind {
        TextKind::Code(_) => Strategy::TreeSitter,
        TextKind::Markdown | TextKind::Html => Strategy::Markdown,
        TextKind::Plain => Strategy::Text,
    }
}

fn tree_sitter_language(language: CodeLanguage) -> tree_sitter_language::LanguageFn {
    match language {
        CodeLanguage::Rust => tree_sitter_rust::LANGUAGE,
        CodeLanguage::Python => tree_sitter_python::LANGUAGE,
        CodeLanguage::JavaScript => tree_sitter_javascript::LANGUAGE,
        CodeLanguage::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
        CodeLanguage::Tsx => tree_sitter_typescript::LANGUAGE_TSX,
        CodeLanguage::Go => tree_sitter_go::LANGUAGE,
        CodeLanguage::Java => tree_sitter_java::LANGUAGE,
        CodeLanguage::C => tree_sitter_c::LANGUAGE,
        CodeLanguage::Cpp => tree_sitter_cpp::LANGUAGE,
    }
}

/// Sizes a chunk so that both bounds hold at capacity `max_tokens`: its token
/// count, and its byte length scaled so that `max_bytes` maps to `max_tokens`.
///
/// Tokenizing is most of chunking's time, and text-splitter sizes many
/// candidate spans that are far too big. A span whose byte size, or whose
/// [`token_floor`], is already over capacity cannot fit whatever its exact
/// token count, so it is not tokenized: text-splitter only compares sizes
/// with the capacity (and gives up probing sooner on bigger ones), so every
/// fit decision — and so every chunk — is the same as with exact counts.
struct ModelSizer<'a> {
    tokenizer: Option<&'a Tokenizer>,
    max_tokens: usize,
    max_bytes: usize,
    /// Skip tokenizing spans that cannot fit (off only to test that the
    /// chunks are the same).
    shortcut: bool,
}

impl ChunkSizer for ModelSizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        let by_bytes = (chunk.len() * self.max_tokens).div_ceil(self.max_bytes);
        if self.shortcut && self.tokenizer.is_some() {
            if by_bytes > self.max_tokens {
                return by_bytes;
            }
            let floor = token_floor(chunk);
            if floor > self.max_tokens {
                return floor;
            }
        }
        let by_tokens = self.tokenizer.map_or(0, |tokenizer| {
            tokenizer
                .encode_fast(chunk, false)
                .map(|encoding| encoding.len())
                // A tokenizer failure must not lose text: fall back to bytes.
                .unwrap_or(by_bytes)
        });
        by_bytes.max(by_tokens)
    }
}

/// A lower bound of the BERT (WordPiece) token count of `text`, without
/// tokenizing: BERT's pre-tokenizer makes every ASCII punctuation character
/// a token of its own and splits the rest at whitespace, each piece giving
/// at least one token. Only pieces holding an ASCII letter or digit are
/// counted, and only space, tab, CR and LF end a piece: the normaliser
/// deletes other control characters (joining their neighbours), and
/// non-ASCII characters may normalise to nothing. Monotonic in the prefixes
/// of `text`.
pub fn token_floor(text: &str) -> usize {
    let mut count = 0;
    let mut counted_piece = false;
    for byte in text.bytes() {
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => counted_piece = false,
            _ if byte.is_ascii_punctuation() => {
                count += 1;
                counted_piece = false;
            }
            _ if byte.is_ascii_alphanumeric() && !counted_piece => {
                count += 1;
                counted_piece = true;
            }
            // Letters and digits inside a counted piece, other control
            // characters, and non-ASCII bytes.
            _ => {}
        }
    }
    count
}

/// Turns `(byte offset, text)` pieces (in document order) into chunks with
/// 1-based line ranges, walking the document once.
fn with_line_numbers(text: &str, pieces: Vec<(usize, &str)>) -> Vec<Chunk> {
    let mut line = 1u32;
    let mut position = 0usize;
    let mut chunks = Vec::with_capacity(pieces.len());
    for (offset, piece) in pieces {
        if piece.trim().is_empty() {
            continue;
        }
        if offset >= position {
            line += count_newlines(&text[position..offset]);
            position = offset;
        }
        let end_line = line + count_newlines(piece.trim_end_matches('\n'));
        chunks.push(Chunk {
            text: piece.to_string(),
            start_line: line,
            end_line,
            ..Chunk::default()
        });
    }
    chunks
}

fn count_newlines(text: &str) -> u32 {
    text.bytes().filter(|b| *b == b'\n').count() as u32
}

/// Groups whole lines: at most `max_lines` lines and `max_bytes` bytes per
/// chunk. A single line longer than `max_bytes` is cut at character boundaries.
fn chunk_lines(text: &str, max_lines: usize, max_bytes: usize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut buffer = String::new();
    let mut buffer_lines = 0usize;
    let mut buffer_start = 1u32;
    let flush = |buffer: &mut String, start: u32, end: u32, chunks: &mut Vec<Chunk>| {
        let trimmed = buffer.trim_end_matches(['\n', '\r']);
        if !trimmed.trim().is_empty() {
            chunks.push(Chunk {
                text: trimmed.to_string(),
                start_line: start,
                end_line: end,
                ..Chunk::default()
            });
        }
        buffer.clear();
    };
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_number = index as u32 + 1;
        if buffer_lines > 0 && (buffer_lines == max_lines || buffer.len() + line.len() > max_bytes)
        {
            flush(&mut buffer, buffer_start, line_number - 1, &mut chunks);
            buffer_lines = 0;
        }
        if buffer_lines == 0 {
            buffer_start = line_number;
        }
        if line.len() > max_bytes {
            // Too long on its own: emit it in pieces, each its own chunk.
            let mut rest = line;
            while !rest.is_empty() {
                let mut cut = rest.len().min(max_bytes);
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                buffer.push_str(&rest[..cut]);
                flush(&mut buffer, line_number, line_number, &mut chunks);
                rest = &rest[cut..];
            }
            buffer_lines = 0;
            continue;
        }
        buffer.push_str(line);
        buffer_lines += 1;
    }
    if buffer_lines > 0 {
        let last_line = buffer_start + buffer_lines as u32 - 1;
        flush(&mut buffer, buffer_start, last_line, &mut chunks);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_text_at_line_breaks_within_the_size() {
        let text: String = (0..5000)
            .map(|i| {
                if i % 7 == 0 {
                    "\n".to_string()
                } else {
                    format!("line {i} é\n")
                }
            })
            .collect();
        let spans = windows(&text, 1000);
        assert!(spans.len() > 10);
        let mut joined = String::new();
        for (offset, span) in &spans {
            assert_eq!(*offset, joined.len());
            assert!(span.len() <= 1000);
            joined.push_str(span);
        }
        assert_eq!(joined, text);
        assert!(
            spans[..spans.len() - 1]
                .iter()
                .all(|(_, s)| s.ends_with('\n'))
        );
        // One huge line is cut at character boundaries.
        let line = "é".repeat(3000);
        let spans = windows(&line, 1001);
        assert!(spans.iter().all(|(_, s)| s.len() <= 1001));
        assert_eq!(spans.iter().map(|(_, s)| *s).collect::<String>(), line);
    }

    fn doc(text: &str, kind: TextKind) -> Extracted {
        Extracted {
            text: text.to_string(),
            kind,
        }
    }

    #[test]
    fn lines_strategy_respects_both_limits() {
        let text: String = (1..=25).map(|i| format!("line {i}\n")).collect();
        // (max_lines, max_bytes) → expected (start, end) line ranges
        type Case<'a> = (u32, u32, &'a [(u32, u32)]);
        let table: &[Case] = &[
            (10, 4096, &[(1, 10), (11, 20), (21, 25)]),
            (5, 4096, &[(1, 5), (6, 10), (11, 15), (16, 20), (21, 25)]),
            // "line N\n" is 7–8 bytes: 20 bytes hold two lines.
            (10, 20, &[(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)]),
        ];
        let chunker = Chunker::new(None, 256);
        for (max_lines, max_bytes, expected) in table {
            let config = ChunkingConfig::Lines {
                max_lines: Some(*max_lines),
                max_size_bytes: Some(*max_bytes),
            };
            let chunked = chunker.chunk(&doc(&text, TextKind::Plain), Some(&config));
            assert_eq!(chunked.strategy, Strategy::Lines);
            let ranges: Vec<(u32, u32)> = chunked
                .chunks
                .iter()
                .map(|c| (c.start_line, c.end_line))
                .collect();
            assert_eq!(
                &ranges[..expected.len()],
                *expected,
                "{max_lines}/{max_bytes}"
            );
            for chunk in &chunked.chunks {
                assert!(chunk.text.len() <= *max_bytes as usize);
                assert_eq!(
                    chunk.text,
                    text_of_lines(&text, chunk.start_line, chunk.end_line)
                );
            }
        }
    }

    fn text_of_lines(text: &str, start: u32, end: u32) -> String {
        text.lines()
            .skip(start as usize - 1)
            .take((end - start + 1) as usize)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn long_line_is_cut_on_char_boundaries() {
        let text = "é".repeat(50); // 100 bytes
        let chunks = chunk_lines(&text, 10, 33);
        assert!(chunks.iter().all(|c| c.text.len() <= 33));
        assert_eq!(
            chunks.iter().map(|c| c.text.as_str()).collect::<String>(),
            text
        );
    }

    #[test]
    fn default_plain_text_uses_lines_of_ten() {
        let text: String = (1..=12).map(|i| format!("{i}\n")).collect();
        let chunked = Chunker::new(None, 256).chunk(&doc(&text, TextKind::Plain), None);
        assert_eq!(chunked.strategy, Strategy::Lines);
        assert_eq!(chunked.chunks.len(), 2);
        assert_eq!(chunked.chunks[1].start_line, 11);
    }

    #[test]
    fn code_is_split_at_syntax_boundaries_with_line_ranges() {
        let function = |i: usize| {
            format!("fn function_{i}() -> u32 {{\n    let value = {i};\n    value * 2\n}}\n\n")
        };
        let text: String = (0..40).map(function).collect();
        let config = ChunkingConfig::TreeSitter {
            max_size_bytes: Some(200),
        };
        let chunked = Chunker::new(None, 256).chunk(
            &doc(&text, TextKind::Code(CodeLanguage::Rust)),
            Some(&config),
        );
        assert_eq!(chunked.strategy, Strategy::TreeSitter);
        assert_eq!(chunked.language, Some(CodeLanguage::Rust));
        assert!(chunked.chunks.len() > 5);
        for chunk in &chunked.chunks {
            assert!(chunk.text.len() <= 200, "{}", chunk.text);
            // Syntax-aware: every chunk starts at a function boundary.
            assert!(chunk.text.starts_with("fn function_"), "{}", chunk.text);
            let lines = text_of_lines(&text, chunk.start_line, chunk.end_line);
            assert_eq!(lines.trim_end(), chunk.text.trim_end());
        }
    }

    #[test]
    fn markdown_chunks_keep_sections_and_are_deterministic() {
        let text: String = (0..30)
            .map(|i| format!("## Section {i}\n\nParagraph {i} with some words in it.\n\n"))
            .collect();
        let chunker = Chunker::new(None, 256);
        let config = ChunkingConfig::TreeSitter {
            max_size_bytes: Some(120),
        };
        let first = chunker.chunk(&doc(&text, TextKind::Markdown), Some(&config));
        let second = chunker.chunk(&doc(&text, TextKind::Markdown), Some(&config));
        assert_eq!(first, second);
        assert_eq!(first.strategy, Strategy::Markdown);
        assert!(
            first
                .chunks
                .iter()
                .all(|c| c.text.starts_with("## Section"))
        );
        assert!(first.chunks.iter().all(|c| c.text.len() <= 120));
    }

    #[test]
    fn empty_and_blank_documents_have_no_chunks() {
        let chunker = Chunker::new(None, 256);
        for kind in [TextKind::Plain, TextKind::Markdown] {
            assert!(chunker.chunk(&doc("", kind), None).chunks.is_empty());
            assert!(
                chunker
                    .chunk(&doc("\n  \n\t\n", kind), None)
                    .chunks
                    .is_empty()
            );
        }
    }
}
