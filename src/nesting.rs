//! How deeply a document nests, measured in one linear pass without
//! recursion — and the bounds above which the structure-aware converters are
//! not run on it.
//!
//! Why: the converters we use walk document trees recursively or search
//! nesting levels superlinearly. HTML → markdown (`htmd`) recurses per
//! element, so 150,000 nested `<div>`s overflow the thread's stack and abort
//! the process (a stack overflow is not a panic; nothing can catch it), and
//! html5ever's tree builder scans its open-element stack per tag (quadratic
//! in the depth). text-splitter's code and markdown splitters look at every
//! nesting level for every cut: 4,000 nested brackets in a `.py` file took
//! 400 s of CPU, a 10,000-term `1 + 1 + …` chain 5 s, 3,000 nested list items
//! 2.5 s. Real documents nest a few dozen levels; past the bounds below a
//! document is converted the simple, linear way instead (HTML as its text,
//! code and markdown with the plain-text splitter), so it still ends in
//! chunks and no document can hold a worker or take the process down.
//!
//! Architecture invariant: every function here is a single loop over the
//! input (or over a parsed tree with an explicit cursor): linear time,
//! constant stack.

/// Deepest HTML element nesting converted to markdown (Blink re-parents
/// elements beyond 512 as well).
pub const MAX_HTML_DEPTH: usize = 512;
/// Stack of the daemon's threads, parsing threads included. The converters
/// that recurse (html → markdown) are bounded by the depths above; at those
/// bounds they need between 1 and 2 MiB (measured on a debug build:
/// `<ul><li>` nested to the bound, a tree 1,024 elements deep; the property
/// test in `tests/hostile_documents.rs` runs on 2 MiB), so 16 MiB leaves a
/// wide margin.
/// Untouched stack pages cost no memory.
pub const PARSER_STACK_BYTES: usize = 16 << 20;
/// Deepest code nesting (brackets, or syntax-tree depth) split with
/// tree-sitter; past it, code is split as plain text.
pub const MAX_CODE_DEPTH: usize = 512;
/// Deepest markdown nesting (block quotes, list levels) split as markdown.
pub const MAX_MARKDOWN_DEPTH: usize = 100;

/// Elements that never hold children, or whose end tag is so often left out
/// that counting them would make every old-style page look deep (`<p>`,
/// `<li>`: a parser closes the previous one when the next starts). They do
/// not deepen the estimate; a parser's tree is then at most about twice as
/// deep as the estimate (`<ul><li>` per level, `<table><tbody><tr><td>` with
/// an implied `<tbody>`), which [`PARSER_STACK_BYTES`] allows for.
#[rustfmt::skip]
const NON_NESTING_TAGS: &[&[u8]] = &[
    b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input", b"link", b"meta",
    b"param", b"source", b"track", b"wbr", b"p", b"li", b"dt", b"dd", b"option", b"!doctype",
];

/// Elements whose content is raw text (no tags inside).
const RAW_TEXT_TAGS: &[&[u8]] = &[b"script", b"style", b"textarea", b"title", b"xmp"];

/// An upper estimate of how deeply the elements of `html` nest: start tags
/// minus end tags, ignoring void elements, elements whose end tag is often
/// implied, comments and raw text. Mis-nested or unclosed markup can only
/// make it larger than the parser's tree depth, never smaller, except for
/// implied-end elements, which nest only one level at a time in a parser.
pub fn html_depth(html: &str) -> usize {
    // Open elements, innermost last, each with whether it is foreign (SVG,
    // MathML). An end tag closes the nearest open element of its name among
    // the innermost few (a parser ignores an end tag with no match);
    // searching only those keeps the pass linear, and what it misses only
    // makes the estimate larger.
    const END_TAG_SEARCH: usize = 16;
    let mut open: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut deepest = 0usize;
    let mut pieces = Pieces::new(html);
    while let Some(piece) = pieces.next() {
        let Piece::Tag(tag) = piece else { continue };
        if NON_NESTING_TAGS.contains(&tag.name.as_slice()) {
            continue;
        }
        if tag.closing {
            let searched = open.len().saturating_sub(END_TAG_SEARCH);
            if let Some(at) = open[searched..]
                .iter()
                .rposition(|(name, _)| *name == tag.name)
            {
                open.truncate(searched + at);
            }
            continue;
        }
        let in_foreign = |open: &[(Vec<u8>, bool)]| {
            open.last().is_some_and(|(name, foreign)| {
                *foreign && !INTEGRATION_POINTS.contains(&name.as_slice())
            })
        };
        // An HTML element inside foreign content ends it, as in a parser.
        if in_foreign(&open) && BREAKOUT_TAGS.contains(&tag.name.as_slice()) {
            while open.last().is_some_and(|(_, foreign)| *foreign) {
                open.pop();
            }
        }
        let foreign = FOREIGN_ROOTS.contains(&tag.name.as_slice()) || in_foreign(&open);
        // `<div/>` opens a div like `<div>`: only foreign elements close
        // themselves.
        if tag.self_closing && foreign {
            continue;
        }
        let raw_text = !foreign && RAW_TEXT_TAGS.contains(&tag.name.as_slice());
        open.push((tag.name, foreign));
        deepest = deepest.max(open.len());
        if raw_text {
            let (name, _) = open.pop().expect("just pushed");
            pieces.skip_to_end_tag(&name);
        }
    }
    deepest
}

