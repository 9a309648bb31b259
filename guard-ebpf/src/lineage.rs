//! Forks and exits of processes in agent workloads: lineage for the daemon's process table, so
//! every verdict can name the chain of ancestors up to the agent's launch.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    programs::{BtfTracePointContext, TracePointContext},
};
use guard_common::{EventKind, ProcEvent, TAINT_INHERITED};

use crate::{
    kernel::{current_exit_code, fill_header, fill_task_header, task_ids, zeroed},
    maps::{EVENTS, TAGGED, TAINT, count_drop, held_remove, wake},
    workload,
};

/// `tp_btf/sched_process_fork(parent, child)`: runs in the parent, whose cgroup the child
/// inherits. Threads are not processes: skipped.
pub fn try_fork(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let child: u64 = ctx.arg(1);
    let (pid, tgid) = task_ids(child);
    if pid == 0 || pid != tgid {
        return Ok(());
    }
    let Some(w) = workload::current() else {
        return Ok(());
    };
    // The child inherits the cgroup, and the policy if the parent was moved out.
    w.tag(pid);
    // And the taint of a sensitive read: the reader's children are its hands.
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: copied out at once.
    if let Some(t) = unsafe { TAINT.get(&parent) }.copied() {
        let inherited = guard_common::Taint { flags: t.flags | TAINT_INHERITED, ..t };
        let _ = TAINT.insert(&pid, &inherited, 0);
    }
    emit(EventKind::Fork, &w, pid, 0);
    Ok(())
}

/// `sched/sched_process_exit`: reported once per process, when its thread group leader exits.
pub fn try_exit(_ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_tgid as u32 != (pid_tgid >> 32) as u32 {
        return Ok(());
    }
    let Some(w) = workload::current() else {
        return Ok(());
    };
    let tgid = (pid_tgid >> 32) as u32;
    let _ = TAGGED.remove(&tgid);
    held_remove(tgid);
    let _ = TAINT.remove(&tgid);
    emit(EventKind::Exit, &w, 0, current_exit_code());
    Ok(())
}

#[inline(always)]
pub fn emit(kind: EventKind, w: &workload::Workload, child: u32, exit_code: u32) {
    let mut slot = core::mem::MaybeUninit::<ProcEvent>::uninit();
    let ev = zeroed(&mut slot);
    // The daemon reads a fork or an exit only for its pids (lineage, holds, taints): the parent
    // and cgroup name a verdict needs cost four kernel reads and a string copy it would discard.
    if kind as u32 == EventKind::Gate as u32 {
        fill_task_header(&mut ev.header, kind, w);
    } else {
        fill_header(&mut ev.header, kind, w);
    }
    ev.child = child;
    ev.exit_code = exit_code;
    // A gate kill is news; forks and exits are routine.
    if EVENTS.output::<ProcEvent>(ev, wake(kind as u32 == EventKind::Gate as u32, size_of::<ProcEvent>())).is_err() {
        count_drop(kind);
    }
}
