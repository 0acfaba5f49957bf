//! `chroma-syncd`: the binary. `anyhow` lives only here, at the edge.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chroma_syncd::app::{Daemon, RunOptions, RunSummary, RunTarget};
use chroma_syncd::client::{ApiClient, ListInvocations, ListSources, UploadFields};
use chroma_syncd::config::Config;
use chroma_syncd::domain::SourceSpec;
use chroma_syncd::model::{CreateJobPayload, CreateSourcePayload, Job, JobStatus};
use chroma_syncd::progress;
use chroma_syncd::sources::{Flag, FlagValue};
use clap::{Parser, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "chroma-syncd",
    version,
    about = "Keeps Chroma collections in step with S3 buckets, GitHub repositories, websites and local directories."
)]
struct Cli {
    /// TOML config file; without one the daemon runs on its embedded defaults.
    #[arg(long, global = true, env = "CHROMA_SYNCD_CONFIG")]
    config: Option<PathBuf>,
    /// API base URL for the `source` and `invocation` commands.
    #[arg(
        long,
        global = true,
        env = "CHROMA_SYNCD_API_URL",
        default_value = "http://127.0.0.1:8420"
    )]
    api_url: String,
    /// `x-chroma-token` for the `source` and `invocation` commands (env only, to keep it out of shell history).
    #[arg(skip)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and workers.
    Serve,
    /// Run workers only (they share the queue with a `serve` process).
    Worker,
    /// One-shot: sync a source (all of it, or the S3 object keys or GitHub ref
    /// given), then exit (non-zero on failure).
    #[command(after_help = source_kinds_help())]
    Run {
        /// Source JSON (as for `POST /api/v1/sources`), inline or `@file`.
        #[arg(long)]
        source: String,
        /// Collection to write (required for GitHub; S3 defaults to the source's).
        #[arg(long)]
        collection: Option<String>,
        /// Run every document even after one failed (default: stop at the
        /// first failure). The exit code is non-zero either way.
        #[arg(long)]
        keep_going: bool,
        /// Seconds between progress log lines when stderr is not a terminal
        /// (on a terminal a progress bar is drawn instead).
        #[arg(long, default_value_t = 10.0)]
        progress_interval: f64,
        /// What the source's kind syncs of it beyond a collection: the
        /// field flags the kinds declare, given (`parse_cli`).
        #[arg(skip)]
        fields: GivenFlags,
    },
    /// Internal: converts one document read from stdin to JSON on stdout.
    /// The daemon runs this as a child process with resource limits (see
    /// `extract::isolate`); it is not meant to be typed.
    #[command(name = "extract-document", hide = true)]
    ExtractDocument {
        #[arg(long)]
        format: String,
        #[arg(long)]
        max_extracted_bytes: usize,
        #[arg(long)]
        pdfium_library: Option<PathBuf>,
        /// Confine the child (Landlock, seccomp) before it reads.
        #[arg(long)]
        sandbox: bool,
        /// OCR settings (JSON of `extract::OcrSettings`); absent: OCR off.
        #[arg(long)]
        ocr: Option<String>,
        /// Pictures to hand back for description (JSON of
        /// `extract::FigureSettings`); absent: none.
        #[arg(long)]
        figures: Option<String>,
    },
    /// Internal: loads Tesseract and its models as a converter child would
    /// and prints its version (the daemon checks OCR at start this way).
    #[command(name = "probe-ocr", hide = true)]
    ProbeOcr {
        /// OCR settings (JSON of `extract::OcrSettings`).
        #[arg(long)]
        ocr: String,
    },
    /// Internal: confines this process as a converter child is confined,
    /// then tries what a parser exploit would and prints what worked (JSON).
    /// For the sandbox's tests; it is not meant to be typed.
    #[command(name = "probe-sandbox", hide = true)]
    ProbeSandbox {
        /// A process whose memory and environment must stay out of reach.
        #[arg(long)]
        parent: u32,
        /// A file the daemon can read that the child must not.
        #[arg(long)]
        readable: String,
    },
    /// Which embedding kernel path this CPU runs and why: forced
    /// (`BERT_CPU_ISA`, `[embedding] precision`), or the fastest measured
    /// here (remembered in the state directory's `kernels.json`). Prints
    /// JSON; `--measure` times the paths again and replaces the memory.
    Kernels {
        /// Forget the remembered choice for this CPU and measure again.
        #[arg(long)]
        measure: bool,
    },
    /// Health probe for container runtimes without curl: GET the URL, exit
    /// 0 on a 2xx answer, 1 otherwise (e.g. `probe --url http://127.0.0.1:8420/readyz`).
    Probe {
        #[arg(long, default_value = "http://127.0.0.1:8420/readyz")]
        url: String,
    },
    /// Manage sources through the API.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
    },
    /// Manage invocations through the API.
    Invocation {
        #[command(subcommand)]
        command: InvocationCommand,
    },
    /// Upload a file through the API (`POST /api/v1/add-file`); prints the
    /// invocation's id (or, with --wait, the finished job).
    Upload {
        file: PathBuf,
        #[arg(long)]
        database: String,
        #[arg(long)]
        collection: String,
        /// Chunk IDs become `<custom-id>-<n>` (default: sha256(filename)-<n>).
        #[arg(long)]
        custom_id: Option<String>,
        /// JSON object (inline or `@file`) merged into every chunk's metadata.
        #[arg(long)]
        metadata: Option<String>,
        /// Media type to read the file as (default: from its extension).
        #[arg(long)]
        content_type: Option<String>,
        /// Follow the invocation to its end; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
    },
}