/// Roots of foreign content, where `/>` closes an element and `<title>`
/// or `<style>` are ordinary elements.
const FOREIGN_ROOTS: &[&[u8]] = &[b"svg", b"math"];
/// Foreign elements whose children are HTML again.
const INTEGRATION_POINTS: &[&[u8]] = &[
    b"foreignobject",
    b"desc",
    b"title",
    b"annotation-xml",
    b"mi",
    b"mo",
    b"mn",
    b"ms",
    b"mtext",
];
/// HTML start tags that end foreign content (the HTML standard's list).
#[rustfmt::skip]
const BREAKOUT_TAGS: &[&[u8]] = &[
    b"b", b"big", b"blockquote", b"body", b"br", b"center", b"code", b"dd", b"div", b"dl",
    b"dt", b"em", b"embed", b"h1", b"h2", b"h3", b"h4", b"h5", b"h6", b"head", b"hr", b"i",
    b"img", b"li", b"listing", b"menu", b"meta", b"nobr", b"ol", b"p", b"pre", b"ruby", b"s",
    b"small", b"span", b"strong", b"strike", b"sub", b"sup", b"table", b"tt", b"u", b"ul",
    b"var",
];

/// Deepest parsed HTML tree handed to the recursive markdown converter.
pub const MAX_HTML_TREE_DEPTH: usize = 1024;
/// Most block quotes and lists nested in one another converted to markdown:
/// the converter re-prefixes every line of their content at every level,
/// so its output grows with this depth times the content.
pub const MAX_HTML_BLOCK_NESTING: usize = 32;

/// Whether a parsed page is shallow enough for the recursive converter: its
/// real tree depth (the estimate of [`html_depth`] only keeps the parser's
/// cost down) and its nesting of quotes and lists. An iterative walk.
pub fn html_tree_fits(document: &scraper::Html) -> bool {
    use ego_tree::iter::Edge;
    const PREFIXING: &[&str] = &["blockquote", "ul", "ol", "li", "dl", "dd", "menu"];
    let (mut depth, mut blocks) = (0usize, 0usize);
    for edge in document.tree.root().traverse() {
        let prefixing = |node: &ego_tree::NodeRef<'_, scraper::Node>| {
            node.value()
                .as_element()
                .is_some_and(|element| PREFIXING.contains(&element.name()))
        };
        match edge {
            Edge::Open(node) => {
                depth += 1;
                blocks += usize::from(prefixing(&node));
                if depth > MAX_HTML_TREE_DEPTH || blocks > MAX_HTML_BLOCK_NESTING {
                    return false;
                }
            }
            Edge::Close(node) => {
                depth -= 1;
                blocks -= usize::from(prefixing(&node));
            }
        }
    }
    true
}

