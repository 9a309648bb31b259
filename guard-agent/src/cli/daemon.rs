//! `guard-agent daemon`.
use std::{net::SocketAddr, path::PathBuf};

pub use crate::config::Settings;
use crate::{
    config::{Config, SinkConfig, map_entries, ring_buffer_kib},
    policy::{self, Policy, PolicyError},
};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Settings file (YAML; installed as /etc/guard/guard.yaml): policy, sockets, sizes, sinks,
    /// metrics. Flags given here win over the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Policy file (YAML), or a directory of them (`*.yaml`, merged in name order). Without
    /// one, the embedded default policy for coding agents is used. Reloaded on SIGHUP and when
    /// the file changes.
    #[arg(long, value_name = "FILE|DIR")]
    pub policy: Option<PathBuf>,
    /// The admin control socket (status, tail, approve, deny, reload), root only
    /// [default: /run/guard/guard.sock].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// The launch socket `guard-agent launch` talks to [default: /run/guard/launch.sock].
    #[arg(long, value_name = "PATH")]
    pub launch_socket: Option<PathBuf>,
    /// A group whose members may launch agents without root (the launch socket becomes 0660
    /// with this group). Without it, only root can launch.
    #[arg(long, value_name = "GROUP")]
    pub launch_group: Option<String>,
    /// On exit, detach every program and remove the pinned state. Without it, enforcement
    /// stays pinned and attached after the daemon stops, and the next daemon adopts it.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Where programs, links and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = crate::paths::PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Size of the event ring buffer in KiB (a power of two, at least 4). When it is full,
    /// events are dropped and counted per kind; enforcement never waits for it [default: 1024].
    #[arg(long, value_name = "KIB", value_parser = ring_buffer_kib)]
    pub ring_buffer_kib: Option<u32>,
    /// Capacity of each rule map (exec paths, names, prefixes, identities; network prefixes
    /// per family). A policy that needs more is refused before anything is loaded
    /// [default: 16384].
    #[arg(long, value_name = "N", value_parser = map_entries)]
    pub map_entries: Option<u32>,
    /// Also report execs outside agent workloads (as `allowed`, agent null). They are never
    /// enforced; without this flag the kernel does not even send them.
    #[arg(long)]
    pub observe_all_execs: bool,
    /// Where the daemon keeps state across restarts (verdict sequence numbers, spools). Without
    /// one, verdict numbering starts at 1 each run.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Off by default.
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_listen)]
    pub metrics: Option<SocketAddr>,
}

pub fn settings(args: &DaemonArgs) -> Result<Settings, PolicyError> {
    let file = match &args.config {
        Some(path) => crate::config::load(path)?,
        None => Config::default(),
    };
    Ok(Settings {
        config: args.config.clone(),
        policy: args.policy.clone().or(file.policy),
        admin_socket: args.admin_socket.clone().or(file.admin_socket).unwrap_or_else(|| crate::control::ADMIN_SOCKET.into()),
        launch_socket: args.launch_socket.clone().or(file.launch_socket).unwrap_or_else(|| crate::control::LAUNCH_SOCKET.into()),
        launch_group: args.launch_group.clone().or(file.launch_group),
        detach_on_exit: args.detach_on_exit,
        pin_dir: args.pin_dir.clone(),
        ring_buffer_kib: args.ring_buffer_kib.or(file.ring_buffer_kib).unwrap_or(crate::config::DEFAULT_RING_BUFFER_KIB),
        map_entries: args.map_entries.or(file.map_entries).unwrap_or(crate::loader::DEFAULT_MAP_ENTRIES),
        observe_all_execs: args.observe_all_execs || file.observe_all_execs.unwrap_or(false),
        sinks: file.sinks.unwrap_or_else(|| vec![SinkConfig::Stdout]),
        metrics: args.metrics.or(file.metrics),
        state_dir: args.state_dir.clone().or(file.state_dir),
        mask_patterns: file.mask_patterns.unwrap_or_default(),
        audit_log: file.audit_log,
        containers: file.containers.unwrap_or_default(),
    })
}

/// Reads and compiles the policy the daemon will enforce. Runs before anything is loaded into
/// the kernel, so a bad policy leaves the system untouched.
pub fn policy(settings: &Settings) -> Result<Policy, PolicyError> {
    let model = match &settings.policy {
        Some(path) => policy::load(path)?,
        None => policy::default_policy(),
    };
    policy::compile::compile(&model, 0)?;
    Ok(model)
}

/// `guard-agent detach`: removes the pinned state, detaching every program.
#[derive(Debug, clap::Args)]
pub struct DetachArgs {
    /// Where programs, links and maps are pinned.
    #[arg(long, value_name = "DIR", default_value = crate::paths::PIN_DIR)]
    pub pin_dir: PathBuf,
}

pub fn detach(args: &DetachArgs) -> anyhow::Result<()> {
    let n = crate::loader::pins::detach_all(&args.pin_dir)?;
    println!("detached: removed {n} pinned generation(s) from {}", args.pin_dir.display());
    Ok(())
}
