//! Exec decisions: exact path, path prefix, file identity, then names. A deny, hold or audit
//! entry found at any step decides at once; an allow entry is remembered and the remaining
//! steps still look for a deny (deny beats allow). Holds stop the new image (SIGSTOP) for the
//! daemon, which judges argv and asks for approval.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel_str_bytes, generated::{bpf_ktime_get_boot_ns, bpf_send_signal}},
    maps::lpm_trie::Key,
    programs::{LsmContext, TracePointContext},
};
use guard_common::{
    ARGV_LEN, BASENAME_LEN, Decision, EVENT_FLAG_FILENAME_TRUNCATED, EVENT_FLAG_HOLD_FULL,
    EVENT_FLAG_LSM, EVENT_FLAG_SIGNAL_FAILED, EXEC_ACTION_ALLOW, EXEC_ACTION_AUDIT, EXEC_ACTION_HOLD, EventKind,
    ExecEvent, ExecInodeKey, ExecNameKey, ExecNamePrefixKey, ExecRule, FILENAME_LEN, Held,
    MAX_DIR_DEPTH, POLICY_FLAG_AUDIT, POLICY_FLAG_EXEC_ALLOWLIST, PREFIX_PATH_LEN,
};

use crate::{
    kernel::{
        self, comm_name, dentry_identity, dentry_name, dentry_parent, exe_dentry, fill_exec_details,
        fill_task_header, global,
    },
    maps::{
        EVENTS, EXEC_INODES, EXEC_NAME_PREFIXES, EXEC_NAMES, EXEC_PATHS, EXEC_PREFIXES,
        EXEC_SCRATCH, ExecScratch, count_drop, held_insert, held_remove, policy_config, wake,
    },
    workload::{self, Workload},
};

/// Offset of `__data_loc char[] filename` in the tracepoint record, from the tracefs format.
#[unsafe(no_mangle)]
static EXEC_FILENAME_LOC: u32 = 8;

/// Non-zero: report execs outside agent workloads too (never enforced). A load-time constant,
/// so when it is 0 the verifier drops the branch and untagged execs cost one cgroup walk.
#[unsafe(no_mangle)]
static OBSERVE_ALL_EXECS: u32 = 0;

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

pub fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let w = match workload::current() {
        Some(w) => w,
        None if global(&OBSERVE_ALL_EXECS) != 0 => Workload::untagged(),
        None => return Ok(()),
    };
    let scratch = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let scratch = unsafe { &mut *scratch };
    let ev = &mut scratch.event;
    fill_task_header(&mut ev.header, EventKind::Exec, &w);

    // SAFETY: the offset comes from this tracepoint's format; the read is bounds-checked.
    let loc: u32 = unsafe { ctx.read_at(global(&EXEC_FILENAME_LOC) as usize) }?;
    let (off, stored_len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
    // SAFETY: as above: within the record, read with a bounded helper.
    fill_filename(ev, w.policy_id, unsafe { ctx.as_ptr().cast::<u8>().add(off) });
    if stored_len > FILENAME_LEN {
        ev.header.flags |= EVENT_FLAG_FILENAME_TRUNCATED;
    }

    fill_exec_details(&mut scratch.event, true);
    // SAFETY: the offset is within the record (from its format); only read with bounded helpers.
    let filename = unsafe { ctx.as_ptr().cast::<u8>().add(off) };
    let rule = decide(filename, exe_dentry(), true, &w, scratch);
    let rule = if rule.rule_id != 0 { Some(rule) } else { None };
    let ev = &mut scratch.event;
    let config = policy_config(w.policy_id);
    let audit = config.flags & POLICY_FLAG_AUDIT != 0;
    let (decision, rule_id) = match rule {
        Some(r) if r.action == EXEC_ACTION_ALLOW => (Decision::Allowed, r.rule_id),
        Some(r) if r.action == EXEC_ACTION_AUDIT => (Decision::Audited, r.rule_id),
        // Audit mode: nothing is stopped; the daemon says what argv rules would have done.
        Some(r) if r.action == EXEC_ACTION_HOLD && audit => (Decision::Evaluate, r.rule_id),
        Some(r) if r.action == EXEC_ACTION_HOLD => (hold(ev, w.policy_id, r.rule_id), r.rule_id),
        Some(r) => (kill(ev, audit), r.rule_id),
        None if w.policy_id != 0 && config.flags & POLICY_FLAG_EXEC_ALLOWLIST != 0 => {
            (kill(ev, audit), config.exec_default_rule)
        }
        None => (Decision::Allowed, guard_common::NO_RULE),
    };
    ev.header.decision = decision as u32;
    ev.header.rule_id = rule_id;
    if w.policy_id != 0 {
        w.tag(ev.header.tgid);
    }
    // Only the argv bytes read go out: most commands are far shorter than ARGV_LEN.
    let size = size_of::<ExecEvent>() - ARGV_LEN + (ev.argv_len as usize).min(ARGV_LEN);
    // SAFETY: `size` is at most the size of the event, which lives in a map value.
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const ExecEvent).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wake(decision != Decision::Allowed, size)).is_err() {
        count_drop(EventKind::Exec);
    }
    Ok(())
}