/// The text of `html` without any parser: tags dropped, the content of
/// scripts, styles and other chrome dropped, a line break per block element,
/// the common entities decoded. For documents too deep to convert.
pub fn html_text(html: &str) -> String {
    const DROPPED: &[&[u8]] = &[
        b"script",
        b"style",
        b"noscript",
        b"template",
        b"svg",
        b"head",
        b"iframe",
    ];
    const BLOCKS: &[&[u8]] = &[
        b"p",
        b"div",
        b"br",
        b"li",
        b"tr",
        b"h1",
        b"h2",
        b"h3",
        b"h4",
        b"h5",
        b"h6",
        b"pre",
        b"section",
        b"article",
        b"blockquote",
        b"table",
        b"ul",
        b"ol",
        b"hr",
        b"dd",
        b"dt",
    ];
    let mut text = String::with_capacity(html.len() / 2);
    let mut pieces = Pieces::new(html);
    while let Some(piece) = pieces.next() {
        match piece {
            Piece::Text(raw) => push_text(&mut text, raw),
            Piece::Tag(tag) if !tag.closing && DROPPED.contains(&tag.name.as_slice()) => {
                pieces.skip_to_end_tag(&tag.name);
            }
            Piece::Tag(tag) => {
                if BLOCKS.contains(&tag.name.as_slice())
                    && !text.ends_with('\n')
                    && !text.is_empty()
                {
                    text.push('\n');
                }
            }
        }
    }
    text.truncate(text.trim_end().len());
    text
}

/// A piece of HTML as the linear scanners see it.
enum Piece<'a> {
    Text(&'a str),
    Tag(Tag),
}

struct Tag {
    /// Lower-cased (`div`, `!doctype`).
    name: Vec<u8>,
    closing: bool,
    self_closing: bool,
}

/// Splits HTML into text and tags in one forward pass, dropping comments.
/// No tree, no recursion: what the depth estimate and the plain-text
/// fallback both read.
struct Pieces<'a> {
    html: &'a str,
    position: usize,
}

impl<'a> Pieces<'a> {
    fn new(html: &'a str) -> Self {
        Pieces { html, position: 0 }
    }

    /// Jumps past the raw-text content of the element `name` just opened
    /// (a script, a style), to its end tag.
    fn skip_to_end_tag(&mut self, name: &[u8]) {
        let mut end_tag = b"</".to_vec();
        end_tag.extend_from_slice(name);
        let bytes = self.html.as_bytes();
        self.position = find_ignore_case(bytes, self.position, &end_tag).unwrap_or(bytes.len());
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        let bytes = self.html.as_bytes();
        loop {
            let start = self.position;
            if start >= bytes.len() {
                return None;
            }
            let Some(open) = find(bytes, start, b"<") else {
                self.position = bytes.len();
                return Some(Piece::Text(&self.html[start..]));
            };
            if open > start {
                self.position = open;
                return Some(Piece::Text(&self.html[start..open]));
            }
            let after = open + 1;
            if bytes[after..].starts_with(b"!--") {
                let body = after + 3;
                // `<!-->` and `<!--->` are whole (empty) comments.
                self.position = if bytes[body..].starts_with(b">") {
                    body + 1
                } else if bytes[body..].starts_with(b"->") {
                    body + 2
                } else {
                    find(bytes, body, b"-->").map_or(bytes.len(), |end| end + 3)
                };
                continue;
            }
            let closing = bytes.get(after) == Some(&b'/');
            let name_start = after + usize::from(closing);
            let name_end = bytes[name_start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'!' || *b == b'-'))
                .map_or(bytes.len(), |n| name_start + n);
            if name_end == name_start {
                // A `<` in text (`a < b`).
                self.position = after;
                return Some(Piece::Text(&self.html[open..after]));
            }
            // An unterminated tag: nothing after it is markup or text.
            let tag_end = find(bytes, name_end, b">")?;
            self.position = tag_end + 1;
            return Some(Piece::Tag(Tag {
                name: bytes[name_start..name_end].to_ascii_lowercase(),
                closing,
                self_closing: bytes[..tag_end].ends_with(b"/"),
            }));
        }
    }
}

