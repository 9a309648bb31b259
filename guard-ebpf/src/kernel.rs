//! Safe wrappers around the kernel reads the programs need. All kernel-side `unsafe` for reading
//! kernel memory lives here.
//!
//! Struct offsets are globals the loader fills from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`); 0 means "not resolved" and the read is skipped.
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf,
    generated::{bpf_get_current_task, bpf_ktime_get_boot_ns},
};
use guard_common::{
    ARGV_LEN, BASENAME_LEN, CGROUP_NAME_LEN, CWD_PART_LEN, CWD_PARTS, CWD_UNKNOWN, EVENT_FLAG_ARGV_TRUNCATED,
    EVENT_FLAG_CWD_IN_MOUNT, EVENT_FLAG_CWD_TRUNCATED, EventHeader, EventKind, ExecEvent,
    ExecInodeKey, FILE_DIR_IN_MOUNT, FILE_DIR_NONE, FILE_DIR_TRUNCATED, FileEvent, NO_LOGINUID,
};

use crate::workload::Workload;

#[unsafe(no_mangle)]
static TASK_REAL_PARENT: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_PID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_EXIT_CODE: u32 = 0;
#[unsafe(no_mangle)]
static TASK_CRED: u32 = 0;
#[unsafe(no_mangle)]
static CRED_EUID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_LOGINUID: u32 = 0;
#[unsafe(no_mangle)]
static TASK_FS: u32 = 0;
#[unsafe(no_mangle)]
static FS_PWD_DENTRY: u32 = 0;
#[unsafe(no_mangle)]
static FS_PWD_MNT: u32 = 0;
#[unsafe(no_mangle)]
static FS_ROOT_MNT: u32 = 0;
#[unsafe(no_mangle)]
static MM_ARG_START: u32 = 0;
#[unsafe(no_mangle)]
static MM_ARG_END: u32 = 0;
#[unsafe(no_mangle)]
static TASK_CGROUPS: u32 = 0;
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_NODE_NAME: u32 = 0;
#[unsafe(no_mangle)]
static TASK_MM: u32 = 0;
#[unsafe(no_mangle)]
static MM_EXE_FILE: u32 = 0;
/// `file.f_path.dentry`, one offset.
#[unsafe(no_mangle)]
static FILE_DENTRY: u32 = 0;
/// `linux_binprm.filename` and `linux_binprm.file`: the exec `lsm/bprm_check_security` judges.
#[unsafe(no_mangle)]
static BPRM_FILENAME: u32 = 0;
#[unsafe(no_mangle)]
static BPRM_FILE: u32 = 0;
/// `dentry.d_name.name`, one offset.
#[unsafe(no_mangle)]
static DENTRY_NAME: u32 = 0;

#[unsafe(no_mangle)]
static DENTRY_PARENT: u32 = 0;
#[unsafe(no_mangle)]
static DENTRY_INODE: u32 = 0;
#[unsafe(no_mangle)]
static INODE_INO: u32 = 0;
#[unsafe(no_mangle)]
static INODE_SB: u32 = 0;
#[unsafe(no_mangle)]
static SB_DEV: u32 = 0;
/// `task_struct.files`, `files_struct.fdt`, `fdtable.fd`, `fdtable.max_fds`, `file.f_path.mnt`
/// (the deletion budget and protected paths read a dirfd's directory through them).
#[unsafe(no_mangle)]
static TASK_FILES: u32 = 0;
#[unsafe(no_mangle)]
static FILES_FDT: u32 = 0;
#[unsafe(no_mangle)]
static FDT_FD: u32 = 0;
#[unsafe(no_mangle)]
static FDT_MAX_FDS: u32 = 0;
#[unsafe(no_mangle)]
static FILE_MNT: u32 = 0;

/// `TASK_COMM_LEN - 1`: a comm this long may have been cut short.
const COMM_MAX: usize = 15;

/// Reads a global the loader may have overridden. The volatile read keeps the compiler from
/// folding the default value in; the verifier then sees the real (frozen, read-only) value.
#[inline(always)]
pub fn global(g: &'static u32) -> u32 {
    // SAFETY: `g` is a valid, aligned static.
    unsafe { core::ptr::read_volatile(g) }
}

/// All zeroes, the source of [`zero`] and [`zeroed`]. Nothing writes it.
static ZEROES: [u8; 512] = [0; 512];

