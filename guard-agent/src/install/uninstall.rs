//! `guard-agent uninstall`: takes away what install made — never a directory that was there
//! before, never an edited config file or guard's state and verdict logs without `--purge`.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Kind, Layout, Report, SERVICE, STATE_DIR, STATE_FILE, Status, fsops, items, state::State, systemd};

/// `guard-agent uninstall`.
pub fn uninstall(layout: &Layout, purge: bool, report: &mut Report) -> anyhow::Result<()> {
    layout.check_privilege("uninstall")?;
    if layout.on_host() {
        stop_service(report)?;
        detach_pinned()?;
    }
    let state_file = layout.at(STATE_FILE);
    let mut state = State::read(&state_file)?;
    let items = items(layout);
    let first = report.lines.len();
    for item in &items {
        let path = layout.at(&item.path);
        match item.kind {
            Kind::Dir => {}
            Kind::Binary | Kind::Unit(_) => {
                let status = if fsops::remove_file(&path)? { Status::Removed } else { Status::Absent };
                report.add(status, &path, None);
            }
            Kind::Conffile(text) => remove_conffile(&path, &item.path, text.as_bytes(), &state, purge, report)?,
        }
    }
    fsops::remove_file(&state_file)?;
    // Deepest first: policy.d before /etc/guard. The state directory goes last: it keeps the
    // record if anything else stays.
    for item in items.iter().rev().filter(|i| matches!(i.kind, Kind::Dir) && i.path != STATE_DIR) {
        remove_guard_dir(&layout.at(&item.path), state.dirs.contains(Path::new(&item.path)), purge, report)?;
    }
    let state_dir = layout.at(STATE_DIR);
    let kept = report.lines[first..].iter().any(|(s, _)| matches!(s, Status::Kept | Status::KeptModified));
    let keep_record = kept && fsops::entries(&state_dir)? == Some(0);
    if keep_record {
        report.add(Status::Kept, &state_dir, Some("holds the record of what install made, for `uninstall --purge`".to_owned()));
        state.dirs.remove(Path::new(STATE_DIR));
    } else {
        remove_guard_dir(&state_dir, state.dirs.contains(Path::new(STATE_DIR)), purge, report)?;
    }
    remove_created_dirs(layout, &state, report)?;
    if keep_record {
        state.dirs.insert(STATE_DIR.into());
    }
    keep_state(layout, &mut state)?;
    if layout.on_host() && systemd::running() {
        systemd::systemctl(&["daemon-reload"])?;
        report.say("systemd: reloaded units");
    }
    Ok(())
}

fn remove_conffile(path: &Path, target: &str, default: &[u8], state: &State, purge: bool, report: &mut Report) -> anyhow::Result<()> {
    let Some(content) = fsops::read_if_exists(path)? else {
        report.add(Status::Absent, path, None);
        return Ok(());
    };
    let untouched = content == default || state.untouched(Path::new(target), &content);
    if untouched || purge {
        fsops::remove_file(path)?;
        report.add(Status::Removed, path, (!untouched).then(|| "modified by admin (--purge)".to_owned()));
    } else {
        report.add(Status::KeptModified, path, Some("--purge removes it".to_owned()));
    }
    Ok(())
}

/// One of guard's own directories: removed when empty, or with everything in it on `--purge`.
fn remove_guard_dir(dir: &Path, made_by_install: bool, purge: bool, report: &mut Report) -> anyhow::Result<()> {
    let Some(n) = fsops::entries(dir)? else {
        report.add(Status::Absent, dir, None);
        return Ok(());
    };
    if !made_by_install {
        report.add(Status::Kept, dir, Some("it was there before install".to_owned()));
        return Ok(());
    }
    if n == 0 || purge {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        report.add(Status::Removed, dir, (n > 0).then(|| format!("with the {n} entries in it (--purge)")));
        return Ok(());
    }
    let why = if dir.ends_with("log/guard") {
        "verdict logs are evidence and stay; --purge deletes them"
    } else {
        "--purge deletes it with what it holds"
    };
    let entries = if n == 1 { "1 entry".to_owned() } else { format!("{n} entries") };
    report.add(Status::Kept, dir, Some(format!("holds {entries}; {why}")));
    Ok(())
}

/// The other directories install made (parents such as /usr/local/bin), deepest first, if they
/// are empty now. A directory that was there before install is never in the record.
fn remove_created_dirs(layout: &Layout, state: &State, report: &mut Report) -> anyhow::Result<()> {
    let mut dirs: Vec<&PathBuf> = state.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let here = layout.root.join(dir.strip_prefix("/").unwrap_or(dir));
        if fsops::entries(&here)? == Some(0) {
            std::fs::remove_dir(&here).with_context(|| format!("removing {}", here.display()))?;
            report.add(Status::Removed, &here, Some("made by install".to_owned()));
        }
    }
    Ok(())
}

/// When the state directory stays (daemon state, or something else of guard's was kept), what
/// install made and is still there stays recorded, so a later `uninstall --purge` can finish.
fn keep_state(layout: &Layout, state: &mut State) -> anyhow::Result<()> {
    if !layout.at(STATE_DIR).is_dir() {
        return Ok(());
    }
    let exists = |p: &Path| layout.root.join(p.strip_prefix("/").unwrap_or(p)).exists();
    state.dirs.retain(|d| exists(d));
    state.conffiles.retain(|f, _| exists(f));
    state.write(&layout.at(STATE_FILE))
}

/// Stops and disables the service before its files go.
fn stop_service(report: &Report) -> anyhow::Result<()> {
    if !systemd::running() {
        return Ok(());
    }
    if !systemd::loaded(SERVICE)? {
        report.say(&format!("systemd: {SERVICE} is not loaded, nothing to stop"));
        return Ok(());
    }
    systemd::systemctl(&["disable", "--now", SERVICE])?;
    report.say(&format!("systemd: stopped and disabled {SERVICE}"));
    Ok(())
}

/// A stopped daemon leaves its programs pinned and enforcing (so a restart has no gap); an
/// uninstalled guard must leave nothing enforcing that no binary could detach any more.
fn detach_pinned() -> anyhow::Result<()> {
    let pin_dir = PathBuf::from(crate::paths::PIN_DIR);
    if !pin_dir.exists() {
        return Ok(());
    }
    let n = crate::loader::pins::detach_all(&pin_dir).context("uninstall detaches the pinned enforcement first, so nothing enforces without a binary")?;
    println!("detached: removed {n} pinned generation(s) from {}", pin_dir.display());
    Ok(())
}

