//! Pictures a converter handed back ([`crate::extract::figures`]),
//! described by the vision model ([`crate::vision`]) and put where their
//! markers stand, before the document is chunked.
//!
//! A description becomes `![description](figure)`, a paragraph of its own
//! that the chunker keeps with its neighbours. A picture the model could
//! not describe (the endpoint still down after its retries, a refused key)
//! costs only its description: the marker is removed, the document's text
//! is kept, and the reason is one of the document's `omitted_parts` (the
//! key is never in it; the daemon's secrets are scrubbed from every stored
//! message too). The document is then stored at this version like any
//! other, so it is described again only when it changes.

use std::collections::BTreeMap;

use crate::extract::figures::marker;
use crate::extract::{Converted, Section, Skipped};
use crate::vision::VisionClient;

/// `converted` with its figures described in place (and the figures
/// themselves dropped), or why nothing is left to index.
pub async fn describe(
    client: &VisionClient,
    nonce: &str,
    mut converted: Converted,
) -> Result<Converted, Skipped> {
    let figures = std::mem::take(&mut converted.figures);
    if figures.is_empty() {
        return Ok(converted);
    }
    // The client bounds requests in flight; these only wait for a slot.
    let answers =
        futures::future::join_all(figures.iter().map(|figure| client.describe(&figure.png))).await;
    let mut failures: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let replacements: Vec<String> = answers
        .into_iter()
        .enumerate()
        .map(|(index, answer)| match answer {
            Ok(description) => format!("![{}](figure)", escape(&description)),
            Err(error) => {
                failures.entry(error.to_string()).or_default().push(index);
                String::new()
            }
        })
        .collect();
    for (reason, failed) in failures {
        tracing::warn!(pictures = failed.len(), %reason, "pictures not described");
        let pages: Vec<String> = failed
            .iter()
            .filter_map(|&index| figures[index].page)
            .map(|page| page.to_string())
            .collect();
        let place = if pages.is_empty() {
            String::new()
        } else {
            format!(" (page {})", pages.join(", "))
        };
        converted.omitted.push(format!(
            "{} of {} pictures{place}: not described: {reason}",
            failed.len(),
            figures.len()
        ));
    }
    for section in &mut converted.sections {
        if let Section::Text { markdown, .. } = section
            && markdown.contains(nonce)
        {
            for (index, replacement) in replacements.iter().enumerate() {
                *markdown = markdown.replace(&marker(nonce, index), replacement);
            }
            *markdown = tidy(markdown);
        }
    }
    converted.sections.retain(
        |section| !matches!(section, Section::Text { markdown, .. } if markdown.trim().is_empty()),
    );
    if converted.sections.is_empty() {
        let why = converted
            .omitted
            .first()
            .map_or("no text to index".to_string(), |first| {
                format!("no text to index ({first})")
            });
        return Err(Skipped(why));
    }
    Ok(converted)
}

/// A description as image alt text: brackets escaped so it cannot close
/// the `![…]` early.
fn escape(description: &str) -> String {
    description
        .replace('\\', "\\\\")
        .replace('[', "\\[")
        .replace(']', "\\]")
}

/// Markdown with the blank paragraphs a removed marker left squeezed out.
fn tidy(markdown: &str) -> String {
    markdown
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_in_a_description_cannot_end_its_alt_text() {
        assert_eq!(escape("a [red] \\ buoy"), "a \\[red\\] \\\\ buoy");
        assert_eq!(tidy("one\n\n\n\ntwo\n\n"), "one\n\ntwo");
    }
}
