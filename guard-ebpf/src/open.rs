//! Sensitive reads: an agent workload opening a path whose name (or `parent/name`) starts like
//! one of its policy's `sensitive_paths` is reported to the daemon, which confirms it against
//! the globs. Entries marked `SENS_TAINT_NOW` taint the process here and now, so a read
//! followed at once by a connect is refused before the daemon has even seen the read.
use aya_ebpf::{
    helpers::{bpf_probe_read_user_str_bytes, generated::bpf_ktime_get_boot_ns},
    programs::TracePointContext,
};
use guard_common::{
    EXFIL_WATCH_OPENS, EventKind, FILENAME_LEN, SENS_KIND_NAME, SENS_KIND_TAIL, SENS_TAINT_NOW,
    SENS_TEXT_LEN, SensKey, SensRule, Taint,
};

use crate::{
    kernel::{fill_task_header, global},
    maps::{EVENTS, OPEN_SCRATCH, SENSITIVE, TAINT, count_drop, exfil_config},
    workload,
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
    if exfil_config(w.policy_id).flags & EXFIL_WATCH_OPENS == 0 {
        return Ok(());
    }
    let scratch = OPEN_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: the offset comes from this tracepoint's format; the read is bounds-checked.
    let ptr: u64 = unsafe { ctx.read_at(name_off as usize) }?;
    let ev = &mut scratch.event;
    ev.filename = [0; FILENAME_LEN];
    // SAFETY: reads a NUL-terminated user string into a bounded buffer; faults are errors.
    let n = unsafe { bpf_probe_read_user_str_bytes(ptr as *const u8, &mut ev.filename) }.map(|s| s.len()).unwrap_or(0);
    if n == 0 {
        return Ok(());
    }
    // The last two '/' (usize::MAX: none).
    let (mut last, mut prev) = (usize::MAX, usize::MAX);
    for i in 0..FILENAME_LEN {
        if i >= n {
            break;
        }
        if ev.filename[i] == b'/' {
            prev = last;
            last = i;
        }
    }
    let policy_id_be = w.policy_id.to_be_bytes();
    let mut rule = None;
    if last != usize::MAX {
        // `parent/name`: from after the '/' before the last one (or the start of a relative
        // `dir/name`).
        let tail_start = if prev == usize::MAX { 0 } else { prev + 1 };
        rule = lookup(scratch, policy_id_be, SENS_KIND_TAIL, tail_start, n);
    }
    if rule.is_none() {
        let name_start = if last == usize::MAX { 0 } else { last + 1 };
        rule = lookup(scratch, policy_id_be, SENS_KIND_NAME, name_start, n);
    }
    let Some(rule) = rule else {
        return Ok(());
    };
    let ev = &mut scratch.event;
    fill_task_header(&mut ev.header, EventKind::Open, &w);
    ev.sens_flags = rule.flags;
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
    if rule.flags & SENS_TAINT_NOW != 0 {
        let taint = Taint {
            // SAFETY: no arguments, no memory access.
            boot_ns: unsafe { bpf_ktime_get_boot_ns() },
            reader: ev.header.tgid,
            flags: 0,
        };
        // BPF_NOEXIST: the first read is the one the verdicts name.
        let _ = TAINT.insert(&ev.header.tgid, &taint, 1);
    }
    if EVENTS.output::<guard_common::OpenEvent>(&*ev, 0).is_err() {
        count_drop(EventKind::Open);
    }
    Ok(())
}

/// Looks up `kind` + filename bytes `start..n` in the sensitive-path trie.
#[inline(always)]
fn lookup(scratch: &mut crate::maps::OpenScratch, policy_id_be: [u8; 4], kind: u8, start: usize, n: usize) -> Option<SensRule> {
    let key = &mut scratch.key;
    key.prefix_len = 32 + 8 + 8 * SENS_TEXT_LEN as u32;
    key.data = SensKey { policy_id_be, kind, text: [0; SENS_TEXT_LEN] };
    for j in 0..SENS_TEXT_LEN {
        let idx = start + j;
        // The key's zero padding stands for the NUL: an exact name's entry ends in one.
        if idx >= n {
            break;
        }
        key.data.text[j] = scratch.event.filename[idx & (FILENAME_LEN - 1)];
    }
    SENSITIVE.get(&*key).copied()
}
