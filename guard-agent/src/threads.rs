//! The daemon's writer threads (standard output, files, the audit log), joined at shutdown
//! without waiting past a deadline.
use std::{
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Waits until `thread` ends or `deadline` passes: its outcome, or the thread itself when it
/// is still running then (it is left to the process's exit).
pub fn join_by<T>(thread: JoinHandle<T>, deadline: Instant) -> Result<std::thread::Result<T>, JoinHandle<T>> {
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if thread.is_finished() { Ok(thread.join()) } else { Err(thread) }
}
