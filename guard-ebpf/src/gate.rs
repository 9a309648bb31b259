//! The hold gate: a process stopped at exec (in `HELD`) that runs anyway — continued by its
//! parent or anyone but the daemon, which removes the entry before continuing it — is killed
//! at its first system call, before the call does anything.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal};
use guard_common::{EVENT_FLAG_SIGNAL_FAILED, EventKind};

use crate::{lineage, maps::HELD, workload};

const SIGKILL: u32 = 9;

pub fn try_gate() -> Result<(), i64> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // One hash lookup per system call; with nothing held the table is empty.
    // SAFETY: only tests for presence.
    if unsafe { HELD.get(&tgid) }.is_none() {
        return Ok(());
    }
    // SAFETY: signals the current task only.
    let failed = unsafe { bpf_send_signal(SIGKILL) } != 0;
    // Reported once: a killed task makes no further system calls. If the signal failed, the
    // entry stays and the next system call tries again.
    if !failed {
        let _ = HELD.remove(&tgid);
    }
    let mut w = workload::current().unwrap_or_else(workload::Workload::untagged);
    if failed {
        w.flags |= EVENT_FLAG_SIGNAL_FAILED;
    }
    lineage::emit(EventKind::Gate, &w, 0, 0);
    Ok(())
}