/// `run --help`'s list of source kinds, read from the list of kinds.
fn source_kinds_help() -> String {
    let kinds = SourceSpec::kind_fields();
    format!(
        "Source kinds (the --source JSON has exactly one of these fields): {}",
        kinds.join(", ")
    )
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Create a source from JSON (inline or `@file`); prints its id.
    Create {
        json: String,
    },
    List {
        #[arg(long)]
        database_name: Option<String>,
    },
    Get {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
enum InvocationCommand {
    /// Create an invocation of a source; prints its id (or, with --wait, the finished job).
    /// Its other flags set the invocation's fields, as the source kinds
    /// declare them (`invocation_flags`).
    Create {
        source_id: String,
        /// Follow the invocation to its end; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
        /// The field flags given (`parse_cli`).
        #[arg(skip)]
        fields: GivenFlags,
    },
    Get {
        id: String,
        /// Follow the invocation to its end; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
    },
    List {
        #[arg(long)]
        source_id: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    Cancel {
        id: String,
    },
}

fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(chroma_syncd::secrets::scrubbed_stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// Cancelled on SIGINT or SIGTERM. From the signal on, the process has
/// `grace` + [`HARD_EXIT_SLACK`] to end: past that it exits from a plain
/// thread, whatever the runtime is stuck on (a hung connection, a blocking
/// task), so SIGTERM always ends it within `shutdown_grace_seconds` + 10 s.
fn shutdown_token(grace: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down: no new jobs are claimed");
        hard_exit_after(grace + HARD_EXIT_SLACK);
        trigger.cancel();
    });
    token
}

/// After the grace period: in-flight jobs are stopped and released
/// ([`chroma_syncd::app::SHUTDOWN_SLACK`] for that), the runtime gets
/// [`RUNTIME_SHUTDOWN`]; this is the last resort, below the promised 10 s.
const HARD_EXIT_SLACK: Duration = Duration::from_secs(9);
/// How long the runtime may wait for blocking tasks once `main` returns.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn hard_exit_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(
            ?limit,
            "still running after the shutdown grace period and slack; exiting now"
        );
        std::process::exit(1);
    });
}

/// Arenas glibc's malloc may keep, unless `MALLOC_ARENA_MAX` says
/// otherwise. Its default, 8 per core, lets every thread that ever ran a
/// forward pass (tokio's blocking pool hands them to whichever thread is
/// free) keep an arena holding that pass's peak: measured on a filesystem
/// sync of 0.3 MB on 2 cores, peak RSS 543 MB with the default and 287 MB
/// with 2 arenas, the same documents and chunks (bench/results/memory.md).
const MALLOC_ARENAS: i32 = 2;

fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists or anything is allocated concurrently; mallopt only sets
        // a parameter of glibc's allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

