//! `guard-agent audit keygen | verify | append`: the tamper-evident verdict log (see
//! `crate::audit` for its format and what verification can and cannot tell).
use std::{
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::Value;

use crate::audit::{self, Log, LogOptions, VerifyOptions};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Make the Ed25519 key that signs the log's checkpoints, print its public key (hex) and
    /// write it beside the key as `<out>.pub`. Refuses to replace a key unless --force.
    Keygen {
        /// Where the secret key goes (mode 0600).
        #[arg(long, value_name = "PATH", default_value = audit::DEFAULT_KEY)]
        out: PathBuf,
        /// Replace an existing key (checkpoints it signed then need its old public key).
        #[arg(long)]
        force: bool,
    },
    /// Check log files (in any order; a directory means its verdicts-*.log files): exit 0 with
    /// a summary if the chain is intact, else 1 with the first bad record and what is wrong
    /// (edited, deleted, reordered, truncated, bad signature).
    Verify(VerifyArgs),
    /// Append JSON lines from stdin to the log in --dir, continuing its chain, and seal it with
    /// a checkpoint at the end; the checkpoints written are printed on stdout (for a witness).
    /// For records made outside the daemon, and for tests.
    #[command(hide = true)]
    Append(AppendArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Log files, or directories holding them.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A public key checkpoints may be signed with: 64 hex digits, or a file holding them (the
    /// `.pub` keygen wrote). Repeat for a log signed with several keys over time. Without it,
    /// signatures are not checked (and the summary says so).
    #[arg(long, value_name = "HEX|FILE")]
    pub pubkey: Vec<String>,
    /// JSON lines of checkpoint records the daemon also sent to the SIEM: each must match the
    /// log, and the log must reach the last of them (this catches a cut back to a checkpoint).
    #[arg(long, value_name = "FILE")]
    pub witness: Option<PathBuf>,
    /// The files are the later part of a log whose older files were removed: the first record
    /// may start after seq 1.
    #[arg(long)]
    pub partial: bool,
    /// Records after the last checkpoint, and an incomplete last line, are a warning, not a
    /// failure (a log still being written).
    #[arg(long)]
    pub allow_unsealed_tail: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The log directory (made 0700 if needed).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The secret key that signs checkpoints.
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// Start a new file once the current one is this large.
    #[arg(long, value_name = "BYTES", default_value_t = LogOptions::default().max_file_bytes)]
    pub max_file_bytes: u64,
    /// A checkpoint after this many records (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = LogOptions::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// A checkpoint when a line arrives this many seconds after the last one.
    #[arg(long, value_name = "SECONDS", default_value_t = LogOptions::default().checkpoint_interval.as_secs())]
    pub checkpoint_interval: u64,
}

/// Exit codes: 0 done (or intact), 1 verification found a problem, 2 the command could not run.
pub fn run(cmd: AuditCommand) -> ExitCode {
    let result = match cmd {
        AuditCommand::Keygen { out, force } => keygen(&out, force).map(|()| ExitCode::SUCCESS),
        AuditCommand::Verify(args) => verify(&args),
        AuditCommand::Append(args) => append(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("guard-agent: error: {e:#}");
        ExitCode::from(2)
    })
}

fn keygen(out: &Path, force: bool) -> anyhow::Result<()> {
    let public = if force { audit::write_new_key(out, true)? } else { audit::create_key(out)? };
    println!("{public}");
    eprintln!(
        "audit key written to {} (public key in {}); give the public key to whoever verifies the log: guard-agent audit verify --pubkey {public} FILES...",
        out.display(),
        audit::pub_path(out).display()
    );
    Ok(())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let keys = args.pubkey.iter().map(|k| audit::parse_public(k)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut opts = VerifyOptions { keys, partial: args.partial, allow_unsealed_tail: args.allow_unsealed_tail, ..VerifyOptions::default() };
    if let Some(w) = &args.witness {
        let text = std::fs::read_to_string(w).with_context(|| format!("reading the witness {}", w.display()))?;
        let (entries, skipped) = audit::read_witness(&text);
        if skipped > 0 {
            eprintln!("warning: {}: {skipped} lines are not checkpoint records; skipped", w.display());
        }
        opts.witness = entries;
    }
    let files = expand(&args.files)?;
    let report = audit::verify(&files, &opts).context("reading the log")?;
    print_report(&report, args.json);
    Ok(if report.intact() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Notes and warnings first, the verdict line last (where a reader's eye and `tail -1` land).
fn print_report(report: &audit::Report, json: bool) {
    if json {
        println!("{}", report.to_json());
        return;
    }
    for n in &report.notes {
        println!("note: {n}");
    }
    for w in &report.warnings {
        println!("warning: {w}");
    }
    if report.witnessed > 0 {
        println!("witness: {} checkpoints match", report.witnessed);
    }
    println!("{}", report.headline());
}

/// Directories become the log files in them; a directory without any is an error.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let files = audit::log_files(p).with_context(|| format!("listing {}", p.display()))?;
            anyhow::ensure!(!files.is_empty(), "{} holds no audit log files (verdicts-*.log)", p.display());
            out.extend(files);
        } else {
            anyhow::ensure!(p.exists(), "{}: no such file", p.display());
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Appends stdin's JSON lines. A line that is not JSON stops the run (the lines before it stay
/// appended and sealed) with its line number. Time-based checkpoints are written when a line
/// arrives late enough; the file is synced whenever stdin has nothing more buffered (a burst
/// ended).
fn append(args: &AppendArgs) -> anyhow::Result<()> {
    let key = audit::load_key(&args.key)?;
    let opts = LogOptions {
        max_file_bytes: args.max_file_bytes,
        checkpoint_every: args.checkpoint_every,
        checkpoint_interval: Duration::from_secs(args.checkpoint_interval),
    };
    let mut log = Log::open(&args.dir, Some(key), opts)?;
    let mut stdin = BufReader::new(io::stdin().lock());
    let mut line = String::new();
    let (mut n, mut seqs) = (0u64, None);
    let outcome = loop {
        line.clear();
        match stdin.read_line(&mut line) {
            Ok(0) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(anyhow::Error::from(e).context("reading stdin")),
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => break Err(anyhow::anyhow!("stdin line {n} is not JSON ({e}); the lines before it were appended")),
        };
        match append_one(&mut log, &v, stdin.buffer().is_empty()) {
            Ok(seq) => seqs = Some((seqs.map_or(seq, |(first, _)| first), seq)),
            Err(e) => break Err(e),
        }
    };
    let next = log.next_seq();
    let checkpoints = log.close().context("sealing the log")?;
    for c in &checkpoints {
        println!("{c}");
    }
    let end = checkpoints.last().and_then(|c| c["seq"].as_u64()).unwrap_or(next - 1);
    let what = seqs.map_or("nothing to append".to_owned(), |(first, last)| format!("appended seq {first}..{last}"));
    eprintln!("{}: {what}; the log ends sealed at seq {end}", args.dir.display());
    outcome
}

/// One record, then a due time-based checkpoint, then a sync if the burst ended; checkpoints
/// go to stdout as they are written, so a pipe can forward them to a witness at once.
fn append_one(log: &mut Log, v: &Value, burst_ended: bool) -> anyhow::Result<u64> {
    let seq = log.append(v).context("appending")?;
    log.tick(Instant::now()).context("writing a checkpoint")?;
    if burst_ended {
        log.sync().context("syncing")?;
    }
    for c in log.take_checkpoints() {
        println!("{c}");
    }
    Ok(seq)
}
