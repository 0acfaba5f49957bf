//! Cutting a large text body into segments that end at line breaks (a
//! paragraph break where one is near), so no chunk spans two segments and
//! no character is split. Shared by every source that streams text (S3's
//! large objects, uploaded files).
//!
//! Where segments end depends on the bytes alone, never on how the network
//! or the disk split them into pieces, so an unchanged document gives the
//! same chunks (and IDs) every time.

use bytes::{Bytes, BytesMut};

/// Pieces in, segments out. Memory holds about two segments.
#[derive(Debug)]
pub struct Segments {
    buffer: BytesMut,
    segment_bytes: usize,
}

impl Segments {
    /// At least a few KiB: a cut must find a line or character boundary.
    pub fn new(segment_bytes: u64) -> Self {
        Segments {
            buffer: BytesMut::new(),
            segment_bytes: segment_bytes.max(4096) as usize,
        }
    }

    /// Whether another piece must be pushed before a segment can be cut.
    pub fn wants_more(&self) -> bool {
        self.buffer.len() <= self.segment_bytes
    }

    pub fn push(&mut self, piece: &[u8]) {
        self.buffer.extend_from_slice(piece);
    }

    /// The next segment: call when [`Self::wants_more`] is false, or when
    /// the body ended (then whatever is left). `None` once empty.
    pub fn cut(&mut self) -> Option<Bytes> {
        if self.buffer.is_empty() {
            return None;
        }
        let cut = if self.buffer.len() > self.segment_bytes {
            segment_end(&self.buffer[..self.segment_bytes])
        } else {
            self.buffer.len()
        };
        Some(self.buffer.split_to(cut).freeze())
    }
}

/// Where a full buffer is cut: after its last paragraph break in the second
/// half, else after its last line break there, else at the last character
/// boundary (a single line longer than a segment).
fn segment_end(buffer: &[u8]) -> usize {
    let half = buffer.len() / 2;
    let tail = &buffer[half..];
    if let Some(at) = tail.windows(2).rposition(|w| w == b"\n\n") {
        return half + at + 2;
    }
    if let Some(at) = tail.iter().rposition(|b| *b == b'\n') {
        return half + at + 1;
    }
    // UTF-8 continuation bytes are 0b10xx_xxxx: back up to a leading byte.
    let mut end = buffer.len();
    while end > 1 && buffer[end - 1] & 0b1100_0000 == 0b1000_0000 {
        end -= 1;
    }
    if end > 1 && buffer[end - 1] >= 0b1100_0000 {
        end - 1
    } else {
        buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cuts `text` fed in pieces of `piece` bytes.
    fn cut_all(text: &[u8], piece: usize, segment: u64) -> Vec<Bytes> {
        let mut segments = Segments::new(segment);
        let mut out = Vec::new();
        for part in text.chunks(piece) {
            segments.push(part);
            while !segments.wants_more() {
                out.extend(segments.cut());
            }
        }
        while let Some(rest) = segments.cut() {
            out.push(rest);
        }
        out
    }

    #[test]
    fn segments_end_at_a_paragraph_then_a_line_then_a_character() {
        assert_eq!(segment_end(b"aaaa\n\nbbbb\n\ncc\ndd"), 12);
        assert_eq!(segment_end(b"aaaa\nbbbb\ncc"), 10);
        // No break in the second half: a paragraph break early on is not used.
        assert_eq!(segment_end(b"a\n\nbbbbbbbbbbbbbbbbbb"), 21);
        // One long line: never inside a character (é is 2 bytes, ✓ is 3).
        let text = "xxxxxxxé✓".as_bytes();
        assert_eq!(segment_end(text), 9);
        assert!(std::str::from_utf8(&text[..segment_end(text)]).is_ok());
        assert!(std::str::from_utf8(&text[..segment_end(&text[..11])]).is_ok());
    }

    #[test]
    fn segments_end_at_line_breaks_whatever_the_pieces() {
        let text: Vec<u8> = (0..3000)
            .flat_map(|i| format!("line {i} é\n").into_bytes())
            .collect();
        let a = cut_all(&text, 7, 4096);
        let b = cut_all(&text, 5000, 4096);
        assert_eq!(a, b);
        assert!(a.len() > 3);
        assert_eq!(a.concat(), text);
        for segment in &a[..a.len() - 1] {
            assert!(segment.ends_with(b"\n"));
            assert!(segment.len() <= 4096);
        }
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary() {
        let text = "é".repeat(5000).into_bytes();
        let segments = cut_all(&text, 1000, 4096);
        assert_eq!(segments.concat(), text);
        for segment in segments {
            assert!(std::str::from_utf8(&segment).is_ok());
        }
    }
}
