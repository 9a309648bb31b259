//! Sensitive reads: an agent workload opening a path whose name (or `parent/name`) starts like
//! one of its policy's `sensitive_paths` is reported to the daemon, which confirms it against
//! the globs. Entries marked `SENS_TAINT_NOW` taint the process here and now, so a read
//! followed at once by a connect is refused before the daemon has even seen the read.
//!
//! Entries marked `SENS_DENY` (`action: deny`, whose key decides the glob exactly) are refused:
//! on the `lsm` tier by `lsm/file_open` with `EPERM` (judged on the opened file's own dentry, so
//! a symlink or a relative path makes no difference), on the `tracepoint` tier by SIGKILL at the
//! open call (judged on the path the call names).
use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel_buf, bpf_probe_read_user_str_bytes,
        generated::{bpf_ktime_get_boot_ns, bpf_send_signal},
    },
    programs::{LsmContext, TracePointContext},
};
use guard_common::{
    Decision, EVENT_FLAG_LSM, EVENT_FLAG_SIGNAL_FAILED, EXFIL_DENY_OPENS, EXFIL_WATCH_OPENS, EventKind, FILENAME_LEN,
    POLICY_FLAG_AUDIT, SENS_DENY, SENS_KIND_NAME, SENS_KIND_TAIL, SENS_TAINT_NOW, SENS_TEXT_LEN, SensRule, Taint,
};

use crate::{
    kernel::{dentry_name_into, dentry_parent, file_dentry, fill_task_header, global},
    maps::{EVENTS, OPEN_SCRATCH, SENSITIVE, TAINT, URGENT, count_drop, exfil_config, policy_config},
    sock::LSM_TIER,
    workload::{self, Workload},
};

/// Offsets in the `sys_enter_openat`, `sys_enter_openat2` and `sys_enter_open` records (tracefs
/// format). 0: the record has no such field.
#[unsafe(no_mangle)]
static OPENAT_DFD: u32 = 16;
#[unsafe(no_mangle)]
static OPENAT_FILENAME: u32 = 24;
#[unsafe(no_mangle)]
static OPENAT_FLAGS: u32 = 32;
#[unsafe(no_mangle)]
static OPENAT2_DFD: u32 = 16;
#[unsafe(no_mangle)]
static OPENAT2_FILENAME: u32 = 24;
#[unsafe(no_mangle)]
static OPEN_FILENAME: u32 = 16;
#[unsafe(no_mangle)]
static OPEN_FLAGS: u32 = 24;

const AT_FDCWD: i32 = -100;

pub fn try_openat(ctx: &TracePointContext) -> Result<(), i64> {
    try_open(ctx, global(&OPENAT_DFD), global(&OPENAT_FILENAME), global(&OPENAT_FLAGS))
}

pub fn try_openat2(ctx: &TracePointContext) -> Result<(), i64> {
    try_open(ctx, global(&OPENAT2_DFD), global(&OPENAT2_FILENAME), 0)
}

pub fn try_open_legacy(ctx: &TracePointContext) -> Result<(), i64> {
    try_open(ctx, 0, global(&OPEN_FILENAME), global(&OPEN_FLAGS))
}

