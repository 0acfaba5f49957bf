//! Spreadsheets (`.xlsx`, `.xlsm`, `.xls`, `.ods` through calamine) and
//! CSV files (the csv crate): each sheet becomes a table section whose
//! first non-empty row is the header the chunker repeats in every chunk.

use std::io::Cursor;

use calamine::{Data, Reader, open_workbook_auto_from_rs};

use super::converted::{Builder, Converted};
use super::package::Package;
use super::xml::first_text;
use super::{Limits, Skipped};

pub fn convert(bytes: &[u8], content_type: &str, limits: &Limits) -> Result<Converted, Skipped> {
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    builder.title(title(bytes, limits));
    let mut workbook = open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| Skipped(format!("not a readable spreadsheet: {e}")))?;
    for name in workbook.sheet_names() {
        let range = match workbook.worksheet_range(&name) {
            Ok(range) => range,
            Err(e) => {
                builder.omit(format!("sheet {name}: {e}"));
                continue;
            }
        };
        let mut rows = Vec::new();
        for row in range.rows() {
            let cells: Vec<String> = row.iter().map(cell_text).collect();
            // Charged as read, so a sheet of a million cells stops early.
            builder
                .budget()
                .charge(cells.iter().map(|c| c.len() + 3).sum())?;
            rows.push(cells);
        }
        builder.table(Some(name.clone()), rows)?;
    }
    builder.finish()
}

/// Core properties title of OOXML and OpenDocument workbooks.
fn title(bytes: &[u8], limits: &Limits) -> Option<String> {
    let mut package = Package::open(bytes, limits.part_cap()).ok()?;
    package.core_title().or_else(|| {
        package
            .walk_xml("meta.xml", |xml| Ok(first_text(xml, "title")))
            .ok()
            .flatten()
            .flatten()
    })
}

fn cell_text(cell: &Data) -> String {
    match cell {
        Data::DateTime(value) => match value.as_datetime() {
            Some(at) if at.time() == chrono::NaiveTime::MIN => at.date().to_string(),
            Some(at) => at.to_string(),
            None => value.to_string(),
        },
        Data::Error(_) => String::new(),
        other => other.to_string(),
    }
}

/// A CSV file as one table (no sheet name). Rows of any width are kept.
pub fn convert_csv(
    bytes: &[u8],
    content_type: &str,
    limits: &Limits,
) -> Result<Converted, Skipped> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes)
        .map_err(|_| Skipped("binary content (not valid UTF-8)".to_string()))?;
    let mut builder = Builder::new(content_type, limits.max_extracted_bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(sniff_delimiter(bytes))
        .from_reader(bytes);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| Skipped(format!("not a readable CSV file: {e}")))?;
        let cells: Vec<String> = record.iter().map(str::to_string).collect();
        builder
            .budget()
            .charge(cells.iter().map(|c| c.len() + 3).sum())?;
        rows.push(cells);
    }
    builder.table(None, rows)?;
    builder.finish()
}

/// `,` unless the first line has more semicolons or tabs (European
/// spreadsheets export `;`).
fn sniff_delimiter(bytes: &[u8]) -> u8 {
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first.iter().filter(|b| **b == d).count();
    [b';', b'\t']
        .into_iter()
        .filter(|d| count(*d) > count(b','))
        .max_by_key(|d| count(*d))
        .unwrap_or(b',')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::converted::Section;

    #[test]
    fn csv_rows_become_a_table_with_its_header() {
        let limits = Limits::for_tests();
        let converted = convert_csv(
            b"city;people\nOslo;700000\n\"Semi;colon\";1\n",
            "text/csv",
            &limits,
        )
        .unwrap();
        let Section::Table { header, rows, .. } = &converted.sections[0] else {
            panic!("{converted:?}");
        };
        assert_eq!(header, "| city | people |\n| --- | --- |");
        assert_eq!(rows[0], "| Oslo | 700000 |");
        assert_eq!(rows[1], "| Semi;colon | 1 |");
    }
}
