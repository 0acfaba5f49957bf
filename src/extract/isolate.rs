//! Document conversion in a child process with limits.
//!
//! PDF and office parsers read bytes anyone can write, and a parser can be
//! made to loop, to allocate without bound or (PDFium is C++) to crash. So
//! the daemon never runs them itself: each document is converted by a
//! fresh `chroma-syncd extract-document` child whose address space, CPU
//! time and open files are capped (`setrlimit`), whose environment is empty
//! (no secret can leak through it), and which is killed when
//! `[extract] max_seconds_per_document` passes. Whatever happens to the
//! child, the document ends as [`Skipped`] with the reason and the daemon
//! carries on.
//!
//! Protocol: the document's bytes on the child's stdin; one JSON
//! `Result<Converted, String>` on its stdout (bounded by
//! `max_extracted_bytes`); a crash says what it can on stderr.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::converted::Converted;
use super::format::DocumentFormat;
use super::{FigureSettings, Limits, OcrSettings, Skipped, convert};

/// The hidden subcommand the child runs.
pub const CHILD_COMMAND: &str = "extract-document";

/// How the daemon runs converters.
#[derive(Debug, Clone)]
pub struct IsolationSettings {
    /// The `chroma-syncd` binary (this process's own executable).
    pub program: PathBuf,
    pub limits: Limits,
    pub max_seconds: f64,
    /// Address-space cap of the child (`RLIMIT_AS`).
    pub max_memory_bytes: u64,
    /// Children running at once, across all jobs.
    pub max_concurrent: usize,
    /// Children confine themselves ([`super::sandbox`]) before reading.
    pub sandbox: bool,
    /// Why OCR is off, when it is (`limits.ocr` is `None`): image files
    /// are skipped with this reason without starting a child.
    pub ocr_off: Option<String>,
}

/// What one job asks of a conversion beyond the daemon's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvertOptions<'a> {
    /// OCR reads these languages (a source's own, checked when it was
    /// created) instead of `[extract.ocr] languages`.
    pub ocr_languages: Option<&'a [String]>,
    /// Hand pictures back for description, their markers carrying this
    /// nonce ([`super::figures`]); only when the daemon collects figures
    /// (`limits.figures`, from `[extract.vision]`).
    pub figure_nonce: Option<&'a str>,
}

/// Converts documents in child processes; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Converter {
    settings: Arc<IsolationSettings>,
    slots: Arc<Semaphore>,
}

