//! Socket creation: raw (`SOCK_RAW`) and packet (`AF_PACKET`) sockets let a workload forge or
//! sniff traffic below the connect/sendmsg hooks, so agent workloads get none unless allowed.
//!
//! Raw inet sockets are refused with `EPERM` by `cgroup/sock_create`. `AF_PACKET` sockets never
//! reach that hook (only inet_create()/inet6_create() run it), so they are stopped at
//! `syscalls/sys_enter_socket` instead: the caller is killed before the socket exists.
use aya_ebpf::{
    helpers::generated::bpf_send_signal,
    programs::{LsmContext, SockContext, TracePointContext},
};
use guard_common::{
    Decision, EVENT_FLAG_LSM, EVENT_FLAG_SIGNAL_FAILED, EventKind, POLICY_FLAG_ALLOW_RAW_SOCKETS, POLICY_FLAG_AUDIT,
    SocketEvent,
};

use crate::{
    kernel::{fill_header, fill_task_header, global, zeroed},
    maps::{EVENTS, count_drop, policy_config, wake},
    net::{ALLOW, REFUSE},
    workload::{self, Workload},
};

/// Offsets of `family`, `type` and `protocol` in the `sys_enter_socket` record (tracefs format).
#[unsafe(no_mangle)]
static SOCKET_FAMILY: u32 = 16;
#[unsafe(no_mangle)]
static SOCKET_TYPE: u32 = 24;
#[unsafe(no_mangle)]
static SOCKET_PROTOCOL: u32 = 32;

/// Non-zero on the `lsm` tier: `lsm/socket_create` refuses packet sockets, so the
/// `sys_enter_socket` kill stands down, and `lsm/file_open` refuses `action: deny` sensitive
/// paths, so the open tracepoints leave them to it (a load-time constant: the verifier drops the
/// branch).
#[unsafe(no_mangle)]
pub(crate) static LSM_TIER: u32 = 0;

const SIGKILL: u32 = 9;
const EPERM: i32 = 1;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_PACKET: u32 = 17;
const SOCK_RAW: u32 = 3;

pub fn try_sock_create(ctx: &SockContext) -> i32 {
    // SAFETY: the kernel hands sock programs a valid context.
    let sk = unsafe { &*ctx.sock };
    let (family, sock_type, protocol) = (sk.family, sk.type_, sk.protocol);
    let raw = family == AF_PACKET || (sock_type == SOCK_RAW && (family == AF_INET || family == AF_INET6));
    if !raw {
        return ALLOW;
    }
    let Some(w) = workload::current() else {
        return ALLOW;
    };
    let config = policy_config(w.policy_id);
    if config.flags & POLICY_FLAG_ALLOW_RAW_SOCKETS != 0 {
        return ALLOW;
    }
    let audit = config.flags & POLICY_FLAG_AUDIT != 0;
    let (decision, ret) = if audit { (Decision::WouldDeny, ALLOW) } else { (Decision::Denied, REFUSE) };
    let mut slot = core::mem::MaybeUninit::<SocketEvent>::uninit();
    let ev = zeroed(&mut slot);
    fill_header(&mut ev.header, EventKind::Socket, &w);
    report(ev, decision, family, sock_type, protocol);
    if ret == REFUSE { REFUSE } else { ALLOW }
}

/// `lsm/socket_create(family, type, protocol, kern, ret)`: the `lsm` tier refuses raw and packet
/// sockets to agent workloads with `EPERM` before they exist, the caller living on. Sockets the
/// kernel makes for itself (`kern`) are not the workload's.
pub fn try_lsm_socket(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let (family, sock_type, protocol, kern): (i32, i32, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    let (family, sock_type, protocol) = (family as u32, sock_type as u32 & SOCK_TYPE_MASK, protocol as u32);
    let raw = family == AF_PACKET || (sock_type == SOCK_RAW && (family == AF_INET || family == AF_INET6));
    if kern != 0 || !raw {
        return 0;
    }
    let Some(w) = workload::current() else {
        return 0;
    };
    let config = policy_config(w.policy_id);
    if config.flags & POLICY_FLAG_ALLOW_RAW_SOCKETS != 0 {
        return 0;
    }
    let audit = config.flags & POLICY_FLAG_AUDIT != 0;
    // In audit mode the socket is made, and cgroup/sock_create reports a raw inet one: one
    // verdict each.
    if audit && family != AF_PACKET {
        return 0;
    }
    let mut slot = core::mem::MaybeUninit::<SocketEvent>::uninit();
    let ev = zeroed(&mut slot);
    fill_task_header(&mut ev.header, EventKind::Socket, &w);
    ev.header.flags |= EVENT_FLAG_LSM;
    report(ev, if audit { Decision::WouldDeny } else { Decision::Denied }, family, sock_type, protocol);
    if audit { 0 } else { -EPERM }
}

/// `type` of socket(2) also carries SOCK_NONBLOCK and SOCK_CLOEXEC.
const SOCK_TYPE_MASK: u32 = 0xf;

pub fn try_socket_enter(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets come from this tracepoint's format; reads are bounds-checked.
    let family: u64 = unsafe { ctx.read_at(global(&SOCKET_FAMILY) as usize) }?;
    if family != u64::from(AF_PACKET) || global(&LSM_TIER) != 0 {
        return Ok(());
    }
    let Some(w) = workload::current() else {
        return Ok(());
    };
    let config = policy_config(w.policy_id);
    if config.flags & POLICY_FLAG_ALLOW_RAW_SOCKETS != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    let sock_type: u64 = unsafe { ctx.read_at(global(&SOCKET_TYPE) as usize) }?;
    // SAFETY: as above.
    let protocol: u64 = unsafe { ctx.read_at(global(&SOCKET_PROTOCOL) as usize) }?;
    kill_for_socket(&w, config.flags & POLICY_FLAG_AUDIT != 0, sock_type as u32, protocol as u32);
    Ok(())
}

#[inline(always)]
fn kill_for_socket(w: &Workload, audit: bool, sock_type: u32, protocol: u32) {
    let mut slot = core::mem::MaybeUninit::<SocketEvent>::uninit();
    let ev = zeroed(&mut slot);
    fill_task_header(&mut ev.header, EventKind::Socket, w);
    let decision = if audit {
        Decision::WouldKill
    } else {
        // Delivered before the syscall returns to user mode: the socket is never used.
        // SAFETY: signals the current task only.
        if unsafe { bpf_send_signal(SIGKILL) } != 0 {
            ev.header.flags |= EVENT_FLAG_SIGNAL_FAILED;
        }
        Decision::Killed
    };
    report(ev, decision, AF_PACKET, sock_type, protocol);
}

#[inline(always)]
fn report(ev: &mut SocketEvent, decision: Decision, family: u32, sock_type: u32, protocol: u32) {
    ev.header.decision = decision as u32;
    ev.family = family;
    ev.sock_type = sock_type;
    ev.protocol = protocol;
    if EVENTS.output::<SocketEvent>(&*ev, wake(decision != Decision::Allowed, size_of::<SocketEvent>())).is_err() {
        count_drop(EventKind::Socket);
    }
}
