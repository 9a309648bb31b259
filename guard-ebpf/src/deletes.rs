//! The deletion budget (`files.delete_budget`): successful `unlink`, `unlinkat` and `rmdir`
//! calls of an agent workload are counted per workload in a window, at the system call's exit
//! (where the result is known). The deletion that goes past the budget has happened — a
//! tracepoint cannot undo it — and its process is killed (SIGKILL, delivered before it
//! returns to user space) or stopped for approval (SIGSTOP and `HELD`, the exec holds'
//! machinery, so the gate kills it if anyone else continues it). One event per window (per
//! hold with `hold`) tells the daemon, which kills the rest of the workload or waits for a
//! person.
//!
//! The workload is the cgroup one level below the agent's registered cgroup (a `launch`
//! session), or the registered cgroup itself for a workload in it (or moved out of it).
//!
//! Renames over an existing file are not counted: whether the target existed is only known
//! inside the kernel's rename, which a tracepoint does not see.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes,
        generated::{bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_boot_ns, bpf_send_signal},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use guard_common::{
    DELETE_ACTION_HOLD, DELETE_SYS_UNLINK, DELETE_SYS_UNLINKAT, Decision,
    DeleteConfig, DeleteWindow, DeletionsEvent, EVENT_FLAG_CWD_TRUNCATED, EVENT_FLAG_HOLD_FULL,
    EVENT_FLAG_MOVED_OUT, EVENT_FLAG_SIGNAL_FAILED, EventKind, Held, MAX_CGROUP_DEPTH,
    POLICY_FLAG_AUDIT, POLICY_SLOTS,
};

use crate::{
    kernel::{AT_FDCWD, dir_components, fill_task_header, global},
    maps::{EVENTS, URGENT, count_drop, held_insert, held_remove, policy_config},
    workload::{self, Workload},
};

/// Offsets in the `sys_enter_unlink`, `sys_enter_unlinkat`, `sys_enter_rmdir` records and of
/// `ret` in the `sys_exit_*` records (tracefs formats).
#[unsafe(no_mangle)]
static UNLINK_PATHNAME: u32 = 16;
#[unsafe(no_mangle)]
static UNLINKAT_DFD: u32 = 16;
#[unsafe(no_mangle)]
static UNLINKAT_PATHNAME: u32 = 24;
#[unsafe(no_mangle)]
static RMDIR_PATHNAME: u32 = 16;
#[unsafe(no_mangle)]
static SYS_EXIT_RET: u32 = 16;

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;
const BPF_NOEXIST: u64 = 1;

/// Per-policy budgets, indexed by `policy_slot(policy id)`.
#[map]
pub static DELETE_BUDGETS: Array<DeleteConfig> = Array::with_max_entries(POLICY_SLOTS, 0);

/// Per-workload windows, by workload cgroup id. The daemon removes an entry when a person
/// approves a held deletion (a fresh budget).
#[map]
pub static DELETE_COUNTS: LruHashMap<u64, DeleteWindow> = LruHashMap::with_max_entries(4096, 0);

/// A deletion under way: what its exit needs, by pid_tgid (thread).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeleteCall {
    pub name: u64,
    pub workload_cgroup_id: u64,
    pub cgroup_id: u64,
    pub matched_cgroup_id: u64,
    pub parent_cgroup_id: u64,
    pub policy_id: u32,
    pub dirfd: i32,
    pub depth_below_match: u32,
    pub flags: u32,
    pub syscall: u32,
    pub _pad: u32,
}

#[map]
static DELETE_CALLS: LruHashMap<u64, DeleteCall> = LruHashMap::with_max_entries(8192, 0);

#[map]
static DELETE_SCRATCH: PerCpuArray<DeletionsEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn budget(policy_id: u32) -> DeleteConfig {
    match DELETE_BUDGETS.get(guard_common::policy_slot(policy_id)) {
        Some(c) => *c,
        None => DeleteConfig::default(),
    }
}

pub fn try_enter(ctx: &TracePointContext, syscall: u32) -> Result<(), i64> {
    let Some(w) = workload::current() else {
        return Ok(());
    };
    if budget(w.policy_id).count == 0 {
        return Ok(());
    }
    let (name_off, dfd_off) = match syscall {
        DELETE_SYS_UNLINK => (global(&UNLINK_PATHNAME), 0),
        DELETE_SYS_UNLINKAT => (global(&UNLINKAT_PATHNAME), global(&UNLINKAT_DFD)),
        _ => (global(&RMDIR_PATHNAME), 0),
    };
    // SAFETY: the offsets come from the tracepoints' formats; the reads are bounds-checked.
    let name: u64 = unsafe { ctx.read_at(name_off as usize) }?;
    let dirfd = if dfd_off == 0 {
        AT_FDCWD
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u64>(dfd_off as usize) }.map(|d| d as i32).unwrap_or(AT_FDCWD)
    };
    let call = DeleteCall {
        name,
        workload_cgroup_id: workload_key(&w),
        cgroup_id: w.cgroup_id,
        matched_cgroup_id: w.matched_cgroup_id,
        parent_cgroup_id: w.parent_cgroup_id,
        policy_id: w.policy_id,
        dirfd,
        depth_below_match: w.depth_below_match,
        flags: w.flags,
        syscall,
        _pad: 0,
    };
    let _ = DELETE_CALLS.insert(&bpf_get_current_pid_tgid(), &call, 0);
    Ok(())
}