/// The exact-path key (policy id, NUL-padded filename) and its length, from kernel memory.
#[inline(always)]
fn fill_filename(ev: &mut ExecEvent, policy_id: u32, filename: *const u8) {
    ev.key.policy_id = policy_id;
    // The key must be NUL-padded: map lookups compare all FILENAME_LEN bytes.
    crate::kernel::zero(&mut ev.key.path);
    // SAFETY: reads a NUL-terminated kernel string into a bounded buffer.
    let len = unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut ev.key.path) }.map(|s| s.len()).unwrap_or(0);
    ev.filename_len = len as u32;
}

/// `lsm/bprm_check_security(bprm, ret)`: the `lsm` tier's exec decision, before the point of
/// no return. A deny (or an allowlist miss) fails the caller's execve with `EPERM`: the caller
/// lives and nothing of the new image ever runs. Allow, audit and hold decisions are left to
/// `sched_process_exec`, which reports every exec and stops held ones, and which also catches
/// a denied name only `comm` shows (a symlink's own name): defence in depth, not a duplicate.
pub fn try_lsm_exec(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(w) = workload::current() else {
        return 0;
    };
    let Some(scratch) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let scratch = unsafe { &mut *scratch };
    let (filename, dentry) = kernel::bprm_target(ctx.arg::<u64>(0));
    if filename == 0 {
        return 0;
    }
    let rule = {
        let ev = &mut scratch.event;
        fill_task_header(&mut ev.header, EventKind::Exec, &w);
        fill_filename(ev, w.policy_id, filename as *const u8);
        decide(filename as *const u8, dentry, false, &w, scratch)
    };
    let config = policy_config(w.policy_id);
    // Audit mode stops nothing: sched_process_exec reports the exec (`would-kill`) as on the
    // tracepoint tier, and one verdict is all it gets.
    if config.flags & POLICY_FLAG_AUDIT != 0 {
        return 0;
    }
    let r = rule;
    let deny = r.action != EXEC_ACTION_ALLOW && r.action != EXEC_ACTION_AUDIT && r.action != EXEC_ACTION_HOLD;
    let rule_id = if r.rule_id != 0 && deny {
        r.rule_id
    } else if r.rule_id == 0 && w.policy_id != 0 && config.flags & POLICY_FLAG_EXEC_ALLOWLIST != 0 {
        config.exec_default_rule
    } else {
        return 0;
    };
    let ev = &mut scratch.event;
    // Only for a denial: an allowed exec is reported by sched_process_exec.
    let (dev, ino) = (ev.exe_dev, ev.exe_ino);
    fill_exec_details(ev, false);
    (ev.exe_dev, ev.exe_ino) = (dev, ino);
    ev.header.flags |= EVENT_FLAG_LSM;
    ev.header.decision = Decision::Denied as u32;
    ev.header.rule_id = rule_id;
    let size = size_of::<ExecEvent>() - ARGV_LEN;
    // SAFETY: `size` is less than the size of the event, which lives in a map value.
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const ExecEvent).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wake(true, size)).is_err() {
        count_drop(EventKind::Exec);
    }
    -EPERM
}

const EPERM: i32 = 1;

/// SIGKILL from sched_process_exec is delivered on the return to user mode, so the new image
/// never runs an instruction.
#[inline(always)]
fn kill(ev: &mut ExecEvent, audit: bool) -> Decision {
    if audit {
        return Decision::WouldKill;
    }
    // SAFETY: signals the current task only.
    if unsafe { bpf_send_signal(SIGKILL) } != 0 {
        ev.header.flags |= EVENT_FLAG_SIGNAL_FAILED;
    }
    Decision::Killed
}

/// Stops the new image before its first instruction (SIGSTOP is delivered on the return to
/// user mode, like SIGKILL) and records it in `HELD`, where the gate finds it if anyone but the
/// daemon continues it. If it cannot be recorded, it is killed: a hold never fails open.
#[inline(always)]
fn hold(ev: &mut ExecEvent, policy_id: u32, rule_id: u32) -> Decision {
    // SAFETY: no arguments, no memory access.
    let held = Held { boot_ns: unsafe { bpf_ktime_get_boot_ns() }, policy_id, rule_id };
    if !held_insert(ev.header.tgid, &held) {
        ev.header.flags |= EVENT_FLAG_HOLD_FULL;
        return kill(ev, false);
    }
    // SAFETY: signals the current task only.
    if unsafe { bpf_send_signal(SIGSTOP) } != 0 {
        ev.header.flags |= EVENT_FLAG_SIGNAL_FAILED;
        held_remove(ev.header.tgid);
        return kill(ev, false);
    }
    Decision::Held
}