/// Zeroes `*x` (an integer array or an event: valid all zero) with one helper call. `x = [0; N]`
/// or `mem::zeroed()` of more than a few words compiles to a memset loop, which the 6.1 verifier
/// walks once per state of the code before it (the cgroup ancestry walk, a path scan): past its
/// limit of a million instructions.
#[inline(always)]
pub fn zero<T>(x: &mut T) {
    const { assert!(size_of::<T>() <= 512) };
    // SAFETY: copies size_of::<T>() bytes of ZEROES (at least that long) over `*x`, whose types
    // here are all valid all zero.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (x as *mut T).cast(),
            size_of::<T>() as u32,
            core::ptr::addr_of!(ZEROES).cast(),
        );
    }
}

/// A zeroed `T` on the stack (see [`zero`]).
#[inline(always)]
pub fn zeroed<T>(slot: &mut core::mem::MaybeUninit<T>) -> &mut T {
    const { assert!(size_of::<T>() <= 512) };
    // SAFETY: as in `zero`: the slot is all zero after the copy, a valid T.
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            slot.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            core::ptr::addr_of!(ZEROES).cast(),
        );
        slot.assume_init_mut()
    }
}

/// Reads a `T` at `base + off` of kernel memory, or `None` if the offset is unresolved or the
/// read faults.
#[inline(always)]
fn read_field<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and returns an error instead of faulting.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// Fills the fields every event has. Only for tracing programs (it reads the current task).
#[inline(always)]
pub fn fill_task_header(h: &mut EventHeader, kind: EventKind, w: &Workload) {
    fill_header(h, kind, w);
    // SAFETY: returns a pointer to the current task, only ever passed to read_field.
    let task = unsafe { bpf_get_current_task() };
    h.ppid = read_field::<u64>(task, global(&TASK_REAL_PARENT))
        .and_then(|parent| read_field::<u32>(parent, global(&TASK_TGID)))
        .unwrap_or(0);
    h.cgroup_name = [0; CGROUP_NAME_LEN];
    let name_ptr = read_field::<u64>(task, global(&TASK_CGROUPS))
        .and_then(|css_set| read_field::<u64>(css_set, global(&CSS_SET_DFL_CGRP)))
        .and_then(|cgrp| read_field::<u64>(cgrp, global(&CGROUP_KN)))
        .and_then(|kn| read_field::<u64>(kn, global(&KERNFS_NODE_NAME)));
    if let Some(p) = name_ptr {
        // SAFETY: reads a NUL-terminated kernel string into a bounded buffer; faults are errors.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(p as *const u8, &mut h.cgroup_name) };
    }
}

/// Fills the fields any program type can get. `ppid` and `cgroup_name` stay 0: the daemon
/// resolves them for live processes (connects come from a live process).
#[inline(always)]
pub fn fill_header(h: &mut EventHeader, kind: EventKind, w: &Workload) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    h.kind = kind as u32;
    h.decision = 0;
    // SAFETY: no arguments, no memory access.
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.pid = pid_tgid as u32;
    h.tgid = (pid_tgid >> 32) as u32;
    h.ppid = 0;
    h.uid = uid_gid as u32;
    h.gid = (uid_gid >> 32) as u32;
    h.policy_id = w.policy_id;
    h.cgroup_id = w.cgroup_id;
    h.matched_cgroup_id = w.matched_cgroup_id;
    h.parent_cgroup_id = w.parent_cgroup_id;
    h.rule_id = guard_common::NO_RULE;
    h.flags = w.flags;
    h.depth_below_match = w.depth_below_match;
    h._pad = 0;
}

/// The current task's `comm` as a NUL-padded basename key. False when it may be truncated.
#[inline(always)]
pub fn comm_name(name: &mut [u8; BASENAME_LEN]) -> bool {
    let Ok(comm) = bpf_get_current_comm() else { return false };
    // The helper pads with NULs; a NUL within the first COMM_MAX bytes means the name is whole.
    if comm[COMM_MAX - 1] != 0 {
        return false;
    }
    *name = [0; BASENAME_LEN];
    name[..comm.len()].copy_from_slice(&comm);
    true
}

/// The current task's executable's dentry (`task->mm->exe_file->f_path.dentry`), set by
/// begin_new_exec() before `sched_process_exec` fires; 0 if unknown.
///
/// Kernel pointers are passed around as plain `u64` with 0 for "none": LLVM may copy the
/// uninitialised payload of an `Option::None`, and the verifier rejects reading it.
#[inline(always)]
pub fn exe_dentry() -> u64 {
    // SAFETY: returns a pointer to the current task, only ever passed to read_field.
    let task = unsafe { bpf_get_current_task() };
    read_field::<u64>(task, global(&TASK_MM))
        .and_then(|mm| read_field::<u64>(mm, global(&MM_EXE_FILE)))
        .and_then(|file| read_field::<u64>(file, global(&FILE_DENTRY)))
        .unwrap_or(0)
}

