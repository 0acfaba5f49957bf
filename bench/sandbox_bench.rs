//! What the converter sandbox costs per document (issue 31): the same
//! documents converted by `extract-document` children with and without
//! `--sandbox` (Landlock + seccomp + no_new_privs), alternating, in one
//! run. Prints ms per document each way and the ratio; the CPU is named.
//!
//! `cargo test --release --test sandbox_bench -- --ignored --nocapture`
//! (needs the test venv for reportlab/python-docx, and PDFium).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use chroma_syncd::extract::isolate::{Converter, IsolationSettings};
use chroma_syncd::extract::{DocumentFormat, Limits};
use common::*;

const ROUNDS: usize = 40;

fn converter(sandbox: bool) -> Converter {
    Converter::new(IsolationSettings {
        program: PathBuf::from(env!("CARGO_BIN_EXE_chroma-syncd")),
        limits: Limits {
            max_extracted_bytes: 64 << 20,
            pdfium_library: Some(home().join(".cache/chroma-syncd/pdfium/libpdfium.so")),
            ocr: None,
            figures: None,
        },
        max_seconds: 60.0,
        max_memory_bytes: 2 << 30,
        max_concurrent: 1,
        sandbox,
        ocr_off: None,
    })
}

/// A small PDF and DOCX made with the venv's reportlab and python-docx.
fn documents(dir: &std::path::Path) -> Vec<(DocumentFormat, bytes::Bytes)> {
    let script = format!(
        r#"
from reportlab.pdfgen import canvas
c = canvas.Canvas("{dir}/a.pdf")
for page in range(3):
    for line in range(40):
        c.drawString(72, 760 - line * 16, f"Page {{page}} line {{line}}: the keeper logged the storm.")
    c.showPage()
c.save()
import docx
d = docx.Document()
for i in range(60):
    d.add_paragraph(f"Paragraph {{i}}: the lighthouse keeper's log of the northern cape.")
d.save("{dir}/a.docx")
"#,
        dir = dir.display()
    );
    let status = std::process::Command::new(venv().join("bin/python"))
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    vec![
        (
            DocumentFormat::Pdf,
            bytes::Bytes::from(std::fs::read(dir.join("a.pdf")).unwrap()),
        ),
        (
            DocumentFormat::Docx,
            bytes::Bytes::from(std::fs::read(dir.join("a.docx")).unwrap()),
        ),
    ]
}

#[test]
#[ignore]
fn sandbox_cost_per_document() {
    let dir = tempfile::tempdir().unwrap();
    let documents = documents(dir.path());
    let (plain, confined) = (converter(false), converter(true));
    let mut seconds = [0.0f64; 2];
    for _ in 0..ROUNDS {
        for (i, converter) in [&plain, &confined].into_iter().enumerate() {
            for (format, bytes) in &documents {
                let started = Instant::now();
                let converted = runtime()
                    .block_on(converter.convert(*format, bytes.clone()))
                    .expect("converted");
                seconds[i] += started.elapsed().as_secs_f64();
                assert!(!converted.sections.is_empty());
            }
        }
    }
    let per_document = |s: f64| s * 1e3 / (ROUNDS * documents.len()) as f64;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .unwrap_or_default()
        .to_string();
    println!("{cpu}");
    println!(
        "unsandboxed: {:.2} ms/document; sandboxed: {:.2} ms/document; ratio {:.3} ({} documents each way)",
        per_document(seconds[0]),
        per_document(seconds[1]),
        seconds[1] / seconds[0],
        ROUNDS * documents.len()
    );
}