/// A converter child's JSON argument `name`, if given; a bad one is
/// said on stderr (which the daemon reports) and ends the child.
fn json_arg<T: serde::de::DeserializeOwned>(
    name: &str,
    value: &Option<String>,
) -> Result<Option<T>, ExitCode> {
    value
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| {
            eprintln!("{name}: {e}");
            ExitCode::from(2)
        })
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let mut cli = parse_cli();
    if let Command::ExtractDocument {
        format,
        max_extracted_bytes,
        pdfium_library,
        sandbox,
        ocr,
        figures,
    } = &cli.command
    {
        // A converter child: no runtime, no config, no logging.
        let (ocr, figures) = match (json_arg("--ocr", ocr), json_arg("--figures", figures)) {
            (Ok(ocr), Ok(figures)) => (ocr, figures),
            (Err(code), _) | (_, Err(code)) => return code,
        };
        let limits = chroma_syncd::extract::Limits {
            max_extracted_bytes: *max_extracted_bytes,
            pdfium_library: pdfium_library.clone(),
            ocr,
            figures,
        };
        return chroma_syncd::extract::isolate::child_main(format, limits, *sandbox);
    }
    if let Command::ProbeOcr { ocr } = &cli.command {
        let probed = serde_json::from_str(ocr)
            .map_err(|e| format!("--ocr: {e}"))
            .and_then(|settings| chroma_syncd::extract::ocr::probe(&settings));
        return match probed {
            Ok(version) => {
                println!("{version}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::ProbeSandbox { parent, readable } = &cli.command {
        return match chroma_syncd::extract::sandbox::probe_confined(*parent, readable) {
            Ok(probe) => {
                println!("{}", serde_json::to_string(&probe).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    cli.token = std::env::var("CHROMA_SYNCD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    // Parsers run on the runtime's blocking threads; their recursion is
    // bounded by document depth limits sized for this stack (see
    // `chroma_syncd::nesting`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(chroma_syncd::nesting::PARSER_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking task still running (a parser, a stalled read) must not
    // hold the exit: dropping the runtime would wait for it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// A `BERT_CPU_ISA` this CPU cannot run is a startup error naming the paths
/// it has, checked before anything else starts. The path itself is fixed
/// when the model loads (`embed::kernels`: forced, or measured).
fn check_cpu_path() -> Result<()> {
    if let Some(requested) = bert_cpu::Isa::requested() {
        let isa =
            bert_cpu::Isa::choose(Some(&requested)).context("choosing the embedding kernels")?;
        tracing::info!(isa = isa.name(), "embedding kernels forced by BERT_CPU_ISA");
    }
    Ok(())
}

/// `kernels`: the embedding kernel path, decided as the daemon decides it.
fn kernels(config: Option<&Path>, measure: bool) -> Result<ExitCode> {
    init_tracing();
    check_cpu_path()?;
    let config = Config::load(config)?;
    if measure {
        chroma_syncd::embed::kernels::forget(&config.state_dir)
            .context("forgetting the remembered kernel choice")?;
    }
    let choice =
        chroma_syncd::embed::kernels::choose(config.embedding.precision, &config.state_dir)
            .map_err(anyhow::Error::msg)?;
    let precision = match config.embedding.precision {
        chroma_syncd::config::EmbeddingPrecision::Auto => bert_cpu::Precision::best(),
        chroma_syncd::config::EmbeddingPrecision::F32 => bert_cpu::Precision::F32,
        chroma_syncd::config::EmbeddingPrecision::Bf16 => bert_cpu::Precision::Bf16,
    };
    print(&serde_json::json!({
        "isa": choice.isa.name(),
        "precision": precision.as_str(),
        "decided": choice.decided.as_str(),
        "figures": choice.figures,
        "cpu": bert_cpu::tune::cpu_identity(),
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// How often `--wait` asks for the invocation's status.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(500);

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Serve => serve(config, true).await,
        Command::Worker => serve(config, false).await,
        Command::Run {
            source,
            collection,
            keep_going,
            progress_interval,
            fields,
        } => {
            let target = RunTarget {
                collection,
                fields: fields.into_fields()?,
            };
            backfill(
                config,
                &source,
                target,
                RunOptions { keep_going },
                progress_interval,
            )
            .await
        }
        Command::Probe { url } => Ok(probe(&url).await),
        Command::Kernels { measure } => kernels(config, measure),
        Command::ExtractDocument { .. }
        | Command::ProbeOcr { .. }
        | Command::ProbeSandbox { .. } => {
            unreachable!("handled before the runtime starts")
        }
        // The API client is built for these commands only, so a bad
        // `--api-url` never stops `serve` or `run`.
        Command::Source { command } => {
            let api = ApiClient::new(&cli.api_url, cli.token)?;
            source_command(&api, command).await
        }
        Command::Invocation { command } => {
            let api = ApiClient::new(&cli.api_url, cli.token)?;
            invocation_command(&api, command).await
        }
        Command::Upload {
            file,
            database,
            collection,
            custom_id,
            metadata,
            content_type,
            wait,
        } => {
            let api = ApiClient::new(&cli.api_url, cli.token)?;
            let metadata = metadata
                .map(|m| {
                    read_json::<serde_json::Map<String, serde_json::Value>>(
                        &m,
                        "--metadata must be a JSON object",
                    )
                })
                .transpose()?
                .map(|m| serde_json::Value::Object(m).to_string());
            let fields = UploadFields {
                database_name: database,
                collection_name: collection,
                custom_id,
                metadata,
                content_type,
            };
            let created = api.upload_file(&file, &fields).await?;
            if !wait {
                print(&created)?;
                return Ok(ExitCode::SUCCESS);
            }
            finished(&follow(&api, created.invocation_id).await?)
        }
    }
}

/// `serve` (API and workers) or `worker` (workers only), until SIGINT/SIGTERM.
async fn serve(config: Option<&Path>, with_api: bool) -> Result<ExitCode> {
    init_tracing();
    check_cpu_path()?;
    let config = Config::load(config)?;
    let grace = config.shutdown_grace();
    let daemon = Daemon::open(config).await?;
    daemon.serve(with_api, shutdown_token(grace)).await?;
    Ok(ExitCode::SUCCESS)
}

/// `run`: the one-shot backfill; non-zero unless every document synced.
async fn backfill(
    config: Option<&Path>,
    source: &str,
    target: RunTarget,
    options: RunOptions,
    progress_interval: f64,
) -> Result<ExitCode> {
    init_tracing();
    check_cpu_path()?;
    let config = Config::load(config)?;
    let source: CreateSourcePayload = read_json(source, "the --source JSON is not a valid source")?;
    let grace = config.shutdown_grace();
    let daemon = Daemon::open(config).await?;
    let summary = daemon
        .run_once(
            source,
            target,
            options,
            progress::for_stderr(Duration::from_secs_f64(progress_interval.max(0.1))),
            shutdown_token(grace),
        )
        .await?;
    print_run_summary(&summary);
    Ok(if summary.succeeded() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_run_summary(summary: &RunSummary) {
    println!(
        "synced {} documents in {:.1}s: {} chunks embedded ({} with a vector reused), {} \
         unchanged, {} read ({} documents left unread); of {} jobs \
         {} complete, {} failed, {} cancelled, {} unfinished",
        summary.documents,
        summary.elapsed.as_secs_f64(),
        summary.chunks,
        summary.stats.chunks_embedding_reused,
        summary.chunks_unchanged,
        indicatif::HumanBytes(summary.bytes),
        summary.stats.unchanged_unread,
        summary.complete + summary.failed.len() + summary.cancelled + summary.unfinished,
        summary.complete,
        summary.failed.len(),
        summary.cancelled,
        summary.unfinished
    );
    let seconds = |ms: u64| ms as f64 / 1000.0;
    println!(
        "time by stage, summed over jobs: fetch {:.1}s, extract+chunk {:.1}s, \
         embed {:.1}s (+{:.1}s waiting for the embedder), write {:.1}s; \
         embedding computed {:.0}% of the wall time",
        seconds(summary.stats.fetch_ms),
        seconds(summary.stats.extract_ms),
        seconds(summary.stats.embed_ms),
        seconds(summary.stats.embed_wait_ms),
        seconds(summary.stats.write_ms),
        // Forward passes run one at a time, so their sum is the
        // embedder's busy time (tokenizing, a few %, runs alongside).
        100.0 * seconds(summary.stats.embed_ms) / summary.elapsed.as_secs_f64().max(1e-3),
    );
    for (key, error) in &summary.failed {
        println!("failed: {key}: {error}");
    }
}

/// `probe`: 0 on a 2xx answer from `url`, 1 otherwise.
async fn probe(url: &str) -> ExitCode {
    let answer = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match answer {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("{url}: {}", response.status());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("{url}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `source create|list|get|delete`: prints what the API answered.
async fn source_command(api: &ApiClient, command: SourceCommand) -> Result<ExitCode> {
    match command {
        SourceCommand::Create { json } => {
            let payload: CreateSourcePayload =
                read_json(&json, "the source JSON is not a valid source")?;
            print(&api.create_source(&payload).await?)?;
        }
        SourceCommand::List { database_name } => {
            print(&api.list_sources(&ListSources { database_name }).await?)?;
        }
        SourceCommand::Get { id } => {
            print(&api.get_source(parse_id("source id", &id)?).await?)?;
        }
        SourceCommand::Delete { id } => {
            api.delete_source(parse_id("source id", &id)?).await?;
            println!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `invocation create|get|list|cancel`. With `--wait`, the exit code says
/// whether the invocation completed.
async fn invocation_command(api: &ApiClient, command: InvocationCommand) -> Result<ExitCode> {
    match command {
        InvocationCommand::Create {
            source_id,
            wait,
            fields,
        } => {
            let payload = invocation_payload(fields)?;
            let source_id = parse_id("source id", &source_id)?;
            let created = api.create_invocation(source_id, &payload).await?;
            if !wait {
                print(&created)?;
                return Ok(ExitCode::SUCCESS);
            }
            finished(&follow(api, created.invocation_id).await?)
        }
        InvocationCommand::Get { id, wait } => {
            let id = parse_id("invocation id", &id)?;
            if wait {
                return finished(&follow(api, id).await?);
            }
            print(&api.get_invocation(id).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        InvocationCommand::List { source_id, status } => {
            let filter = ListInvocations {
                source_id: source_id
                    .map(|id| parse_id("--source-id", &id))
                    .transpose()?,
                status,
            };
            print(&api.list_invocations(&filter).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        InvocationCommand::Cancel { id } => {
            print(
                &api.cancel_invocation(parse_id("invocation id", &id)?)
                    .await?,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Polls an invocation until it finishes, telling stderr each status it
/// passes through.
async fn follow(api: &ApiClient, id: Uuid) -> Result<Job> {
    let mut last_status = None;
    loop {
        let job = api.get_invocation(id).await?;
        let status = job.status.name();
        if last_status != Some(status) {
            eprintln!("invocation {id}: {status}");
            last_status = Some(status);
        }
        if job.status.is_finished() {
            return Ok(job);
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

/// Prints a finished job; success only if it completed.
fn finished(job: &Job) -> Result<ExitCode> {
    print(job)?;
    Ok(if matches!(job.status, JobStatus::Complete { .. }) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Parses a JSON argument, inline or `@file`, as `T`; `invalid` starts the
/// message when it does not parse (serde's reason, with line and column, follows).
/// A flag that sets a field the source kinds declare: (field, flag).
type FieldFlag = (&'static str, Flag);

/// The field flags given on a command line: (field, flag, values) — none
/// for a switch, one per use for a flag given many times.
#[derive(Debug, Clone, Default)]
struct GivenFlags(Vec<(&'static str, Flag, Vec<String>)>);

/// The flags of `invocation create` that set invocation fields: each
/// kind's declared flags (`InvocationField::flags`; a field declaring none
/// gets `--<field>`), once each.
fn invocation_flags() -> Vec<FieldFlag> {
    let mut flags = Vec::new();
    for field in SourceSpec::invocation_fields() {
        match field.flags {
            [] => push_flag(&mut flags, field.name, Flag::text("", "")),
            declared => {
                for flag in declared {
                    push_flag(&mut flags, field.name, *flag);
                }
            }
        }
    }
    flags
}

/// The flags of `run` the kinds declare for what only they sync
/// (`SourceKind::RUN_FIELDS`), once each.
fn run_flags() -> Vec<FieldFlag> {
    let mut flags = Vec::new();
    for field in SourceSpec::run_fields() {
        for flag in field.flags {
            push_flag(&mut flags, field.name, *flag);
        }
    }
    flags
}

fn push_flag(flags: &mut Vec<FieldFlag>, field: &'static str, flag: Flag) {
    if !flags
        .iter()
        .any(|(name, known)| *name == field && long_of(name, known) == long_of(field, &flag))
    {
        flags.push((field, flag));
    }
}

/// A flag's `--long`: its own, or the field's name with dashes.
fn long_of(field: &str, flag: &Flag) -> String {
    match flag.long {
        "" => field.replace('_', "-"),
        long => long.to_string(),
    }
}

/// `command` with `flags` added (flags setting one field exclude each
/// other: `--branch` or `--sha`).
fn with_flags(mut command: clap::Command, flags: &[FieldFlag]) -> clap::Command {
    use clap::{Arg, ArgAction};
    for (field, flag) in flags {
        let long = long_of(field, flag);
        let others: Vec<String> = flags
            .iter()
            .filter(|(other, known)| other == field && long_of(other, known) != long)
            .map(|(other, known)| long_of(other, known))
            .collect();
        let arg = Arg::new(long.clone())
            .long(long)
            .help(flag.help)
            .conflicts_with_all(others);
        command = command.arg(match flag.value {
            FlagValue::Switch => arg.action(ArgAction::SetTrue),
            FlagValue::Many => arg.action(ArgAction::Append).value_name("VALUE"),
            _ => arg.value_name("VALUE"),
        });
    }
    command
}

/// The `flags` given in `matches`.
fn given(matches: &clap::ArgMatches, flags: &[FieldFlag]) -> GivenFlags {
    let mut given = Vec::new();
    for (field, flag) in flags {
        let long = long_of(field, flag);
        let values: Option<Vec<String>> = match flag.value {
            FlagValue::Switch => matches.get_flag(&long).then(Vec::new),
            _ => matches
                .get_many::<String>(&long)
                .map(|values| values.cloned().collect()),
        };
        if let Some(values) = values {
            given.push((*field, *flag, values));
        }
    }
    GivenFlags(given)
}

/// Parses the command line, with the field flags of `invocation create`
/// and `run` added from the source kinds' declarations, so this file
/// names no kind's field.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let (invocation, run) = (invocation_flags(), run_flags());
    let command = Cli::command()
        .mut_subcommand("invocation", |command| {
            command.mut_subcommand("create", |create| with_flags(create, &invocation))
        })
        .mut_subcommand("run", |command| with_flags(command, &run));
    let matches = command.get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match &mut cli.command {
        Command::Invocation {
            command: InvocationCommand::Create { fields, .. },
        } => {
            if let Some(create) = matches
                .subcommand_matches("invocation")
                .and_then(|m| m.subcommand_matches("create"))
            {
                *fields = given(create, &invocation);
            }
        }
        Command::Run { fields, .. } => {
            if let Some(command) = matches.subcommand_matches("run") {
                *fields = given(command, &run);
            }
        }
        _ => {}
    }
    cli
}

impl GivenFlags {
    /// The fields the flags set, as JSON.
    fn into_fields(self) -> Result<serde_json::Map<String, serde_json::Value>> {
        use serde_json::Value;
        let mut fields = serde_json::Map::new();
        for (field, flag, values) in self.0 {
            let long = long_of(field, &flag);
            let text = values.first().cloned().unwrap_or_default();
            let value = match flag.value {
                FlagValue::Text => Value::String(text),
                FlagValue::JsonObject => Value::Object(read_json(
                    &text,
                    &format!("--{long} must be a JSON object"),
                )?),
                FlagValue::Within(key) => serde_json::json!({ key: text }),
                FlagValue::Many => Value::from(values),
                FlagValue::Switch => Value::Bool(true),
            };
            fields.insert(field.to_string(), value);
        }
        Ok(fields)
    }
}

/// The body of `invocation create` from its field flags.
fn invocation_payload(flags: GivenFlags) -> Result<CreateJobPayload> {
    let longs: Vec<(String, String)> = flags
        .0
        .iter()
        .map(|(field, flag, _)| (field.to_string(), long_of(field, flag)))
        .collect();
    let fields = flags.into_fields()?;
    // Each flag is checked on its own, so an error names it.
    for (field, long) in longs {
        let alone = serde_json::json!({ &field: fields[&field] });
        serde_json::from_value::<CreateJobPayload>(alone)
            .with_context(|| format!("--{long}: not a valid `{field}`"))?;
    }
    serde_json::from_value(serde_json::Value::Object(fields))
        .context("the invocation's fields do not make an invocation")
}

fn read_json<T: DeserializeOwned>(arg: &str, invalid: &str) -> Result<T> {
    match arg.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            serde_json::from_str(&text).with_context(|| format!("{invalid} ({path})"))
        }
        None => serde_json::from_str(arg).with_context(|| invalid.to_string()),
    }
}

fn parse_id(what: &str, text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).with_context(|| format!("{what} `{text}` is not a UUID"))
}

/// Prints an API answer as pretty JSON: the wire type serialises exactly as
/// the daemon sent it.
fn print(answer: &impl Serialize) -> Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(answer).context("printing the answer")?
    );
    Ok(())
}