impl Converter {
    pub fn new(settings: IsolationSettings) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        Converter {
            settings: Arc::new(settings),
            slots,
        }
    }

    /// `bytes` as `format`, converted by a child with the daemon's
    /// settings; every failure is a reason to skip the document.
    pub async fn convert(
        &self,
        format: DocumentFormat,
        bytes: bytes::Bytes,
    ) -> Result<Converted, Skipped> {
        self.convert_with(format, bytes, &ConvertOptions::default())
            .await
    }

    /// [`Converter::convert`], with what a job asks beyond the daemon's
    /// settings.
    pub async fn convert_with(
        &self,
        format: DocumentFormat,
        bytes: bytes::Bytes,
        options: &ConvertOptions<'_>,
    ) -> Result<Converted, Skipped> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Skipped("the daemon is shutting down".into()))?;
        let settings = &self.settings;
        let ocr = settings
            .limits
            .ocr
            .as_ref()
            .filter(|_| format.may_need_ocr())
            .map(|ocr| match options.ocr_languages {
                Some(languages) => OcrSettings {
                    languages: languages.to_vec(),
                    ..ocr.clone()
                },
                None => ocr.clone(),
            });
        let ocr = ocr.as_ref();
        if format.is_image() && ocr.is_none() {
            return Err(Skipped(settings.ocr_off.clone().unwrap_or_else(|| {
                "image files are read by OCR, which is off ([extract.ocr])".into()
            })));
        }
        let mut command = tokio::process::Command::new(&settings.program);
        command
            .arg(CHILD_COMMAND)
            .arg("--format")
            .arg(format_name(format))
            .arg("--max-extracted-bytes")
            .arg(settings.limits.max_extracted_bytes.to_string());
        if let Some(library) = &settings.limits.pdfium_library {
            command.arg("--pdfium-library").arg(library);
        }
        if settings.sandbox {
            command.arg("--sandbox");
        }
        let figures = settings
            .limits
            .figures
            .as_ref()
            .zip(options.figure_nonce)
            .map(|(figures, nonce)| FigureSettings {
                nonce: nonce.to_string(),
                ..figures.clone()
            });
        if let Some(figures) = &figures {
            command
                .arg("--figures")
                .arg(serde_json::to_string(figures).unwrap_or_default());
        }
        command.env_clear();
        if let Some(ocr) = ocr {
            command
                .arg("--ocr")
                .arg(serde_json::to_string(ocr).unwrap_or_default());
            // Tesseract's OpenMP teams would oversubscribe the cores the
            // converter's own OCR threads already use (ocrmypdf sets the
            // same); libgomp reads this when Tesseract is loaded.
            command.env("OMP_THREAD_LIMIT", "1");
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let memory = settings.max_memory_bytes;
        // The CPU cap backs up the wall-clock one for a child that ignores
        // SIGKILL's cousin: a tight loop is killed by the kernel either way.
        // OCR threads spend CPU time in parallel: each gets the wall time.
        let threads = ocr.map_or(1, |ocr| ocr.threads.max(1)) as f64;
        let cpu_seconds = (settings.max_seconds * threads).ceil() as u64 + 1;
        // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
        unsafe {
            command.pre_exec(move || limit_resources(memory, cpu_seconds));
        }
        let mut child = command
            .spawn()
            .map_err(|e| Skipped(format!("could not start the document converter: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        // Figures travel base64-encoded: 4 bytes for every 3.
        let figure_bytes = figures
            .as_ref()
            .map_or(0, |f| f.max_bytes / 3 * 4 + (64 << 10));
        let output_cap = settings.limits.max_extracted_bytes * 2 + (1 << 20) + figure_bytes;
        let run = async {
            let feed = async {
                // A child that stops reading (it failed early) closes the
                // pipe: that is not our error to report.
                let _ = stdin.write_all(&bytes).await;
                drop(stdin);
            };
            let (_, out, err) = tokio::join!(
                feed,
                read_capped(stdout, output_cap),
                read_capped(stderr, 16 * 1024)
            );
            let status = child.wait().await;
            (out, err, status)
        };
        let timeout = Duration::from_secs_f64(settings.max_seconds.max(0.1));
        let (out, err, status) = match tokio::time::timeout(timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                // Dropping the future dropped the child: `kill_on_drop`.
                return Err(Skipped(format!(
                    "converting took longer than max_seconds_per_document ({} s)",
                    settings.max_seconds
                )));
            }
        };
        let status =
            status.map_err(|e| Skipped(format!("waiting for the document converter: {e}")))?;
        let (out, overflowed) = out;
        if overflowed {
            return Err(Skipped(format!(
                "the extracted text exceeds max_extracted_bytes ({} bytes)",
                settings.limits.max_extracted_bytes
            )));
        }
        if status.success() {
            return match serde_json::from_slice::<Result<Converted, String>>(&out) {
                Ok(Ok(converted)) => Ok(converted),
                Ok(Err(reason)) => Err(Skipped(reason)),
                Err(e) => Err(Skipped(format!(
                    "the document converter answered nonsense: {e}"
                ))),
            };
        }
        Err(Skipped(crash_reason(status, &err.0, memory)))
    }
}

/// The hidden subcommand that checks OCR works ([`probe_ocr`]).
pub const PROBE_OCR_COMMAND: &str = "probe-ocr";

/// Whether OCR works with `settings`, checked in a child as converters
/// would run it (Tesseract loaded, its models read): Tesseract's version,
/// or why not. Run once at start; the daemon itself never loads Tesseract.
pub fn probe_ocr(
    program: &std::path::Path,
    settings: &super::OcrSettings,
) -> Result<String, String> {
    let json = serde_json::to_string(settings).map_err(|e| e.to_string())?;
    let output = std::process::Command::new(program)
        .arg(PROBE_OCR_COMMAND)
        .arg("--ocr")
        .arg(json)
        .env_clear()
        .env("OMP_THREAD_LIMIT", "1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start the OCR probe: {e}"))?;
    let said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if output.status.success() {
        Ok(said)
    } else if !said.is_empty() {
        Err(said)
    } else {
        Err(format!(
            "the OCR probe failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Loads a shared library for good (the handle is never closed), so that
/// later `dlopen`s of the same path need no file access.
fn preload(library: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(library.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: dlopen of a NUL-terminated path; a missing or bad library
    // returns NULL, which the PDF converter then reports as it always has.
    unsafe {
        libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
    }
}

fn format_name(format: DocumentFormat) -> String {
    serde_json::to_value(format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The format a `--format` word names.
pub fn parse_format(name: &str) -> Option<DocumentFormat> {
    serde_json::from_value(serde_json::Value::from(name)).ok()
}

fn limit_resources(memory: u64, cpu_seconds: u64) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_AS, memory)?;
    set(libc::RLIMIT_CPU, cpu_seconds)?;
    set(libc::RLIMIT_CORE, 0)?;
    // The child reads stdin and maybe the PDFium library: nothing else.
    set(libc::RLIMIT_NOFILE, 32)?;
    set(libc::RLIMIT_FSIZE, 0)?;
    Ok(())
}

/// `SIGABRT (signal 6)`, for messages operators read.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    format!("{name}, signal {signal}")
}

/// What a child that did not exit cleanly tells about why.
fn crash_reason(status: std::process::ExitStatus, stderr: &[u8], memory: u64) -> String {
    use std::os::unix::process::ExitStatusExt;
    let said = String::from_utf8_lossy(stderr);
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect::<String>();
    // Rust's allocator, C++'s `new` (PDFium) and glibc say it their ways.
    let out_of_memory = [
        "memory allocation",
        "out of memory",
        "bad_alloc",
        "Cannot allocate",
    ]
    .iter()
    .any(|phrase| {
        said.to_ascii_lowercase()
            .contains(&phrase.to_ascii_lowercase())
    });
    if out_of_memory {
        return format!(
            "converting ran out of memory: the converter's limit, [extract] max_memory_bytes, \
             is {} MiB",
            memory >> 20
        );
    }
    match status.signal() {
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => {
            "converting used more CPU time than [extract] max_seconds_per_document".to_string()
        }
        // An abort or a trap with nothing said is how C++ code (PDFium)
        // usually dies when an allocation fails under the address-space cap.
        Some(
            signal @ (libc::SIGABRT | libc::SIGTRAP | libc::SIGILL | libc::SIGSEGV | libc::SIGBUS),
        ) => format!(
            "the document converter crashed ({}) {last}; a document this large may need \
                 more than [extract] max_memory_bytes ({} MiB)",
            signal_name(signal),
            memory >> 20
        )
        .replace(" ;", ";"),
        Some(signal) => format!(
            "the document converter crashed ({}) {last}",
            signal_name(signal)
        )
        .trim_end()
        .to_string(),
        None => format!(
            "the document converter failed (exit {}): {last}",
            status.code().unwrap_or(-1)
        ),
    }
}

/// Reads at most `cap` bytes; the flag says more were offered (the rest is
/// drained so the child is not blocked writing).
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut overflowed = false;
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) if !overflowed && out.len() + n <= cap => out.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                overflowed = true;
                out.clear();
            }
        }
    }
    (out, overflowed)
}

