//! `guard-agent daemon`.
use std::path::PathBuf;

use crate::policy::{self, Policy, PolicyError};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Policy file (YAML), or a directory of them (`*.yaml`, merged in name order). Without
    /// one, the embedded default policy for coding agents is used. Reloaded on SIGHUP and when
    /// the file changes.
    #[arg(long, value_name = "FILE|DIR")]
    pub policy: Option<PathBuf>,
    /// The admin control socket (status, approve, deny, reload), root only.
    #[arg(long, value_name = "PATH", default_value = crate::control::ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// The launch socket `guard-agent launch` talks to.
    #[arg(long, value_name = "PATH", default_value = crate::control::LAUNCH_SOCKET)]
    pub launch_socket: PathBuf,
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
    /// events are dropped and counted per kind; enforcement never waits for it.
    #[arg(long, value_name = "KIB", default_value_t = 1024, value_parser = ring_buffer_kib)]
    pub ring_buffer_kib: u32,
    /// Capacity of each rule map (exec paths, names, prefixes, identities; network prefixes
    /// per family). A policy that needs more is refused before anything is loaded.
    #[arg(long, value_name = "N", default_value_t = crate::loader::DEFAULT_MAP_ENTRIES, value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    pub map_entries: u32,
    /// Also report execs outside agent workloads (as `allowed`, agent null). They are never
    /// enforced; without this flag the kernel does not even send them.
    #[arg(long)]
    pub observe_all_execs: bool,
}

fn ring_buffer_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!("{kib} is not a power of two between 4 and {}", 1 << 20));
    }
    Ok(kib)
}

impl DaemonArgs {
    pub fn load_options(&self) -> crate::loader::Options {
        crate::loader::Options {
            pin_dir: self.pin_dir.clone(),
            ring_buffer_bytes: self.ring_buffer_kib * 1024,
            map_entries: self.map_entries,
            observe_all_execs: self.observe_all_execs,
        }
    }
}

/// Reads and compiles the policy the daemon will enforce. Runs before anything is loaded into
/// the kernel, so a bad policy leaves the system untouched.
pub fn policy(args: &DaemonArgs) -> Result<Policy, PolicyError> {
    let model = match &args.policy {
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
    use anyhow::Context as _;
    // A running daemon would go on believing it enforces: refuse while one holds the lock.
    let _lock = crate::lock::acquire().context("a guard-agent daemon is running; stop it first")?;
    let n = crate::loader::pins::remove_all(&args.pin_dir).with_context(|| format!("removing {}", args.pin_dir.display()))?;
    println!("detached: removed {n} pinned generation(s) from {}", args.pin_dir.display());
    Ok(())
}