/// The dentry's own name as a NUL-padded basename key. False when unresolved or too long to
/// compare whole.
#[inline(always)]
pub fn dentry_name(dentry: u64, name: &mut [u8; BASENAME_LEN]) -> bool {
    let Some(ptr) = read_field::<u64>(dentry, global(&DENTRY_NAME)) else {
        return false;
    };
    *name = [0; BASENAME_LEN];
    // SAFETY: reads a NUL-terminated kernel string into a bounded buffer; faults are errors.
    match unsafe { bpf_probe_read_kernel_str_bytes(ptr as *const u8, name) } {
        // A name that filled the buffer was cut: never match a rule by its prefix.
        Ok(s) => !s.is_empty() && s.len() < BASENAME_LEN - 1,
        Err(_) => false,
    }
}

/// Writes (`s_dev`, inode number) of the dentry's inode into `key`; false if unreadable.
#[inline(always)]
pub fn dentry_identity(dentry: u64, key: &mut ExecInodeKey) -> bool {
    let inode = read_field::<u64>(dentry, global(&DENTRY_INODE)).unwrap_or(0);
    let sb = read_field::<u64>(inode, global(&INODE_SB)).unwrap_or(0);
    key.ino = read_field::<u64>(inode, global(&INODE_INO)).unwrap_or(0);
    key.dev = read_field::<u32>(sb, global(&SB_DEV)).unwrap_or(0);
    key.ino != 0
}

/// The dentry a `struct file` was opened by; 0 if unreadable.
#[inline(always)]
pub fn file_dentry(file: u64) -> u64 {
    read_field::<u64>(file, global(&FILE_DENTRY)).unwrap_or(0)
}

/// Copies a dentry's name (NUL-terminated) into `buf`: its length without the NUL, 0 if
/// unreadable.
#[inline(always)]
pub fn dentry_name_into(dentry: u64, buf: &mut [u8]) -> usize {
    let Some(name) = read_field::<u64>(dentry, global(&DENTRY_NAME)) else {
        return 0;
    };
    // SAFETY: reads a NUL-terminated kernel string into a bounded buffer; faults are errors.
    unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, buf) }.map(|s| s.len()).unwrap_or(0)
}

/// The dentry's parent, or 0 at the root of its filesystem (where it is its own parent).
#[inline(always)]
pub fn dentry_parent(dentry: u64) -> u64 {
    match read_field::<u64>(dentry, global(&DENTRY_PARENT)) {
        Some(p) if p != dentry => p,
        _ => 0,
    }
}

/// (pid, tgid) of a task; (0, 0) if unreadable.
#[inline(always)]
pub fn task_ids(task: u64) -> (u32, u32) {
    (read_field::<u32>(task, global(&TASK_PID)).unwrap_or(0), read_field::<u32>(task, global(&TASK_TGID)).unwrap_or(0))
}

/// The current task's `exit_code`; 0 if unreadable.
#[inline(always)]
pub fn current_exit_code() -> u32 {
    // SAFETY: returns a pointer to the current task, only ever passed to read_field.
    let task = unsafe { bpf_get_current_task() };
    read_field::<u32>(task, global(&TASK_EXIT_CODE)).unwrap_or(0)
}

/// Fills what an exec event says about the new image beyond its filename: effective and login
/// uids, comm, cwd (innermost component first) and argv (its first `ARGV_LEN` bytes).
#[inline(always)]
pub fn fill_exec_details(ev: &mut ExecEvent, argv: bool) {
    // SAFETY: returns a pointer to the current task, only ever passed to read_field.
    let task = unsafe { bpf_get_current_task() };
    ev.euid = read_field::<u64>(task, global(&TASK_CRED)).and_then(|c| read_field::<u32>(c, global(&CRED_EUID))).unwrap_or(0);
    ev.loginuid = read_field::<u32>(task, global(&TASK_LOGINUID)).unwrap_or(NO_LOGINUID);
    ev.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // Filled by the identity check in exec::decide when the executed file is readable.
    ev.exe_dev = 0;
    ev.exe_ino = 0;
    fill_cwd(task, ev);
    if argv {
        fill_argv(task, ev);
    } else {
        ev.argv_len = 0;
    }
}

/// `bprm->filename` (the name passed to execve) and `bprm->file`'s dentry, for
/// `lsm/bprm_check_security`. (0, 0) when the offsets are unresolved.
#[inline(always)]
pub fn bprm_target(bprm: u64) -> (u64, u64) {
    let filename = read_field::<u64>(bprm, global(&BPRM_FILENAME)).unwrap_or(0);
    let dentry = read_field::<u64>(bprm, global(&BPRM_FILE)).and_then(|f| read_field::<u64>(f, global(&FILE_DENTRY))).unwrap_or(0);
    (filename, dentry)
}

