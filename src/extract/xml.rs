//! The XML inside office documents, read as a flat stream of open, close
//! and text events (quick-xml; no tree is built, so memory does not grow
//! with the document and nesting depth costs nothing but a counter).

use std::io::BufRead;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use super::Skipped;

/// An element's local name (no namespace prefix) and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    attrs: Vec<(String, String)>,
}

impl Tag {
    /// The attribute with this local name (`w:val` → `val`) or, where a
    /// prefix tells two apart, this qualified name (`r:id`), unescaped.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    fn from_start(start: &BytesStart<'_>) -> Tag {
        let attrs = start
            .attributes()
            .with_checks(false)
            .filter_map(Result::ok)
            .flat_map(|attr| {
                let value = attr
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map(|v| v.into_owned())
                    .unwrap_or_else(|_| attr.value.clone().into_owned());
                let qualified = attr.key.as_ref().to_string();
                let local = attr.key.local_name().into_inner().to_string();
                // Both spellings: `val` for most lookups, `r:id` where the
                // prefix tells two attributes of one name apart.
                [(local, value.clone()), (qualified, value)]
            })
            .collect();
        Tag {
            name: start.local_name().into_inner().to_string(),
            attrs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Open(Tag),
    Close(String),
    Text(String),
}

/// XML as [`Node`]s; an empty element (`<w:br/>`) is an open then a close.
pub struct XmlStream<R: BufRead> {
    reader: Reader<R>,
    buffer: Vec<u8>,
    pending_close: Option<String>,
    what: String,
}

impl<R: BufRead> XmlStream<R> {
    /// `what` names the part in errors (`word/document.xml`).
    pub fn new(source: R, what: &str) -> Self {
        let mut reader = Reader::from_reader(source);
        reader.config_mut().check_end_names = false;
        XmlStream {
            reader,
            buffer: Vec::new(),
            pending_close: None,
            what: what.to_string(),
        }
    }
}

impl<R: BufRead> Iterator for XmlStream<R> {
    type Item = Result<Node, Skipped>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(name) = self.pending_close.take() {
            return Some(Ok(Node::Close(name)));
        }
        loop {
            self.buffer.clear();
            let event = match self.reader.read_event_into(&mut self.buffer) {
                Ok(event) => event,
                Err(error) => {
                    return Some(Err(Skipped(format!(
                        "{} is not well-formed XML: {error}",
                        self.what
                    ))));
                }
            };
            return Some(Ok(match event {
                Event::Start(start) => Node::Open(Tag::from_start(&start)),
                Event::Empty(start) => {
                    let tag = Tag::from_start(&start);
                    self.pending_close = Some(tag.name.clone());
                    Node::Open(tag)
                }
                Event::End(end) => Node::Close(end.local_name().into_inner().to_string()),
                Event::Text(text) => Node::Text(text.xml10_content().into_owned()),
                Event::CData(data) => Node::Text(data.into_inner().into_owned()),
                Event::GeneralRef(reference) => {
                    let text = match reference.resolve_char_ref() {
                        Ok(Some(ch)) => ch.to_string(),
                        _ => {
                            let entity = format!("&{};", reference.xml10_content());
                            quick_xml::escape::unescape(&entity)
                                .map(|t| t.into_owned())
                                .unwrap_or_default()
                        }
                    };
                    Node::Text(text)
                }
                Event::Eof => return None,
                _ => continue,
            }));
        }
    }
}

/// The text of the first element named `local` in the stream, e.g.
/// `dc:title` in a document's core properties.
pub fn first_text<R: BufRead>(stream: &mut XmlStream<R>, local: &str) -> Option<String> {
    let mut inside = false;
    let mut text = String::new();
    for node in stream {
        match node.ok()? {
            Node::Open(tag) if tag.name == local => inside = true,
            Node::Close(name) if name == local && inside => break,
            Node::Text(t) if inside => text.push_str(&t),
            _ => {}
        }
    }
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_flatten_and_resolve_entities() {
        let xml = br#"<w:p a:x="1 &amp; 2"><w:t>Fish &amp; chips &#233;</w:t><w:br/></w:p>"#;
        let nodes: Vec<Node> = XmlStream::new(&xml[..], "t")
            .collect::<Result<_, _>>()
            .unwrap();
        let Node::Open(p) = &nodes[0] else { panic!() };
        assert_eq!(p.name, "p");
        assert_eq!(p.attr("x"), Some("1 & 2"));
        assert_eq!(p.attr("a:x"), Some("1 & 2"));
        let text: String = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Fish & chips é");
        assert!(nodes.contains(&Node::Close("br".into())));
    }

    #[test]
    fn broken_xml_is_a_reason_not_a_panic() {
        let nodes: Vec<_> = XmlStream::new(&b"<a><b></a>&bogus;<"[..], "part").collect();
        assert!(nodes.iter().any(Result::is_err) || !nodes.is_empty());
    }
}