/// The child's side: converts stdin to one JSON answer on stdout; with
/// `sandbox`, confined first ([`super::sandbox::confine`]).
pub fn child_main(format: &str, limits: Limits, sandbox: bool) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let Some(format) = parse_format(format) else {
        eprintln!("unknown document format {format:?}");
        return std::process::ExitCode::from(2);
    };
    // The bytes are read first (read, not parsed: no parser runs before
    // the sandbox) so that Tesseract is loaded only for documents that can
    // need it: images, and PDFs that draw images.
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("reading the document: {e}");
        return std::process::ExitCode::from(2);
    }
    let needs_ocr = format.is_image()
        || (format == DocumentFormat::Pdf && super::ocr::pdf_draws_images(&bytes));
    if sandbox {
        // The libraries a converter opens, PDFium and Tesseract, are loaded
        // before the sandbox forbids opening files (their later dlopen of
        // the same path finds them loaded); Tesseract's models are read
        // when a page needs them, from the one directory left readable.
        if format == DocumentFormat::Pdf
            && let Some(library) = &limits.pdfium_library
        {
            preload(library);
        }
        let mut readable = Vec::new();
        if let Some(ocr) = limits.ocr.as_ref().filter(|_| needs_ocr) {
            preload(&ocr.library);
            readable.push(ocr.tessdata.as_path());
        }
        if let Err(e) = super::sandbox::confine(&readable) {
            eprintln!("confining the converter: {e}");
            return std::process::ExitCode::from(2);
        }
    }
    // Parsers that recurse get the same stack the daemon's blocking
    // threads have (see `crate::nesting`).
    let worker = std::thread::Builder::new()
        .stack_size(crate::nesting::PARSER_STACK_BYTES)
        .spawn(move || convert(format, &bytes, &limits).map_err(|skipped| skipped.0));
    let answer = match worker.map(|handle| handle.join()) {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => Err("the document converter panicked".to_string()),
        Err(e) => Err(format!("could not start the conversion thread: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    let written = serde_json::to_writer(&mut stdout, &answer)
        .map_err(std::io::Error::from)
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing the answer: {e}");
            std::process::ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// Issue 32: a converter killed by a limit says which limit.
    #[test]
    fn a_killed_converter_names_the_limit_it_hit() {
        let memory = 512 << 20;
        let by_signal = |signal: i32| std::process::ExitStatus::from_raw(signal);
        let oom = crash_reason(
            by_signal(libc::SIGABRT),
            b"terminate called after throwing an instance of 'std::bad_alloc'\n",
            memory,
        );
        assert!(oom.contains("ran out of memory"), "{oom}");
        assert!(
            oom.contains("max_memory_bytes") && oom.contains("512 MiB"),
            "{oom}"
        );
        let abort = crash_reason(by_signal(libc::SIGABRT), b"", memory);
        assert!(
            abort.contains("SIGABRT") && abort.contains("max_memory_bytes"),
            "{abort}"
        );
        let cpu = crash_reason(by_signal(libc::SIGXCPU), b"", memory);
        assert!(cpu.contains("max_seconds_per_document"), "{cpu}");
        let rust_oom = crash_reason(
            by_signal(libc::SIGABRT),
            b"memory allocation of 1073741824 bytes failed\n",
            memory,
        );
        assert!(rust_oom.contains("ran out of memory"), "{rust_oom}");
    }
}
