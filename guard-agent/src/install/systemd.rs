//! The few systemctl calls install and uninstall make (only when systemd is the init system).
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// systemd is the init system here (what sd_booted() checks).
pub fn running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl").args(args).output().context("running systemctl")?;
    if !out.status.success() {
        bail!("`systemctl {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// systemd knows the unit (it has a unit file, or is running).
pub fn loaded(unit: &str) -> anyhow::Result<bool> {
    let out = Command::new("systemctl")
        .args(["show", "--property=LoadState", "--value", unit])
        .output()
        .context("running systemctl show")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() != "not-found")
}
