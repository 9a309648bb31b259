//! The Kubernetes packaging check (`deploy/`): a venv with PyPI's kubernetes-validate (the
//! Kubernetes OpenAPI schemas) and helm-python-sdk (Helm v4's Go SDK as a C library: Helm's own
//! renderer and linter), made once under `~/.cache/guard/k8s-venv` and reused, then
//! `deploy/check.py` (what it checks is said there). About a second when the venv is there.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// What the venv holds, pinned: a different list makes a new venv.
const REQUIREMENTS: [&str; 2] = ["kubernetes-validate==1.37.0", "helm-python-sdk==0.2.2"];

fn venv_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("guard/k8s-venv")
}

/// Makes the venv if it is missing or holds other versions; says what it installs. Returns
/// its python.
pub fn ensure_venv() -> anyhow::Result<PathBuf> {
    let dir = venv_dir();
    let python = dir.join("bin/python");
    let stamp = dir.join("guard-requirements.txt");
    let want = REQUIREMENTS.join("\n");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(python);
    }
    println!("[xtask] setup: a Python venv at {} with {} (for the Kubernetes manifest and Helm chart check)", dir.display(), REQUIREMENTS.join(", "));
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&dir), "python3 -m venv")?;
    run(Command::new(dir.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(REQUIREMENTS), "pip install")?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs deploy/check.py against `agent` (for `policy check`); its last line is the result.
pub fn check(root: &Path, agent: &Path) -> anyhow::Result<String> {
    let python = ensure_venv()?;
    let out = Command::new(&python)
        .arg(root.join("deploy/check.py"))
        .arg(root)
        .arg(agent)
        .output()
        .context("running deploy/check.py")?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{}", text.trim());
    }
    Ok(text.trim().lines().last().unwrap_or_default().to_owned())
}
