//! The kernel/user ABI of protected paths (`files.protect`): which system calls are watched
//! (`FileSyscall`, filled by the loader from the tracefs formats) and the record of a call that
//! failed with EACCES or EPERM (`FileEvent`, `EventKind::FileDenied`).
use core::mem::size_of;

use crate::{CWD_PART_LEN, CWD_PARTS, EventHeader, FILENAME_LEN};

/// `FileSyscall::op` / `FileEvent::op`: an open (write, truncate or create: see the flags).
pub const FILE_OP_OPEN: u32 = 1;
/// unlink, unlinkat, rmdir.
pub const FILE_OP_DELETE: u32 = 2;
/// rename, renameat, renameat2 (`path` the old name, `path2` the new one).
pub const FILE_OP_RENAME: u32 = 3;
/// truncate (`path`), ftruncate (`dirfd` is the file descriptor).
pub const FILE_OP_TRUNCATE: u32 = 4;
/// mkdir, mknod, symlink, link (`path` the new name).
pub const FILE_OP_CREATE: u32 = 5;

/// Syscall numbers the watched-syscall table holds.
pub const FILE_SYSCALL_SLOTS: u32 = 1024;

/// Value of `FILE_SYSCALLS`, indexed by syscall number: what the call does and where its
/// arguments are in the `sys_enter_*` record (0: it has no such argument).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileSyscall {
    /// `FILE_OP_*`; 0: not watched.
    pub op: u32,
    pub path: u32,
    pub path2: u32,
    pub dirfd: u32,
    pub dirfd2: u32,
    pub flags: u32,
    /// openat2's `struct open_how *` (its first member is the `u64` flags).
    pub how: u32,
    /// Open flags of a call that has none (creat: `O_CREAT|O_WRONLY|O_TRUNC`).
    pub fixed_flags: u32,
}
const _: () = assert!(size_of::<FileSyscall>() == 32);

/// `FileEvent::dir_flags`: the directory chain is incomplete (deeper than `CWD_PARTS`, or a
/// component longer than `CWD_PART_LEN - 1`).
pub const FILE_DIR_TRUNCATED: u32 = 1 << 0;
/// `FileEvent::dir_flags`: the chain ended at the root of another mount than the task's root.
pub const FILE_DIR_IN_MOUNT: u32 = 1 << 1;
/// `FileEvent::dir_flags`: no chain (the path is absolute, or the directory was unreadable).
pub const FILE_DIR_NONE: u32 = 1 << 2;

/// A watched file call of an agent workload that failed with EACCES or EPERM
/// (`EventKind::FileDenied`). Built at `sys_enter` (the path arguments, and the directory a
/// relative `path` starts from, read while the call is made), sent at `sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub header: EventHeader,
    /// `FILE_OP_*`.
    pub op: u32,
    pub syscall_nr: u32,
    /// The dirfd of `path` (`AT_FDCWD` = -100), or ftruncate's file descriptor.
    pub dirfd: i32,
    pub dirfd2: i32,
    /// Open flags (O_*), unlinkat's or renameat2's flags.
    pub flags: u32,
    /// The call's return value (-13 EACCES, -1 EPERM).
    pub ret: i32,
    pub path_len: u32,
    pub path2_len: u32,
    /// `FILE_DIR_*`.
    pub dir_flags: u32,
    /// Components in `dir`.
    pub dir_depth: u32,
    /// (`s_dev`, inode) of the directory `path` is relative to (or ftruncate's file); 0 unknown.
    pub dir_dev: u32,
    pub _pad: u32,
    pub dir_ino: u64,
    /// That directory's path, innermost component first, each NUL-padded.
    pub dir: [[u8; CWD_PART_LEN]; CWD_PARTS],
    pub path: [u8; FILENAME_LEN],
    pub path2: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<FileEvent>() == size_of::<EventHeader>() + 56 + CWD_PARTS * CWD_PART_LEN + 2 * FILENAME_LEN);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: as in lib.rs: `#[repr(C)]`, `Copy`, integers and arrays only, padding written
    // out as fields (sizes asserted above).
    unsafe impl aya::Pod for FileSyscall {}
    unsafe impl aya::Pod for FileEvent {}
}