/// Appends `raw` (text between tags) with the common entities decoded.
fn push_text(out: &mut String, raw: &str) {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let entity = [
            ("&amp;", "&"),
            ("&lt;", "<"),
            ("&gt;", ">"),
            ("&quot;", "\""),
            ("&#39;", "'"),
            ("&apos;", "'"),
            ("&nbsp;", " "),
        ]
        .into_iter()
        .find(|(name, _)| rest.starts_with(name));
        match entity {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

/// How deeply brackets — `(`, `[`, `{` — nest in `code`, strings and
/// comments included (an over-estimate only makes code split as text).
pub fn bracket_depth(code: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in code.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How deep a parsed syntax tree is, walked with a cursor (no recursion).
/// Stops counting once past `limit`.
pub fn tree_depth(tree: &tree_sitter::Tree, limit: usize) -> usize {
    let mut cursor = tree.walk();
    let (mut depth, mut deepest) = (1usize, 1usize);
    loop {
        if cursor.goto_first_child() {
            depth += 1;
            deepest = deepest.max(depth);
            if deepest > limit {
                return deepest;
            }
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return deepest;
            }
            depth -= 1;
        }
    }
}

/// An upper estimate of how deeply markdown blocks nest: per line, the
/// block-quote markers, list markers and indentation (two spaces a level)
/// that open it, e.g. `> > - - item` is four levels.
pub fn markdown_depth(markdown: &str) -> usize {
    let mut deepest = 0usize;
    for line in markdown.lines() {
        let bytes = line.as_bytes();
        let (mut depth, mut spaces, mut index) = (0usize, 0usize, 0usize);
        while index < bytes.len() {
            let followed_by_space = bytes
                .get(index + 1)
                .is_some_and(|b| matches!(b, b' ' | b'\t'));
            match bytes[index] {
                // A marker's own following space is not indentation.
                b'>' | b'-' | b'*' | b'+' if followed_by_space => {
                    depth += 1;
                    index += 1;
                }
                b'>' => depth += 1,
                b' ' => spaces += 1,
                b'\t' => spaces += 4,
                b'0'..=b'9' => {
                    let digits = bytes[index..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    let after = index + digits;
                    let marker = matches!(bytes.get(after), Some(b'.' | b')'))
                        && bytes
                            .get(after + 1)
                            .is_none_or(|b| matches!(b, b' ' | b'\t'));
                    if !marker {
                        break;
                    }
                    depth += 1;
                    index = after + 1;
                }
                _ => break,
            }
            index += 1;
        }
        deepest = deepest.max(depth + spaces / 2);
    }
    deepest
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

fn find_ignore_case(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
        .map(|at| from + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_depth_counts_real_nesting_only() {
        assert_eq!(
            html_depth("<html><body><div><p>a<p>b</div></body></html>"),
            3
        );
        assert_eq!(html_depth("<div><br><img src=x><input/></div>"), 1);
        assert_eq!(
            html_depth("<!-- <div><div> --><script>if (a<b) {'<div>'}</script>"),
            1
        );
        assert_eq!(html_depth("a < b and c<d"), 0);
        assert_eq!(html_depth(&"<div>".repeat(1000)), 1000);
        assert_eq!(html_depth(&"<b><i>".repeat(300)), 600);
        // Tricks a parser does not fall for: `<div/>` opens a div, an end
        // tag with no open match closes nothing, `<!-->` is a whole comment,
        // and inside SVG `<title>` holds markup.
        assert_eq!(html_depth(&"<div/>".repeat(700)), 700);
        assert_eq!(html_depth(&"<div></x>".repeat(700)), 700);
        assert_eq!(html_depth(&format!("<!-->{}", "<div>".repeat(700))), 700);
        assert_eq!(
            html_depth(&format!("<svg><title>{}", "<div>".repeat(700))),
            702
        );
        assert_eq!(html_depth("<svg><path/><path/><g><path/></g></svg>"), 2);
        assert_eq!(html_depth(&format!("<svg/>{}", "<div/>".repeat(700))), 700);
        assert_eq!(
            html_depth(&format!("<svg><div></div>{}", "<path/>".repeat(700))),
            700
        );
        assert_eq!(
            html_depth(&format!("<svg><foreignObject>{}", "<x/>".repeat(700))),
            702
        );
    }

    #[test]
    fn html_text_keeps_text_and_drops_chrome() {
        let text = html_text(
            "<html><head><title>T</title><style>p{}</style></head><body><h1>Guide</h1>\
             <p>Fish &amp; chips</p><script>alert('<p>x</p>')</script><div>a &lt; b</div></body></html>",
        );
        assert_eq!(text, "Guide\nFish & chips\na < b");
    }

    #[test]
    fn bracket_and_markdown_depths() {
        assert_eq!(bracket_depth("f(a[1], {b: (2)})"), 3);
        assert_eq!(bracket_depth(")))((("), 3);
        assert_eq!(markdown_depth("# Title\n\n- a\n  - b\n    - c\n"), 3);
        assert_eq!(markdown_depth("> > - quoted list"), 3);
        assert_eq!(markdown_depth("1. one\n2) two\n2024 was a year"), 1);
        assert_eq!(markdown_depth(&">".repeat(500)), 500);
        assert_eq!(markdown_depth(&"-\t".repeat(500)), 500);
    }
}
