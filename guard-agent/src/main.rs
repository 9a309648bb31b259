//! guard-agent: the daemon and command line of guard.
mod audit;
mod cgroup;
mod cli;
mod config;
mod container;
mod control;
mod correlate;
mod dns;
mod daemon;
mod ecs;
mod events;
#[cfg(test)]
mod fuzz;
mod holds;
mod install;
mod landlock;
mod loader;
mod lock;
mod mask;
mod metrics;
mod notify;
mod paths;
mod policy;
mod proctable;
mod seq;
mod sql;
mod sessions;
mod sinks;
mod threads;
mod time;
mod verdict;

use std::process::ExitCode;

use clap::Parser as _;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GUARD_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Daemon(args) => {
            // Policy errors are reported as `file:line:column: message`, alone, before anything
            // touches the kernel.
            let settings = match cli::daemon::settings(&args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let model = match cli::daemon::policy(&settings) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(&anyhow::Error::from(e).context("starting the runtime")),
            };
            match rt.block_on(daemon::run(model, &settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.downcast_ref::<daemon::BadSettings>().is_some() => {
                    fail(&e);
                    ExitCode::from(2)
                }
                Err(e) => fail(&e),
            }
        }
        Command::Detach(args) => match cli::daemon::detach(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Launch(args) => match cli::launch::run(args) {
            Ok(status) => cli::launch::mirror(status),
            Err(e) => fail(&e),
        },
        Command::Status(args) => done(cli::admin::status(&args)),
        Command::Probe(args) => done(cli::admin::probe(&args)),
        Command::Tail(args) => done(cli::tail::run(&args)),
        Command::Verdicts(cmd) => done(cli::verdicts::run(&cmd)),
        Command::Approve(args) => done(cli::admin::decide(&args, true)),
        Command::Deny(args) => done(cli::admin::decide(&args, false)),
        Command::Reload(args) => done(cli::admin::reload(&args)),
        Command::Audit(cmd) => cli::audit::run(cmd),
        Command::Install(args) => done(cli::install::install(&args)),
        Command::Uninstall(args) => done(cli::install::uninstall(&args)),
        Command::Policy(cmd) => match cli::policy::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

fn done(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("guard-agent: error: {e:#}");
    ExitCode::FAILURE
}
