//! `cargo xtask <command>`: everything a fresh machine needs to build, run and test guard.
mod bench;
mod deb;
mod k8s;
mod setup;
mod suite;
mod testrun;
mod vm;

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
    /// Set up, then run every unit test, the fuzz targets (about 10 s each) and every
    /// privileged end-to-end test, each test binary timed and under a deadline: one that hangs
    /// is killed with its process group, named with the test it was in, counted as failed,
    /// and the suite goes on.
    Test(suite::TestArgs),
    /// Boot Debian's stock kernels (bookworm 6.1, trixie 6.12) in QEMU with and without BPF LSM
    /// and run the tier tests inside (`cargo xtask test` runs this after the host suite). Kernels
    /// are fetched once into /var/cache/guard-vmtest.
    Vmtest(vm::VmArgs),
    /// Run the fuzz targets of guard-agent's parsers (policy, settings, control, records, dns,
    /// mask, sql, spool) for longer: `cargo xtask fuzz --secs 600 policy`. A failure prints its seed;
    /// `--seed SEED TARGET` replays it.
    Fuzz(suite::FuzzArgs),
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
    /// Check deploy/: the Kubernetes manifest and the Helm chart (rendered by Helm's SDK) against
    /// the Kubernetes OpenAPI schemas, and the chart's default render against the manifest.
    K8s,
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
            k8s::ensure_venv()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::K8s => {
            cargo(&root, &["build", "--package", "guard-agent"])?;
            println!("{}", k8s::check(&root, &root.join("target/debug/guard-agent"))?);
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
        Cmd::Test(args) => suite::test(&root, args),
        Cmd::Vmtest(args) => suite::vmtest(&root, args),
        Cmd::Fuzz(args) => suite::fuzz(&root, args),
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

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
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
