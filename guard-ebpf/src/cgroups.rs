//! Cgroup changes: a tagged process moved to another cgroup (reported; it keeps its policy via
//! `TAGGED`), and cgroups created or removed (the daemon matches new ones against agent globs;
//! a removed cgroup's registration goes at once).
use aya_ebpf::{EbpfContext as _, helpers::bpf_probe_read_kernel_str_bytes, programs::TracePointContext};
use guard_common::{
    CGROUP_OP_MKDIR, CGROUP_OP_RMDIR, CgroupEvent, EventKind, FILENAME_LEN, MoveEvent,
};

use crate::{
    kernel::{fill_task_header, global},
    maps::{AGENT_CGROUPS, EVENTS, TAGGED, URGENT, count_drop},
    workload::Workload,
};

/// Offsets in the `cgroup/cgroup_attach_task` record, from its tracefs format.
#[unsafe(no_mangle)]
static ATTACH_ROOT: u32 = 8;
#[unsafe(no_mangle)]
static ATTACH_ID: u32 = 16;
#[unsafe(no_mangle)]
static ATTACH_PID: u32 = 24;
#[unsafe(no_mangle)]
static ATTACH_PATH_LOC: u32 = 28;
/// Offsets in the `cgroup/cgroup_mkdir` / `cgroup_rmdir` record.
#[unsafe(no_mangle)]
static CGROUP_EV_ROOT: u32 = 8;
#[unsafe(no_mangle)]
static CGROUP_EV_ID: u32 = 16;
#[unsafe(no_mangle)]
static CGROUP_EV_PATH_LOC: u32 = 24;

/// The cgroup v2 hierarchy's id; cgroup v1 hierarchies (hybrid hosts) are ignored.
const DFL_HIERARCHY: i32 = 0;

/// Reads a `__data_loc char[]` string of the record into `buf`.
#[inline(always)]
fn read_loc(ctx: &TracePointContext, loc_off: u32, buf: &mut [u8; FILENAME_LEN]) -> Result<(), i64> {
    // SAFETY: the offset comes from the tracepoint's format; the read is bounds-checked.
    let loc: u32 = unsafe { ctx.read_at(loc_off as usize) }?;
    let off = (loc & 0xffff) as usize;
    // SAFETY: reads a NUL-terminated string of the record into a bounded buffer.
    unsafe { bpf_probe_read_kernel_str_bytes(ctx.as_ptr().cast::<u8>().add(off), buf) }?;
    Ok(())
}

pub fn try_attach(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets from the tracepoint format (as in read_loc).
    let root: i32 = unsafe { ctx.read_at(global(&ATTACH_ROOT) as usize) }?;
    if root != DFL_HIERARCHY {
        return Ok(());
    }
    // SAFETY: as above.
    let pid: i32 = unsafe { ctx.read_at(global(&ATTACH_PID) as usize) }?;
    let pid = pid as u32;
    // Each thread of a moved process is reported; only the leader (pid == tgid) is in TAGGED.
    // SAFETY: the value is copied out at once.
    let Some(tag) = (unsafe { TAGGED.get(&pid) }).copied() else {
        return Ok(());
    };
    // SAFETY: as above.
    let dst: u64 = unsafe { ctx.read_at(global(&ATTACH_ID) as usize) }?;
    let Some(mut entry) = EVENTS.reserve::<MoveEvent>(0) else {
        count_drop(EventKind::Move);
        return Ok(());
    };
    // SAFETY: every field is written below before submit; the entry is ring-buffer memory.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // The header describes the writer (who moved it).
    fill_task_header(&mut ev.header, EventKind::Move, &Workload::untagged());
    ev.pid = pid;
    ev.policy_id = tag.policy_id;
    ev.dst_cgroup_id = dst;
    crate::kernel::zero(&mut ev.dst_path);
    let _ = read_loc(ctx, global(&ATTACH_PATH_LOC), &mut ev.dst_path);
    entry.submit(URGENT);
    Ok(())
}

pub fn try_cgroup(ctx: &TracePointContext, op: u32) -> Result<(), i64> {
    // SAFETY: offsets from the tracepoint format.
    let root: i32 = unsafe { ctx.read_at(global(&CGROUP_EV_ROOT) as usize) }?;
    if root != DFL_HIERARCHY {
        return Ok(());
    }
    // SAFETY: as above.
    let id: u64 = unsafe { ctx.read_at(global(&CGROUP_EV_ID) as usize) }?;
    if op == CGROUP_OP_RMDIR {
        // Cgroup ids are never reused: a removed cgroup's registration can only go stale.
        let _ = AGENT_CGROUPS.remove(&id);
    }
    let Some(mut entry) = EVENTS.reserve::<CgroupEvent>(0) else {
        count_drop(EventKind::Cgroup);
        return Ok(());
    };
    // SAFETY: every field is written below before submit.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EventKind::Cgroup as u32;
    ev.op = op;
    ev.id = id;
    crate::kernel::zero(&mut ev.path);
    let _ = read_loc(ctx, global(&CGROUP_EV_PATH_LOC), &mut ev.path);
    entry.submit(URGENT);
    Ok(())
}

pub const MKDIR: u32 = CGROUP_OP_MKDIR;
pub const RMDIR: u32 = CGROUP_OP_RMDIR;
