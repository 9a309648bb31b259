//! The kernel/user ABI of the deletion budget (`files.delete_budget`): per-policy settings,
//! the per-workload window the programs count in, and the record of a workload that went
//! past its budget.
use core::mem::size_of;

use crate::{CWD_PART_LEN, CWD_PARTS, EventHeader, FILENAME_LEN};

/// `DeleteConfig::action`: past the budget the deleting process is killed (SIGKILL from the
/// system call's exit) and the daemon kills the rest of the workload.
pub const DELETE_ACTION_KILL: u32 = 1;
/// `DeleteConfig::action`: past the budget the deleting process is stopped (SIGSTOP, `HELD`)
/// until a person approves or denies.
pub const DELETE_ACTION_HOLD: u32 = 2;

/// Per-policy deletion budget, indexed by `policy_slot(policy id)` (like `PolicyConfig`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteConfig {
    /// Successful deletions allowed per window; 0: no budget (nothing is counted).
    pub count: u64,
    pub window_ns: u64,
    /// `DELETE_ACTION_*`.
    pub action: u32,
    /// The rule verdicts name.
    pub rule_id: u32,
}
const _: () = assert!(size_of::<DeleteConfig>() == 24);

/// Value of `DELETE_COUNTS`, keyed by the workload's cgroup id (the cgroup one level below
/// the registered agent cgroup: a `launch` session). The count is added to atomically.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteWindow {
    /// `bpf_ktime_get_boot_ns()` when the window began.
    pub window_start: u64,
    /// Successful deletions in this window.
    pub count: u64,
    /// `window_start` of the last window reported past its budget (0: none yet).
    pub reported: u64,
}
const _: () = assert!(size_of::<DeleteWindow>() == 24);

/// `DeletionsEvent::syscall`.
pub const DELETE_SYS_UNLINK: u32 = 1;
pub const DELETE_SYS_UNLINKAT: u32 = 2;
pub const DELETE_SYS_RMDIR: u32 = 3;

/// `DeletionsEvent::dir_depth` when the directory could not be read.
pub const DELETE_DIR_UNKNOWN: u32 = u32::MAX;

/// A workload went past its deletion budget (`EventKind::Deletions`), made at the exit of the
/// deletion that went past it (which has happened: a tracepoint cannot undo it). The header's
/// decision says what the kernel did to the deleting process (`Killed`, `Held`, `WouldKill`,
/// `WouldHold`); `rule_id` is the budget's rule.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DeletionsEvent {
    pub header: EventHeader,
    /// Successful deletions of the workload in the window, this one included.
    pub count: u64,
    pub budget: u64,
    pub window_ns: u64,
    pub window_start: u64,
    /// The cgroup the workload is counted under.
    pub workload_cgroup_id: u64,
    /// `DELETE_SYS_*` of this deletion.
    pub syscall: u32,
    /// `unlinkat`'s dirfd (`AT_FDCWD` = -100 otherwise).
    pub dirfd: i32,
    /// Length of `name` without the NUL.
    pub name_len: u32,
    /// Components in `dir` (innermost first); `DELETE_DIR_UNKNOWN` if unreadable.
    pub dir_depth: u32,
    /// The path as passed to the system call (relative to `dir` unless absolute).
    pub name: [u8; FILENAME_LEN],
    /// The directory `name` is relative to (dirfd's, or the cwd), innermost component first.
    pub dir: [[u8; CWD_PART_LEN]; CWD_PARTS],
}
const _: () = assert!(size_of::<DeletionsEvent>() == size_of::<EventHeader>() + 56 + FILENAME_LEN + CWD_PARTS * CWD_PART_LEN);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: as in lib.rs: `#[repr(C)]`, `Copy`, integers and arrays only, padding written
    // out as fields (sizes asserted above).
    unsafe impl aya::Pod for DeleteConfig {}
    unsafe impl aya::Pod for DeleteWindow {}
    unsafe impl aya::Pod for DeletionsEvent {}
}