/// Keeps looking after an allow entry: only a deny, hold or audit entry decides at once.
macro_rules! consider {
    ($found:expr, $allow:ident) => {
        consider!($found, $allow, Some)
    };
    ($found:expr, $allow:ident, $wrap:expr) => {
        if let Some(r) = $found {
            let r: ExecRule = r;
            if r.action != EXEC_ACTION_ALLOW {
                return $wrap(r);
            }
            if $allow.rule_id == 0 {
                $allow = r;
            }
        }
    };
}

/// The rule that decides this exec, trying the cheapest and most specific first.
#[inline(always)]
/// `filename` is the name execve was given (kernel memory), `dentry` the executed file's, and
/// `comm` says whether the task's comm already is the new image's basename.
/// A rule id of 0 means no rule: a plain struct, every field defined on every path (LLVM leaves
/// a `None`'s payload undefined, and the verifier refuses a program that moves an undefined
/// register).
fn decide(filename: *const u8, dentry: u64, comm: bool, w: &Workload, scratch: &mut ExecScratch) -> ExecRule {
    let mut allow = ExecRule { rule_id: 0, action: 0 };
    // 1. The filename as passed to execve, exactly.
    // SAFETY: map values are copied out at once (here and below).
    consider!(unsafe { EXEC_PATHS.get(&scratch.event.key) }.copied(), allow, core::convert::identity);
    // 2. A path prefix of that filename. The key is filled from the record again rather than
    // copied from the event: a second bounded string read is cheaper than a 252-byte copy.
    let pk = &mut scratch.prefix_key;
    pk.prefix_len = 32 + 8 * PREFIX_PATH_LEN as u32;
    pk.data.policy_id_be = w.policy_id.to_be_bytes();
    crate::kernel::zero(&mut pk.data.path);
    // SAFETY: reads a NUL-terminated kernel string into a bounded buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut pk.data.path) }.is_ok() {
        consider!(EXEC_PREFIXES.get(&*pk).copied(), allow, core::convert::identity);
    }
    // 3. The executed file's identity, then that of each directory above it: a symlink or a
    // hard link to a denied binary, or a binary under a denied directory reached by any path.
    let mut d = dentry;
    let mut key = ExecInodeKey { policy_id: w.policy_id, dev: 0, ino: 0 };
    for level in 0..MAX_DIR_DEPTH {
        if d == 0 {
            break;
        }
        if dentry_identity(d, &mut key) {
            if level == 0 {
                scratch.event.exe_dev = key.dev;
                scratch.event.exe_ino = key.ino;
            }
            // SAFETY: as above.
            consider!(unsafe { EXEC_INODES.get(&key) }.copied(), allow, core::convert::identity);
        }
        d = dentry_parent(d);
    }
    // 4. Names. The kernel holds the basename twice, so no loop over the path is needed (a
    // data-dependent loop there explodes the verifier's state space):
    //  - `comm`, set by begin_new_exec() to kbasename(bprm->filename) before this tracepoint,
    //    complete when shorter than TASK_COMM_LEN - 1 bytes;
    //  - the executed file's own name, which also catches a symlink or a renamed copy of a
    //    denied binary invoked under another name.
    let nk = &mut scratch.name_key;
    nk.policy_id = w.policy_id;
    if comm && comm_name(&mut nk.name) {
        consider!(name_rule(nk, &mut scratch.name_prefix_key), allow, core::convert::identity);
    }
    if dentry != 0 && dentry_name(dentry, &mut nk.name) {
        consider!(name_rule(nk, &mut scratch.name_prefix_key), allow, core::convert::identity);
    }
    allow
}

/// A `basename` rule for `nk.name` exactly, and a `basename_prefix` rule; as in `decide`, an
/// allow entry does not hide a deny entry of the other kind.
#[inline(always)]
fn name_rule(nk: &ExecNameKey, pk: &mut Key<ExecNamePrefixKey>) -> Option<ExecRule> {
    let mut allow = ExecRule { rule_id: 0, action: 0 };
    // SAFETY: as in decide.
    consider!(unsafe { EXEC_NAMES.get(nk) }.copied(), allow);
    pk.prefix_len = 32 + 8 * BASENAME_LEN as u32;
    pk.data.policy_id_be = nk.policy_id.to_be_bytes();
    pk.data.name = nk.name;
    consider!(EXEC_NAME_PREFIXES.get(&*pk).copied(), allow);
    if allow.rule_id != 0 { Some(allow) } else { None }
}
