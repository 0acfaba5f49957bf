//! Jupyter notebooks (`.ipynb`): markdown cells as they are, code cells as
//! fenced blocks in the kernel's language, in order; outputs are left out
//! (they are results, often huge, and rarely what a search should find).

use serde::Deserialize;
use serde_json::Value;

use super::converted::{Builder, Converted, Markdown};
use super::{Limits, Skipped};

#[derive(Deserialize)]
struct Notebook {
    #[serde(default)]
    cells: Vec<Cell>,
    #[serde(default)]
    metadata: Value,
}

#[derive(Deserialize)]
struct Cell {
    cell_type: String,
    #[serde(default)]
    source: Source,
}

/// A cell's source: one string or a list of lines (nbformat allows both).
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Source {
    Text(String),
    Lines(Vec<String>),
    #[default]
    None,
}

impl Source {
    fn text(&self) -> String {
        match self {
            Source::Text(text) => text.clone(),
            Source::Lines(lines) => lines.concat(),
            Source::None => String::new(),
        }
    }
}

pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let notebook: Notebook = serde_json::from_slice(bytes)
        .map_err(|e| Skipped(format!("not a Jupyter notebook: {e}")))?;
    let language = notebook
        .metadata
        .pointer("/kernelspec/language")
        .or_else(|| notebook.metadata.pointer("/language_info/name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_'))
        .collect::<String>();
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    builder.title(
        notebook
            .metadata
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_string),
    );
    let mut markdown = Markdown::default();
    for cell in &notebook.cells {
        let source = cell.source.text();
        if source.trim().is_empty() {
            continue;
        }
        match cell.cell_type.as_str() {
            "markdown" => markdown.block(builder.budget(), &source)?,
            "code" => {
                // A fence longer than any backtick run inside the code.
                let longest = source.split(|c| c != '`').map(str::len).max().unwrap_or(0);
                let fence = "`".repeat(longest.max(2) + 1);
                markdown.block(
                    builder.budget(),
                    &format!("{fence}{language}\n{}\n{fence}", source.trim_end()),
                )?
            }
            _ => {}
        }
    }
    builder.markdown(markdown, None);
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_in_order_without_outputs() {
        let nb = br##"{"cells":[
            {"cell_type":"markdown","source":["# Title\n","Intro text."]},
            {"cell_type":"code","source":"print('hi')","outputs":[{"text":"SECRET OUTPUT"}]},
            {"cell_type":"raw","source":"raw stuff"}],
            "metadata":{"kernelspec":{"language":"python"}}}"##;
        let converted = convert(nb, "application/x-ipynb+json", &Limits::for_tests()).unwrap();
        let crate::extract::converted::Section::Text { markdown, .. } = &converted.sections[0]
        else {
            panic!()
        };
        assert_eq!(
            markdown,
            "# Title\nIntro text.\n\n```python\nprint('hi')\n```"
        );
    }
}
