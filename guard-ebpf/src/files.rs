//! Protected paths: the file calls Landlock refuses report nothing by themselves, so the calls
//! that could be refused (unlink, rmdir, rename, truncate, creating, opening for writing) are
//! watched in agent workloads whose policy has `files.protect` rules. At `sys_enter` the path
//! arguments and the directory a relative path starts from are read into a per-thread record
//! (`FILE_PENDING`); at `sys_exit`, a call that failed with EACCES or EPERM is sent to the
//! daemon, which names the rule. One program for every `sys_enter_*`, one for every
//! `sys_exit_*`: `FILE_SYSCALLS` (filled by the loader) says what each syscall number is.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    programs::TracePointContext,
};
use guard_common::{EventKind, FILE_OP_OPEN, FILE_OP_TRUNCATE, FileEvent, POLICY_FLAG_FILES_PROTECT};

use crate::{
    kernel::{fill_file_dir, fill_task_header, global},
    maps::{EVENTS, FILE_PENDING, FILE_SCRATCH, FILE_SYSCALLS, URGENT, count_drop, policy_config},
    workload,
};

/// Offsets of `__syscall_nr` (enter and exit records) and `ret` (exit records).
#[unsafe(no_mangle)]
static FILES_NR: u32 = 8;
#[unsafe(no_mangle)]
static FILES_RET: u32 = 16;

const AT_FDCWD: i32 = -100;
const O_ACCMODE: u32 = 3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const EPERM: i64 = 1;
const EACCES: i64 = 13;

pub fn try_enter(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: the offset comes from the syscall tracepoints' format; the read is bounds-checked.
    let nr: i32 = unsafe { ctx.read_at(global(&FILES_NR) as usize) }?;
    let Some(sc) = FILE_SYSCALLS.get(nr as u32).copied() else { return Ok(()) };
    if sc.op == 0 {
        return Ok(());
    }
    let arg = |off: u32| -> u64 {
        if off == 0 {
            return 0;
        }
        // SAFETY: as above.
        unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0)
    };
    let flags = if sc.flags != 0 {
        arg(sc.flags) as u32
    } else if sc.how != 0 {
        // SAFETY: reads the first u64 of a user `struct open_how`; faults are errors.
        unsafe { bpf_probe_read_user(arg(sc.how) as *const u64) }.map(|f| f as u32).unwrap_or(0)
    } else {
        sc.fixed_flags
    };
    // Only opens that could write: read-only opens are never refused by a protect rule.
    if sc.op == FILE_OP_OPEN && flags & O_ACCMODE == 0 && flags & (O_CREAT | O_TRUNC) == 0 {
        return Ok(());
    }
    // After the flags: most opens are read-only, and end above without the cgroup walk.
    let Some(w) = workload::current() else { return Ok(()) };
    if policy_config(w.policy_id).flags & POLICY_FLAG_FILES_PROTECT == 0 {
        return Ok(());
    }
    let ev = FILE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let ev: &mut FileEvent = unsafe { &mut *ev };
    fill_task_header(&mut ev.header, EventKind::FileDenied, &w);
    ev.op = sc.op;
    ev.syscall_nr = nr as u32;
    ev.flags = flags;
    ev.ret = 0;
    ev.dirfd = if sc.dirfd == 0 { AT_FDCWD } else { arg(sc.dirfd) as i32 };
    ev.dirfd2 = if sc.dirfd2 == 0 { AT_FDCWD } else { arg(sc.dirfd2) as i32 };
    ev._pad = 0;
    crate::kernel::zero(&mut ev.path);
    crate::kernel::zero(&mut ev.path2);
    // SAFETY: reads NUL-terminated user strings into bounded buffers; faults are errors.
    ev.path_len = match sc.path {
        0 => 0,
        off => unsafe { bpf_probe_read_user_str_bytes(arg(off) as *const u8, &mut ev.path) }.map(|s| s.len() as u32).unwrap_or(0),
    };
    // SAFETY: as above.
    ev.path2_len = match sc.path2 {
        0 => 0,
        off => unsafe { bpf_probe_read_user_str_bytes(arg(off) as *const u8, &mut ev.path2) }.map(|s| s.len() as u32).unwrap_or(0),
    };
    // ftruncate has no path: its file is the descriptor's.
    let fd_only = sc.op == FILE_OP_TRUNCATE && sc.path == 0;
    if fd_only || (ev.path_len > 0 && ev.path[0] != b'/') {
        fill_file_dir(ev, ev.dirfd, fd_only);
    } else {
        ev.dir_flags = guard_common::FILE_DIR_NONE;
        ev.dir_depth = 0;
        ev.dir_dev = 0;
        ev.dir_ino = 0;
    }
    let id = bpf_get_current_pid_tgid();
    let _ = FILE_PENDING.insert(&id, ev, 0);
    Ok(())
}

pub fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let id = bpf_get_current_pid_tgid();
    let Some(ev) = FILE_PENDING.get_ptr_mut(&id) else { return Ok(()) };
    // SAFETY: as in try_enter.
    let nr: i32 = unsafe { ctx.read_at(global(&FILES_NR) as usize) }?;
    // SAFETY: as above.
    let ret: i64 = unsafe { ctx.read_at(global(&FILES_RET) as usize) }?;
    // SAFETY: the entry stays valid until removed below; only this thread uses its key.
    let ev = unsafe { &mut *ev };
    if ev.syscall_nr == nr as u32 && (ret == -EACCES || ret == -EPERM) {
        ev.ret = ret as i32;
        if EVENTS.output::<FileEvent>(ev, URGENT).is_err() {
            count_drop(EventKind::FileDenied);
        }
    }
    let _ = FILE_PENDING.remove(&id);
    Ok(())
}
