//! The command line: one module per subcommand.
pub mod admin;
pub mod audit;
pub mod daemon;
pub mod install;
pub mod launch;
pub mod policy;
pub mod tail;
pub mod verdicts;

use clap::{Parser, Subcommand};

/// guard: an eBPF enforcer for AI-agent workloads.
///
/// Kills destructive binaries before they run and refuses forbidden connections for processes
/// in agent cgroups, and reports every decision as a JSON verdict.
#[derive(Debug, Parser)]
#[command(name = "guard-agent", version, after_help = "Examples:\n  guard-agent daemon\n  guard-agent daemon --policy /etc/guard/policy.yaml\n  guard-agent launch --agent claude --label ticket=OPS-12 -- bash -c 'make test'\n  guard-agent policy check my-policy.yaml\n  guard-agent policy explain @default -- rm -rf --no-preserve-root /\n  guard-agent status\n  guard-agent tail --verdict killed,denied\n  guard-agent approve 3")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the enforcer in the foreground, printing verdicts as JSON lines on stdout.
    Daemon(daemon::DaemonArgs),
    /// Detach every program and remove the pinned state (after the daemon stopped without
    /// --detach-on-exit).
    Detach(daemon::DetachArgs),
    /// Run a command as a tagged agent workload.
    Launch(launch::LaunchArgs),
    /// Work with policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// What the running daemon enforces: tier, programs, policy, sessions, pending holds.
    Status(admin::StatusArgs),
    /// Probe this host's kernel without a daemon: which enforcement tier guard would choose, why,
    /// and which mechanism enforces each capability (loads and attaches each BPF LSM hook once).
    Probe(admin::ProbeArgs),
    /// Live verdicts from the running daemon, one readable line each (`--json` for raw).
    Tail(tail::TailArgs),
    /// Work with verdict lines: `verdicts ecs` turns OCSF lines on stdin into ECS lines (Elastic).
    #[command(subcommand)]
    Verdicts(verdicts::VerdictsCommand),
    /// Let a held process run.
    Approve(admin::HoldArgs),
    /// Kill a held process.
    Deny(admin::HoldArgs),
    /// Reload the policy (as SIGHUP does).
    Reload(admin::ReloadArgs),
    /// The tamper-evident verdict log: make its signing key, verify it.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Install the binary, the systemd units (not enabled or started) and the default
    /// configuration; idempotent.
    Install(install::InstallArgs),
    /// Remove what install put in place; configuration the admin changed, state and verdict logs
    /// stay unless --purge.
    Uninstall(install::UninstallArgs),
}