#[inline(always)]
fn try_open(ctx: &TracePointContext, dfd_off: u32, name_off: u32, flags_off: u32) -> Result<(), i64> {
    let Some(w) = workload::current() else {
        return Ok(());
    };
    let config = exfil_config(w.policy_id);
    if config.flags & EXFIL_WATCH_OPENS == 0 {
        return Ok(());
    }
    let scratch = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: the offset comes from this tracepoint's format; the read is bounds-checked.
    let ptr: u64 = unsafe { ctx.read_at(name_off as usize) }?;
    crate::kernel::zero(&mut scratch.name);
    // SAFETY: reads a NUL-terminated user string into a bounded buffer; faults are errors.
    let n = unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut scratch.name[..FILENAME_LEN]) }.map(|s| s.len()).unwrap_or(0);
    if n == 0 {
        return Ok(());
    }
    // Every byte is looked at (those past the name are 0), so no exit depends on the data.
    // Volatile: the compiler must not keep them in registers, where the verifier would follow
    // every combination of values.
    let (last_p, prev_p) = (&raw mut scratch.last, &raw mut scratch.prev);
    // SAFETY: both point into the per-CPU slot we hold.
    unsafe {
        core::ptr::write_volatile(last_p, NO_SLASH);
        core::ptr::write_volatile(prev_p, NO_SLASH);
        // Two bytes an iteration: the 6.1 verifier keeps a state for pruning only after at least
        // 8 instructions and 2 jumps since the last, which one byte's iteration is too short for;
        // without those states each '/' doubles the paths it walks (past its limit).
        for j in 0..FILENAME_LEN / 2 {
            for i in [2 * j, 2 * j + 1] {
                if scratch.name[i] == b'/' {
                    core::ptr::write_volatile(prev_p, core::ptr::read_volatile(last_p));
                    core::ptr::write_volatile(last_p, i as u64);
                }
            }
        }
    }
    // SAFETY: as above.
    let (last, prev) = unsafe { (core::ptr::read_volatile(last_p), core::ptr::read_volatile(prev_p)) };
    let policy_id_be = w.policy_id.to_be_bytes();
    let tail_start = if last == NO_SLASH { NO_SLASH } else if prev == NO_SLASH { 0 } else { prev + 1 };
    let name_start = if last == NO_SLASH { 0 } else { last + 1 };
    let Some(flags) = match_keys(scratch, policy_id_be, tail_start, name_start, config.flags) else {
        return Ok(());
    };
    let mut decision = Decision::Allowed;
    let mut signal_failed = false;
    if flags & SENS_DENY != 0 {
        let lsm = global(&LSM_TIER) != 0;
        if policy_config(w.policy_id).flags & POLICY_FLAG_AUDIT != 0 {
            // Nothing is refused: reported (and tainted) as any sensitive read.
            decision = if lsm { Decision::WouldDeny } else { Decision::WouldKill };
        } else if lsm {
            // lsm/file_open refuses it with EPERM, and reports it.
            return Ok(());
        } else {
            // Delivered on the return to user mode: the call runs, but the process never sees
            // the descriptor.
            // SAFETY: signals the current task only.
            signal_failed = unsafe { bpf_send_signal(SIGKILL) } != 0;
            decision = Decision::Killed;
        }
    }
    let ev = &mut scratch.event;
    // One helper call, not a copy loop (see kernel::zero).
    // SAFETY: both are FILENAME_LEN bytes of the per-CPU slot we hold.
    let _ = unsafe { bpf_probe_read_kernel_buf(scratch.name.as_ptr(), &mut ev.filename) };
    fill_task_header(&mut ev.header, EventKind::Open, &w);
    ev.header.decision = decision as u32;
    if signal_failed {
        ev.header.flags |= EVENT_FLAG_SIGNAL_FAILED;
    }
    ev.sens_flags = flags;
    ev.filename_len = n as u32;
    ev.dirfd = if dfd_off == 0 {
        AT_FDCWD
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u64>(dfd_off as usize) }.map(|d| d as i32).unwrap_or(AT_FDCWD)
    };
    ev.open_flags = if flags_off == 0 {
        0
    } else {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u64>(flags_off as usize) }.map(|f| f as u32).unwrap_or(0)
    };
    // A killed process reads nothing; one the signal missed may.
    if flags & SENS_TAINT_NOW != 0 && (decision != Decision::Killed || signal_failed) {
        let taint = Taint {
            // SAFETY: no arguments, no memory access.
            boot_ns: unsafe { bpf_ktime_get_boot_ns() },
            reader: ev.header.tgid,
            flags: 0,
        };
        // BPF_NOEXIST: the first read is the one the verdicts name.
        let _ = TAINT.insert(&ev.header.tgid, &taint, 1);
    }
    if EVENTS.output::<guard_common::OpenEvent>(&*ev, URGENT).is_err() {
        count_drop(EventKind::Open);
    }
    Ok(())
}

/// The flags of the entries `name` matches: `parent/name` from `tail_start` (`NO_SLASH`: there
/// is no parent) and the name alone from `name_start`; `None` if neither matches. The name alone
/// is looked up when the tail misses, or when a deny entry could still be found under it (a
/// tail entry, the longest match, need not carry a name entry's deny).
#[inline(always)]
fn match_keys(scratch: &mut crate::maps::OpenScratch, policy_id_be: [u8; 4], tail_start: u64, name_start: u64, exfil_flags: u32) -> Option<u32> {
    let mut found = None;
    if tail_start != NO_SLASH {
        found = lookup(scratch, policy_id_be, SENS_KIND_TAIL, tail_start).map(|r| r.flags);
    }
    let look_name = match found {
        None => true,
        Some(f) => f & SENS_DENY == 0 && exfil_flags & EXFIL_DENY_OPENS != 0,
    };
    if look_name {
        if let Some(r) = lookup(scratch, policy_id_be, SENS_KIND_NAME, name_start) {
            found = Some(found.unwrap_or(0) | r.flags);
        }
    }
    found
}

