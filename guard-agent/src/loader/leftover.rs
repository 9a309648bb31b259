//! Holds a previous daemon made and never decided. Its approvals died with it, so nobody can
//! decide them now: each process is killed at start (fail closed), after what procfs says about
//! it is read, so the daemon can report every one of them.
use guard_common::Held;

use super::pins::Generation;
use crate::{
    holds::{self, Pidfd},
    policy::eval::ExecContext,
};

/// A held process killed at start, as it was just before the kill.
#[derive(Debug)]
pub struct Leftover {
    pub pid: u32,
    /// Its `HELD` entry: the exec's time and the policy and rule that held it, as ids of the
    /// daemon that held it.
    pub held: Held,
    /// The generation whose `HELD` map had it (its directory name).
    pub generation: String,
    /// What procfs said about the stopped process; `None` if it could not be read (it was
    /// killed all the same).
    pub context: Option<ExecContext>,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// Its cgroup v2 path (relative to the root, with a leading `/`).
    pub cgroup: Option<String>,
}

/// Kills every process `g` still holds, returning those it killed (a process already gone is
/// not reported: whoever ended it made its exit).
pub(super) fn kill_all(g: &Generation) -> Vec<Leftover> {
    let generation = g.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let held = match super::apply::held_in(g) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(generation, error = %e, "cannot read the held processes of a previous daemon");
            return Vec::new();
        }
    };
    held.into_iter().filter_map(|(pid, held)| kill_one(pid, held, &generation)).collect()
}

fn kill_one(pid: u32, held: Held, generation: &str) -> Option<Leftover> {
    // The pidfd first: everything read below, and the kill, are about this process even if
    // another one took its pid meanwhile. It is stopped, so it cannot exit on its own.
    let pidfd = match Pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return None,
        Err(e) => {
            tracing::error!(pid, error = %e, "cannot open a process held by a previous daemon; killing it by pid");
            // SAFETY: sends a signal; no memory is involved.
            let killed = unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0;
            return killed.then(|| describe(pid, held, generation));
        }
    };
    let leftover = describe(pid, held, generation);
    match pidfd.signal(libc::SIGKILL) {
        Ok(()) => Some(leftover),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
        Err(e) => {
            tracing::error!(pid, error = %e, "cannot kill a process held by a previous daemon");
            None
        }
    }
}

/// What procfs says about `pid`, read while it is still stopped.
fn describe(pid: u32, held: Held, generation: &str) -> Leftover {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let context = holds::read_context(pid, exe.as_deref().unwrap_or_default(), None).ok();
    let proc = procfs::process::Process::new(pid as i32).ok();
    let status = proc.as_ref().and_then(|p| p.status().ok());
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)));
    Leftover {
        pid,
        held,
        generation: generation.to_owned(),
        context,
        ppid: status.as_ref().map_or(0, |s| s.ppid as u32),
        uid: status.as_ref().map_or(0, |s| s.ruid),
        gid: status.as_ref().map_or(0, |s| s.rgid),
        comm: status.map(|s| s.name).unwrap_or_default(),
        cgroup,
    }
}
