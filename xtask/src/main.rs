//! `cargo xtask <command>`: everything a fresh machine needs to build, run and test guard.
mod bench;
mod deb;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing (Debian llvm-22-dev, nightly rust-src, bpf-linker for LLVM 22) and
    /// mount bpffs and tracefs if absent. Idempotent; quick when everything is present.
    Setup,
    /// Set up, build, and run `guard-agent daemon --detach-on-exit` in the foreground (Ctrl-C
    /// stops it and detaches everything). Arguments after `--` go to the daemon.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run every unit test and every privileged end-to-end test.
    Test {
        /// Arguments after `--` go to the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build a Debian package (guard-agent_VERSION_ARCH.deb), laid out by `guard-agent install
    /// --prefix /usr`, and check it. It installs the service but never enables or starts it.
    Deb {
        /// Package this binary instead of building guard-agent in release mode.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Where the .deb goes (default: target/debian).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The package's Maintainer field.
        #[arg(long, value_name = "NAME <EMAIL>", default_value = deb::DEFAULT_MAINTAINER)]
        maintainer: String,
    },
    /// Benchmarks: guard's overhead against no agent, auditd and bpftrace, configurations
    /// interleaved; prints the table and writes it to BENCHMARKS.md (see BENCHMARKS.md).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    match cli.command {
        Cmd::Setup => {
            setup::ensure(&["setup"])?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { args } => {
            setup::ensure(&["run"])?;
            cargo(&root, &["build", "--package", "guard-agent"])?;
            let bin = root.join("target/debug/guard-agent");
            let mut cmd = Command::new(&bin);
            // A developer's Ctrl-C means "stop guarding": detach everything on exit.
            cmd.args(["daemon", "--detach-on-exit"]).args(&args);
            // Ctrl-C reaches the daemon through the terminal's process group; this process
            // waits for the daemon to detach and exit instead of dying first.
            ignore_interrupts();
            let status = cmd.status().with_context(|| format!("running {}", bin.display()))?;
            Ok(exit_code(status))
        }
        Cmd::Test { args } => {
            setup::ensure(&["test"])?;
            let mut tally = Tally::default();
            // Unit tests of every host crate, in parallel (guard-ebpf only builds for BPF).
            let mut unit = Command::new("cargo");
            unit.current_dir(&root)
                .args(["test", "--workspace", "--exclude", "guard-tests", "--exclude", "guard-ebpf", "--"])
                .args(&args);
            let unit_ok = tally.run(&mut unit)?;
            // The binary the end-to-end tests run.
            cargo(&root, &["build", "--package", "guard-agent"])?;
            let bin = root.join("target/debug/guard-agent");
            // Privileged end-to-end tests: one at a time, because each one attaches programs
            // at the cgroup root and checks that nothing is left behind afterwards.
            let mut e2e = Command::new("cargo");
            e2e.current_dir(&root)
                .args(["test", "--package", "guard-tests", "--", "--test-threads=1"])
                .args(&args)
                .env("GUARD_AGENT_BIN", &bin);
            let e2e_ok = tally.run(&mut e2e)?;
            // The package, built from the binary just tested, checked as dpkg sees it.
            let deb = deb::build_and_check(&root, &bin);
            match &deb {
                Ok(n) => println!("deb check: ok ({n} checks)"),
                Err(e) => println!("deb check: FAILED: {e:#}"),
            }
            // One closing line for the whole run (cargo prints one per test binary).
            println!("summary: {} passed, {} failed, {} ignored", tally.passed, tally.failed, tally.ignored);
            if !(unit_ok && e2e_ok) {
                bail!("tests failed");
            }
            deb.context("the .deb check failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Deb { binary, out, maintainer } => {
            let out = out.unwrap_or_else(|| root.join("target/debian"));
            let deb = deb::build(&root, binary.as_deref(), &out, &maintainer)?;
            println!("built {}", deb.display());
            println!("deb check: ok ({} checks)", deb::check(&deb)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench(args) => bench::run(&root, args),
    }
}

/// Test counts added up over every `test result:` line cargo test prints.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Runs `cmd`, passing its output through, and counts its results. Ok(false) if it failed.
    fn run(&mut self, cmd: &mut Command) -> anyhow::Result<bool> {
        use std::io::{BufRead as _, BufReader};
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().with_context(|| format!("running {cmd:?}"))?;
        let stdout = child.stdout.take().context("test output")?;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading test output")?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let mut words = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => self.passed += n,
                        "failed" => self.failed += n,
                        "ignored" => self.ignored += n,
                        _ => {}
                    }
                }
            }
        }
        Ok(child.wait().context("waiting for cargo test")?.success())
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("cargo").current_dir(root).args(args).status().context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

fn ignore_interrupts() {
    // SAFETY: sets SIGINT's disposition to "ignore"; no handler code runs.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c as u8),
        (None, Some(s)) => ExitCode::from(128u8.wrapping_add(s as u8)),
        _ => ExitCode::FAILURE,
    }
}
