//! Exec decisions: exact path, then basename.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_send_signal},
    programs::TracePointContext,
};
use guard_common::{
    Decision, EVENT_FLAG_FILENAME_TRUNCATED, EVENT_FLAG_SIGNAL_FAILED, EventKind, ExecRule,
    FILENAME_LEN, POLICY_FLAG_AUDIT,
};

use crate::{
    kernel::{comm_name, exe_name, fill_task_header, global},
    maps::{EVENTS, EXEC_NAMES, EXEC_PATHS, EXEC_SCRATCH, count_drop, policy_config},
    workload,
};

/// Offset of `__data_loc char[] filename` in the tracepoint record, from the tracefs format.
#[unsafe(no_mangle)]
static EXEC_FILENAME_LOC: u32 = 8;

const SIGKILL: u32 = 9;

pub fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(w) = workload::current() else {
        return Ok(());
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

    // SAFETY: the value is copied out at once.
    let mut rule: Option<ExecRule> = unsafe { EXEC_PATHS.get(&ev.key) }.copied();
    // Basename rules: the kernel already holds the basename twice, so no loop over the path is
    // needed (a data-dependent loop there explodes the verifier's state space):
    //  - `comm`, set by begin_new_exec() to kbasename(bprm->filename) before this tracepoint,
    //    complete when shorter than TASK_COMM_LEN - 1 bytes;
    //  - the executed file's own name (mm->exe_file's dentry), which also catches a symlink or
    //    a renamed copy of a denied binary invoked under another name.
    let nk = &mut scratch.name_key;
    nk.policy_id = w.policy_id;
    if rule.is_none() && comm_name(&mut nk.name) {
        // SAFETY: as above.
        rule = unsafe { EXEC_NAMES.get(&*nk) }.copied();
    }
    if rule.is_none() && exe_name(&mut nk.name) {
        // SAFETY: as above.
        rule = unsafe { EXEC_NAMES.get(&*nk) }.copied();
    }

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
    if EVENTS.output::<guard_common::ExecEvent>(&*ev, 0).is_err() {
        count_drop(EventKind::Exec);
    }
    Ok(())
}