/// Bytes of the parent directory's name `lsm/file_open` keeps (a longer one is cut, and then
/// matches no `parent/name` entry: those are at most `SENS_TEXT_LEN` bytes).
const PARENT_PART: usize = 128;

/// `lsm/file_open(file, ret)` (the `lsm` tier only): refuses an agent workload's open of an
/// `action: deny` sensitive path with `EPERM`, judged on the opened file's dentry (its name and
/// its directory's), so neither a symlink nor a relative path gets past it. Other sensitive
/// paths are left to the open tracepoints, which taint; audit mode refuses nothing (they report
/// `would-deny`).
pub fn try_lsm_open(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(w) = workload::current() else {
        return 0;
    };
    if exfil_config(w.policy_id).flags & EXFIL_DENY_OPENS == 0 || policy_config(w.policy_id).flags & POLICY_FLAG_AUDIT != 0 {
        return 0;
    }
    let dentry = file_dentry(ctx.arg::<u64>(0));
    if dentry == 0 {
        return 0;
    }
    let Some(scratch) = OPEN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let scratch = unsafe { &mut *scratch };
    if !lsm_refuses(scratch, &w, dentry) {
        return 0;
    }
    -EPERM
}

/// Builds `parent/name` of `dentry` in the scratch buffer and reports a deny match.
#[inline(always)]
fn lsm_refuses(scratch: &mut crate::maps::OpenScratch, w: &Workload, dentry: u64) -> bool {
    crate::kernel::zero(&mut scratch.name);
    let parent = dentry_parent(dentry);
    let mut at = 0usize;
    if parent != 0 {
        let n = dentry_name_into(parent, &mut scratch.name[..PARENT_PART]);
        if n > 0 {
            at = n & (PARENT_PART - 1);
            scratch.name[at] = b'/';
            at += 1;
        }
    }
    let Some(dst) = scratch.name.get_mut(at..at + FILENAME_LEN) else {
        return false;
    };
    let m = dentry_name_into(dentry, dst);
    if m == 0 {
        return false;
    }
    let tail_start = if at == 0 { NO_SLASH } else { 0 };
    let policy_id_be = w.policy_id.to_be_bytes();
    let Some(flags) = match_keys(scratch, policy_id_be, tail_start, at as u64, EXFIL_DENY_OPENS) else {
        return false;
    };
    if flags & SENS_DENY == 0 {
        return false;
    }
    let ev = &mut scratch.event;
    // SAFETY: both are FILENAME_LEN bytes of the per-CPU slot we hold.
    let _ = unsafe { bpf_probe_read_kernel_buf(scratch.name.as_ptr(), &mut ev.filename) };
    fill_task_header(&mut ev.header, EventKind::Open, w);
    ev.header.flags |= EVENT_FLAG_LSM;
    ev.header.decision = Decision::Denied as u32;
    ev.sens_flags = flags;
    ev.filename_len = ((at + m) as u32).min(FILENAME_LEN as u32 - 1);
    ev.dirfd = AT_FDCWD;
    ev.open_flags = 0;
    if EVENTS.output::<guard_common::OpenEvent>(&*ev, URGENT).is_err() {
        count_drop(EventKind::Open);
    }
    true
}

const SIGKILL: u32 = 9;
const EPERM: i32 = 1;

/// Looks up `kind` + the filename from byte `start` in the sensitive-path trie.
#[inline(always)]
fn lookup(scratch: &mut crate::maps::OpenScratch, policy_id_be: [u8; 4], kind: u8, start: u64) -> Option<SensRule> {
    let key = &mut scratch.key;
    key.prefix_len = 32 + 8 + 8 * SENS_TEXT_LEN as u32;
    key.data.policy_id_be = policy_id_be;
    key.data.kind = kind;
    // One copy of constant size from anywhere in the first half of the zero-padded buffer:
    // the name, then zeros (an exact entry's NUL).
    let from = (start as usize) & (FILENAME_LEN - 1);
    // SAFETY: `from + SENS_TEXT_LEN` is within `name` (2 * FILENAME_LEN bytes); the helper
    // copies between two valid kernel buffers.
    let ok = unsafe { bpf_probe_read_kernel_buf(scratch.name.as_ptr().add(from), &mut key.data.text) };
    if ok.is_err() {
        return None;
    }
    SENSITIVE.get(&*key).copied()
}

/// `OpenScratch::last`/`prev` when there is no such '/'.
const NO_SLASH: u64 = u64::MAX;