#[inline(always)]
fn fill_cwd(task: u64, ev: &mut ExecEvent) {
    zero(&mut ev.cwd);
    ev.cwd_depth = 0;
    let fs = read_field::<u64>(task, global(&TASK_FS)).unwrap_or(0);
    let mut d = read_field::<u64>(fs, global(&FS_PWD_DENTRY)).unwrap_or(0);
    if d == 0 {
        ev.cwd_depth = CWD_UNKNOWN;
        return;
    }
    for i in 0..CWD_PARTS {
        let parent = dentry_parent(d);
        if parent == 0 {
            break;
        }
        if let Some(name) = read_field::<u64>(d, global(&DENTRY_NAME)) {
            // SAFETY: reads a NUL-terminated kernel string into a bounded buffer.
            if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut ev.cwd[i]) } {
                if s.len() >= CWD_PART_LEN - 1 {
                    ev.header.flags |= EVENT_FLAG_CWD_TRUNCATED;
                }
            }
        }
        ev.cwd_depth = i as u32 + 1;
        d = parent;
    }
    if dentry_parent(d) != 0 {
        ev.header.flags |= EVENT_FLAG_CWD_TRUNCATED;
    }
    let pwd_mnt = read_field::<u64>(fs, global(&FS_PWD_MNT)).unwrap_or(0);
    let root_mnt = read_field::<u64>(fs, global(&FS_ROOT_MNT)).unwrap_or(0);
    if pwd_mnt != root_mnt {
        ev.header.flags |= EVENT_FLAG_CWD_IN_MOUNT;
    }
}

#[inline(always)]
fn fill_argv(task: u64, ev: &mut ExecEvent) {
    ev.argv_len = 0;
    let mm = read_field::<u64>(task, global(&TASK_MM)).unwrap_or(0);
    let start = read_field::<u64>(mm, global(&MM_ARG_START)).unwrap_or(0);
    let end = read_field::<u64>(mm, global(&MM_ARG_END)).unwrap_or(0);
    if start == 0 || end <= start {
        return;
    }
    let mut len = (end - start) as usize;
    if len > ARGV_LEN {
        len = ARGV_LEN;
        ev.header.flags |= EVENT_FLAG_ARGV_TRUNCATED;
    }
    // The strings were copied onto the new stack by the kernel a moment ago: present in memory.
    // SAFETY: bpf_probe_read_user checks the address and returns an error instead of faulting.
    if unsafe { bpf_probe_read_user_buf(start as *const u8, &mut ev.argv[..len]) }.is_ok() {
        ev.argv_len = len as u32;
    }
}

/// The directory a relative path of a file call starts from (the cwd for `AT_FDCWD`, else the
/// file of `dirfd`), or ftruncate's file (`file_itself`): its identity and its path
/// components, innermost first, into `ev.dir`. Sets `FILE_DIR_*` in `ev.dir_flags`.
#[inline(always)]
pub fn fill_file_dir(ev: &mut FileEvent, dirfd: i32, file_itself: bool) {
    zero(&mut ev.dir);
    ev.dir_depth = 0;
    ev.dir_dev = 0;
    ev.dir_ino = 0;
    // SAFETY: returns a pointer to the current task, only ever passed to read_field.
    let task = unsafe { bpf_get_current_task() };
    let fs = read_field::<u64>(task, global(&TASK_FS)).unwrap_or(0);
    let root_mnt = read_field::<u64>(fs, global(&FS_ROOT_MNT)).unwrap_or(0);
    let (mut d, mnt) = if dirfd == -100 && !file_itself {
        (read_field::<u64>(fs, global(&FS_PWD_DENTRY)).unwrap_or(0), read_field::<u64>(fs, global(&FS_PWD_MNT)).unwrap_or(0))
    } else if dirfd >= 0 {
        let file = read_field::<u64>(task, global(&TASK_FILES))
            .and_then(|files| read_field::<u64>(files, global(&FILES_FDT)))
            .and_then(|fdt| read_field::<u64>(fdt, global(&FDT_FD)))
            .map(|arr| fd_entry(arr, dirfd as u32))
            .unwrap_or(0);
        (read_field::<u64>(file, global(&FILE_DENTRY)).unwrap_or(0), read_field::<u64>(file, global(&FILE_MNT)).unwrap_or(0))
    } else {
        (0, 0)
    };
    if d == 0 {
        ev.dir_flags = FILE_DIR_NONE;
        return;
    }
    let mut key = ExecInodeKey { policy_id: 0, dev: 0, ino: 0 };
    if dentry_identity(d, &mut key) {
        ev.dir_dev = key.dev;
        ev.dir_ino = key.ino;
    }
    ev.dir_flags = 0;
    for i in 0..CWD_PARTS {
        let parent = dentry_parent(d);
        if parent == 0 {
            break;
        }
        if let Some(name) = read_field::<u64>(d, global(&DENTRY_NAME)) {
            // SAFETY: reads a NUL-terminated kernel string into a bounded buffer.
            match unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut ev.dir[i]) } {
                Ok(s) if s.len() < CWD_PART_LEN - 1 => {}
                _ => ev.dir_flags |= FILE_DIR_TRUNCATED,
            }
        }
        ev.dir_depth = i as u32 + 1;
        d = parent;
    }
    if dentry_parent(d) != 0 {
        ev.dir_flags |= FILE_DIR_TRUNCATED;
    }
    if mnt != root_mnt {
        ev.dir_flags |= FILE_DIR_IN_MOUNT;
    }
}

