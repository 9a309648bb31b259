//! The hold gate: a process stopped at exec (in `HELD`) that runs anyway — continued by its
//! parent or anyone but the daemon, which marks the entry released before continuing it — is
//! killed at its first system call, before the call does anything.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_send_signal};
use guard_common::{EVENT_FLAG_SIGNAL_FAILED, EventKind, HELD_RELEASED};

use crate::{
    lineage,
    maps::{HELD, held_any, held_remove},
    workload,
};

const SIGKILL: u32 = 9;

pub fn try_gate() -> Result<(), i64> {
    // This runs on every system call on the host: with nothing held, one array read is all.
    if !held_any() {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let Some(boot_ns) = (unsafe { HELD.get(&tgid) }).map(|h| h.boot_ns) else {
        return Ok(());
    };
    if boot_ns == HELD_RELEASED {
        // Released by the daemon: its first system call ends the entry.
        held_remove(tgid);
        return Ok(());
    }
    // SAFETY: signals the current task only.
    let failed = unsafe { bpf_send_signal(SIGKILL) } != 0;
    // Reported once: a killed task makes no further system calls. If the signal failed, the
    // entry stays and the next system call tries again.
    if !failed {
        held_remove(tgid);
    }
    let mut w = workload::current().unwrap_or_else(workload::Workload::untagged);
    if failed {
        w.flags |= EVENT_FLAG_SIGNAL_FAILED;
    }
    lineage::emit(EventKind::Gate, &w, 0, 0);
    Ok(())
}