/// The cgroup one level below the registered one the task is under, or the registered one.
#[inline(always)]
fn workload_key(w: &Workload) -> u64 {
    if w.flags & EVENT_FLAG_MOVED_OUT != 0 || w.depth_below_match == 0 {
        return w.matched_cgroup_id;
    }
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: reads the current task's cgroup ancestry; no pointers.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        if id == w.matched_cgroup_id {
            // SAFETY: as above.
            let below = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32 + 1) };
            return if below != 0 { below } else { id };
        }
    }
    w.cgroup_id
}

/// Adds 1 to `*p` atomically (several CPUs count for one workload).
#[inline(always)]
fn atomic_inc(p: *mut u64) {
    let one: u64 = 1;
    // SAFETY: `p` points into a map value, which lives while the program runs; this is the
    // atomic add without fetch every BPF CPU version has.
    unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) one) };
}

pub fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out at once.
    let Some(call) = (unsafe { DELETE_CALLS.get(&pid_tgid) }).copied() else {
        return Ok(());
    };
    let _ = DELETE_CALLS.remove(&pid_tgid);
    // SAFETY: as in try_enter.
    let ret: i64 = unsafe { ctx.read_at(global(&SYS_EXIT_RET) as usize) }?;
    if ret != 0 {
        return Ok(());
    }
    let cfg = budget(call.policy_id);
    if cfg.count == 0 {
        return Ok(());
    }
    // SAFETY: no arguments, no memory access.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let key = call.workload_cgroup_id;
    if DELETE_COUNTS.get_ptr_mut(&key).is_none() {
        let fresh = DeleteWindow { window_start: now, count: 0, reported: 0 };
        let _ = DELETE_COUNTS.insert(&key, &fresh, BPF_NOEXIST);
    }
    let win = DELETE_COUNTS.get_ptr_mut(&key).ok_or(0i64)?;
    // SAFETY: `win` points at a map value that lives while the program runs; fields are read
    // and written with volatile accesses (other CPUs may write them).
    let (start, count, reported) = unsafe {
        let start_p = &raw mut (*win).window_start;
        let count_p = &raw mut (*win).count;
        if now.saturating_sub(core::ptr::read_volatile(start_p)) >= cfg.window_ns {
            core::ptr::write_volatile(start_p, now);
            core::ptr::write_volatile(count_p, 0);
        }
        atomic_inc(count_p);
        (core::ptr::read_volatile(start_p), core::ptr::read_volatile(count_p), core::ptr::read_volatile(&raw const (*win).reported))
    };
    if count <= cfg.count {
        return Ok(());
    }
    let first = reported != start;
    let audit = policy_config(call.policy_id).flags & POLICY_FLAG_AUDIT != 0;
    let hold = cfg.action == DELETE_ACTION_HOLD;
    let mut flags = 0;
    let decision = if audit {
        if hold { Decision::WouldHold } else { Decision::WouldKill }
    } else if hold {
        stop(call.policy_id, cfg.rule_id, (pid_tgid >> 32) as u32, &mut flags)
    } else {
        kill(&mut flags)
    };
    // A hold is reported every time (each is a person's decision); a kill or an audit once
    // per window.
    if !first && decision != Decision::Held {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&raw mut (*win).reported, start) };
    let ev = DELETE_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let ev = unsafe { &mut *ev };
    let w = Workload {
        policy_id: call.policy_id,
        cgroup_id: call.cgroup_id,
        matched_cgroup_id: call.matched_cgroup_id,
        parent_cgroup_id: call.parent_cgroup_id,
        depth_below_match: call.depth_below_match,
        flags: call.flags | flags,
    };
    fill_task_header(&mut ev.header, EventKind::Deletions, &w);
    ev.header.decision = decision as u32;
    ev.header.rule_id = cfg.rule_id;
    ev.count = count;
    ev.budget = cfg.count;
    ev.window_ns = cfg.window_ns;
    ev.window_start = start;
    ev.workload_cgroup_id = key;
    ev.syscall = call.syscall;
    ev.dirfd = call.dirfd;
    crate::kernel::zero(&mut ev.name);
    // SAFETY: reads a NUL-terminated user string into a bounded buffer; faults are errors.
    ev.name_len = unsafe { bpf_probe_read_user_str_bytes(call.name as *const u8, &mut ev.name) }.map(|s| s.len() as u32).unwrap_or(0);
    let mut truncated = false;
    ev.dir_depth = dir_components(call.dirfd, &mut ev.dir, &mut truncated);
    if truncated {
        ev.header.flags |= EVENT_FLAG_CWD_TRUNCATED;
    }
    if EVENTS.output::<DeletionsEvent>(&*ev, URGENT).is_err() {
        count_drop(EventKind::Deletions);
    }
    Ok(())
}

/// SIGKILL at a system call's exit is delivered before the process returns to user space.
#[inline(always)]
fn kill(flags: &mut u32) -> Decision {
    // SAFETY: signals the current task only.
    if unsafe { bpf_send_signal(SIGKILL) } != 0 {
        *flags |= EVENT_FLAG_SIGNAL_FAILED;
    }
    Decision::Killed
}

/// Stops the process before it returns to user space and records it in `HELD` (the gate
/// kills it if anyone but the daemon continues it). If it cannot be recorded it is killed:
/// a hold never fails open.
#[inline(always)]
fn stop(policy_id: u32, rule_id: u32, tgid: u32, flags: &mut u32) -> Decision {
    // SAFETY: no arguments, no memory access.
    let held = Held { boot_ns: unsafe { bpf_ktime_get_boot_ns() }, policy_id, rule_id };
    if !held_insert(tgid, &held) {
        *flags |= EVENT_FLAG_HOLD_FULL;
        return kill(flags);
    }
    // SAFETY: signals the current task only.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        *flags |= EVENT_FLAG_SIGNAL_FAILED;
        held_remove(tgid);
        return kill(flags);
    }
    Decision::Held
}
