//! Held processes: stopped by the kernel at exec (SIGSTOP before their first instruction), read
//! from procfs while stopped, then released (SIGCONT) or killed by the daemon — at once for
//! argv rules, after a person's `approve`/`deny` (or the timeout) for `hold` rules.
//!
//! The kernel's `HELD` map is what keeps a held process from running: the gate program kills
//! it at its first system call if anyone continues it. Releasing removes the entry first.
use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use crate::policy::eval::ExecContext;

/// What procfs says about a stopped process.
pub fn read_context(pid: u32, filename: &str, identity: Option<(u32, u64)>) -> std::io::Result<ExecContext> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))?;
    let mut argv: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if argv.last().is_some_and(String::is_empty) {
        argv.pop();
    }
    let status = procfs::process::Process::new(pid as i32).and_then(|p| p.status()).map_err(std::io::Error::other)?;
    Ok(ExecContext {
        filename: filename.to_owned(),
        exe: fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned()),
        identity,
        argv,
        cwd: fs::read_link(format!("/proc/{pid}/cwd")).ok().map(|p| p.to_string_lossy().into_owned()),
        euid: status.euid,
        sql: None,
    })
}

/// Size of a process's environment in bytes (what a reviewer may want to know about it).
pub fn environ_size(pid: u32) -> Option<usize> {
    fs::read(format!("/proc/{pid}/environ")).ok().map(|e| e.len())
}

/// A process handle that cannot be confused with a later process reusing the pid.
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn open(pid: u32) -> std::io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal on a descriptor we own, with no siginfo.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// A hold waiting for a person.
pub struct Pending {
    pub id: u64,
    pub pid: u32,
    pub pidfd: Pidfd,
    pub since: Instant,
    pub since_ms: u64,
    pub deadline: Instant,
    pub timeout: Duration,
    pub policy_id: u32,
    pub rule_id: u32,
    pub agent: Option<String>,
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    /// The `held` verdict, to build the final one from.
    pub verdict: crate::verdict::Verdict,
}

#[derive(Default)]
pub struct Holds {
    next: u64,
    pending: BTreeMap<u64, Pending>,
}

impl Holds {
    pub fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub fn insert(&mut self, p: Pending) {
        self.pending.insert(p.id, p);
    }

    pub fn take(&mut self, id: u64) -> Option<Pending> {
        self.pending.remove(&id)
    }

    pub fn take_pid(&mut self, pid: u32) -> Option<Pending> {
        let id = self.pending.values().find(|p| p.pid == pid)?.id;
        self.pending.remove(&id)
    }

    /// Holds whose time is up.
    pub fn expired(&mut self, now: Instant) -> Vec<Pending> {
        let ids: Vec<u64> = self.pending.values().filter(|p| p.deadline <= now).map(|p| p.id).collect();
        ids.into_iter().filter_map(|id| self.pending.remove(&id)).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.pending.values()
    }
}
