//! One daemon at a time manages the pinned state: an exclusive flock on a file in /run.
use std::{fs, io, os::fd::AsRawFd as _, path::Path};

use crate::paths::DAEMON_LOCK;

/// Held while alive; the kernel releases the lock when the process exits, however it exits.
pub struct Lock(#[expect(dead_code, reason = "held for its file descriptor")] fs::File);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open {path}")]
    Open { path: &'static str, #[source] source: io::Error },
    #[error("another guard-agent daemon holds {path} (pid {holder})")]
    Held { path: &'static str, holder: String },
}

pub fn acquire() -> Result<Lock, LockError> {
    let open = |source| LockError::Open { path: DAEMON_LOCK, source };
    if let Some(dir) = Path::new(DAEMON_LOCK).parent() {
        fs::create_dir_all(dir).map_err(open)?;
    }
    let file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(DAEMON_LOCK).map_err(open)?;
    // SAFETY: flock on a descriptor we own; non-blocking.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = fs::read_to_string(DAEMON_LOCK).unwrap_or_default().trim().to_owned();
        return Err(LockError::Held { path: DAEMON_LOCK, holder });
    }
    let _ = file.set_len(0);
    let _ = io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes());
    Ok(Lock(file))
}