/// `fdtable.fd[fd]`: the `struct file *` of a descriptor; 0 if unreadable.
#[inline(always)]
fn fd_entry(arr: u64, fd: u32) -> u64 {
    if arr == 0 {
        return 0;
    }
    let at = arr + u64::from(fd & 0xfffff) * 8;
    // SAFETY: bpf_probe_read_kernel checks the address and returns an error instead of faulting.
    unsafe { bpf_probe_read_kernel(at as *const u64) }.unwrap_or(0)
}

/// The directory a `*at` system call's `dfd` refers to (`AT_FDCWD`: the cwd), as up to
/// `CWD_PARTS` components innermost first. Returns how many were filled, or
/// `DELETE_DIR_UNKNOWN` if the directory cannot be read; `truncated` is set when the path is
/// deeper (or a component longer) than what fits.
#[inline(always)]
pub fn dir_components(dfd: i32, parts: &mut [[u8; CWD_PART_LEN]; CWD_PARTS], truncated: &mut bool) -> u32 {
    // SAFETY: returns a pointer to the current task, only ever passed to read_field.
    let task = unsafe { bpf_get_current_task() };
    let d = if dfd == AT_FDCWD {
        let fs = read_field::<u64>(task, global(&TASK_FS)).unwrap_or(0);
        read_field::<u64>(fs, global(&FS_PWD_DENTRY)).unwrap_or(0)
    } else {
        let fdt = read_field::<u64>(task, global(&TASK_FILES)).and_then(|f| read_field::<u64>(f, global(&FILES_FDT))).unwrap_or(0);
        // `max_fds` is the first member of `struct fdtable`: its offset is 0 in practice, so
        // it is read without read_field's "0 is unresolved" rule.
        let max = if fdt == 0 {
            0
        } else {
            // SAFETY: bpf_probe_read_kernel checks the address and returns an error instead of faulting.
            unsafe { bpf_probe_read_kernel((fdt + global(&FDT_MAX_FDS) as u64) as *const u32) }.unwrap_or(0)
        };
        let fds = read_field::<u64>(fdt, global(&FDT_FD)).unwrap_or(0);
        if dfd < 0 || dfd as u32 >= max || fds == 0 {
            0
        } else {
            // SAFETY: bpf_probe_read_kernel checks the address; `dfd` is below the table's size.
            let file = unsafe { bpf_probe_read_kernel((fds + 8 * dfd as u64) as *const u64) }.unwrap_or(0);
            read_field::<u64>(file, global(&FILE_DENTRY)).unwrap_or(0)
        }
    };
    zero(parts);
    if d == 0 {
        return guard_common::DELETE_DIR_UNKNOWN;
    }
    let mut d = d;
    let mut depth = 0;
    for i in 0..CWD_PARTS {
        let parent = dentry_parent(d);
        if parent == 0 {
            break;
        }
        if let Some(name) = read_field::<u64>(d, global(&DENTRY_NAME)) {
            // SAFETY: reads a NUL-terminated kernel string into a bounded buffer.
            if let Ok(s) = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut parts[i]) } {
                if s.len() >= CWD_PART_LEN - 1 {
                    *truncated = true;
                }
            }
        }
        depth = i as u32 + 1;
        d = parent;
    }
    if dentry_parent(d) != 0 {
        *truncated = true;
    }
    depth
}

/// `AT_FDCWD`: a `*at` system call's dirfd meaning the working directory.
pub const AT_FDCWD: i32 = -100;
