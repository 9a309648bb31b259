//! Exec decisions: exact path, then basename.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_send_signal},
    maps::lpm_trie::Key,
    programs::TracePointContext,
};
use guard_common::{
    ARGV_LEN, BASENAME_LEN, Decision, EVENT_FLAG_FILENAME_TRUNCATED, EVENT_FLAG_SIGNAL_FAILED,
    EventKind, ExecEvent, ExecInodeKey, ExecNameKey, ExecNamePrefixKey, ExecRule, FILENAME_LEN,
    MAX_DIR_DEPTH, POLICY_FLAG_AUDIT, PREFIX_PATH_LEN,
};

use crate::{
    kernel::{
        comm_name, dentry_identity, dentry_name, dentry_parent, exe_dentry, fill_exec_details,
        fill_task_header, global,
    },
    maps::{
        EVENTS, EXEC_INODES, EXEC_NAME_PREFIXES, EXEC_NAMES, EXEC_PATHS, EXEC_PREFIXES,
        EXEC_SCRATCH, ExecScratch, count_drop, policy_config,
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
    ev.key.policy_id = w.policy_id;
    // The key must be NUL-padded: map lookups compare all FILENAME_LEN bytes.
    ev.key.path = [0; FILENAME_LEN];
    // SAFETY: reads a NUL-terminated string of the tracepoint record into a bounded buffer.
    let len = unsafe {
        bpf_probe_read_kernel_str_bytes(ctx.as_ptr().cast::<u8>().add(off), &mut ev.key.path)
    }
    .map(|s| s.len())
    .unwrap_or(0);
    ev.filename_len = len as u32;
    if stored_len > FILENAME_LEN {
        ev.header.flags |= EVENT_FLAG_FILENAME_TRUNCATED;
    }

    fill_exec_details(&mut scratch.event);
    let rule = decide(ctx, off, &w, scratch);
    let ev = &mut scratch.event;
    ev.header.decision = match rule {
        None => Decision::Allowed as u32,
        Some(r) => {
            ev.header.rule_id = r.rule_id;
            if policy_config(w.policy_id).flags & POLICY_FLAG_AUDIT != 0 {
                Decision::WouldKill as u32
            } else {
                // SIGKILL from sched_process_exec is delivered on the return to user mode, so
                // the new image never runs an instruction.
                // SAFETY: signals the current task only.
                if unsafe { bpf_send_signal(SIGKILL) } != 0 {
                    ev.header.flags |= EVENT_FLAG_SIGNAL_FAILED;
                }
                Decision::Killed as u32
            }
        }
    };
    // Only the argv bytes read go out: most commands are far shorter than ARGV_LEN.
    let size = size_of::<ExecEvent>() - ARGV_LEN + (ev.argv_len as usize).min(ARGV_LEN);
    // SAFETY: `size` is at most the size of the event, which lives in a map value.
    let bytes = unsafe { core::slice::from_raw_parts((ev as *const ExecEvent).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_drop(EventKind::Exec);
    }
    Ok(())
}

/// The first rule that denies this exec, trying the cheapest and most specific first.
#[inline(always)]
fn decide(ctx: &TracePointContext, filename_off: usize, w: &Workload, scratch: &mut ExecScratch) -> Option<ExecRule> {
    // 1. The filename as passed to execve, exactly.
    // SAFETY: map values are copied out at once (here and below).
    if let Some(r) = unsafe { EXEC_PATHS.get(&scratch.event.key) } {
        return Some(*r);
    }
    // 2. A path prefix of that filename. The key is filled from the record again rather than
    // copied from the event: a second bounded string read is cheaper than a 252-byte copy.
    let pk = &mut scratch.prefix_key;
    pk.prefix_len = 32 + 8 * PREFIX_PATH_LEN as u32;
    pk.data.policy_id_be = w.policy_id.to_be_bytes();
    pk.data.path = [0; PREFIX_PATH_LEN];
    // SAFETY: reads a NUL-terminated string of the tracepoint record into a bounded buffer.
    if unsafe { bpf_probe_read_kernel_str_bytes(ctx.as_ptr().cast::<u8>().add(filename_off), &mut pk.data.path) }.is_ok() {
        if let Some(r) = EXEC_PREFIXES.get(&*pk) {
            return Some(*r);
        }
    }
    // 3. The executed file's identity, then that of each directory above it: a symlink or a
    // hard link to a denied binary, or a binary under a denied directory reached by any path.
    let dentry = exe_dentry();
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
            if let Some(r) = unsafe { EXEC_INODES.get(&key) } {
                return Some(*r);
            }
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
    if comm_name(&mut nk.name) {
        if let Some(r) = name_rule(nk, &mut scratch.name_prefix_key) {
            return Some(r);
        }
    }
    if dentry != 0 && dentry_name(dentry, &mut nk.name) {
        return name_rule(nk, &mut scratch.name_prefix_key);
    }
    None
}

/// A `basename` rule for `nk.name` exactly, else a `basename_prefix` rule.
#[inline(always)]
fn name_rule(nk: &ExecNameKey, pk: &mut Key<ExecNamePrefixKey>) -> Option<ExecRule> {
    // SAFETY: as in decide.
    if let Some(r) = unsafe { EXEC_NAMES.get(nk) } {
        return Some(*r);
    }
    pk.prefix_len = 32 + 8 * BASENAME_LEN as u32;
    pk.data.policy_id_be = nk.policy_id.to_be_bytes();
    pk.data.name = nk.name;
    EXEC_NAME_PREFIXES.get(&*pk).copied()
}
