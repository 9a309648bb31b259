//! guard's kernel programs. Every entry point is one line that calls a `try_*` function; the
//! doc comment of each says whether it fails open or closed, and why.
#![no_std]
#![no_main]
// `asm!` for BPF (an atomic add: `maps::held_add`).
#![feature(asm_experimental_arch)]

mod cgroups;
mod deletes;
mod exec;
mod files;
mod gate;
mod kernel;
mod lineage;
mod maps;
mod net;
mod open;
mod skb;
mod sock;
mod workload;

use aya_ebpf::{
    macros::{btf_tracepoint, cgroup_skb, cgroup_sock, cgroup_sock_addr, lsm, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, LsmContext, RawTracePointContext, SkBuffContext, SockAddrContext, SockContext, TracePointContext},
};
use guard_common::{NET_OP_CONNECT, NET_OP_SENDMSG};

/// `sched/sched_process_exec`: decides a new image of an agent workload before it runs.
///
/// Fails open (the exec goes on, no event): the only failure is reading the tracepoint record,
/// which the kernel guarantees is present; a process outside agent workloads costs one cgroup
/// ancestry walk.
#[tracepoint]
pub fn guard_exec(ctx: TracePointContext) -> u32 {
    match exec::try_exec(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `lsm/bprm_check_security` (the `lsm` tier only): fails a denied exec with `EPERM`, the caller
/// living. Fails open (0) only where the binprm cannot be read; `sched_process_exec` still
/// judges every exec after it.
#[lsm(hook = "bprm_check_security")]
pub fn guard_lsm_exec(ctx: LsmContext) -> i32 {
    exec::try_lsm_exec(&ctx)
}

/// `lsm/socket_create` (the `lsm` tier only): refuses raw and packet sockets to agent workloads
/// with `EPERM`. Nothing in it can fail.
#[lsm(hook = "socket_create")]
pub fn guard_lsm_socket(ctx: LsmContext) -> i32 {
    sock::try_lsm_socket(&ctx)
}

/// `lsm/file_open` (the `lsm` tier only): refuses an agent workload's open of an `action: deny`
/// sensitive path with `EPERM` (see `open`). Fails open.
#[lsm(hook = "file_open")]
pub fn guard_lsm_open(ctx: LsmContext) -> i32 {
    open::try_lsm_open(&ctx)
}

/// `tp_btf/sched_process_fork`: lineage only, decides nothing. Fails open.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn guard_fork(ctx: BtfTracePointContext) -> u32 {
    match lineage::try_fork(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `sched/sched_process_exit`: lineage only, decides nothing. Fails open.
#[tracepoint]
pub fn guard_exit(ctx: TracePointContext) -> u32 {
    match lineage::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup/connect4` at the cgroup v2 root. Returns 1 to allow, 0 to refuse with `EPERM`.
/// Fails open: the only failure is an impossible per-CPU map miss.
#[cgroup_sock_addr(connect4)]
pub fn guard_connect4(ctx: SockAddrContext) -> i32 {
    net::ret(net::try_v4(&ctx, NET_OP_CONNECT))
}

/// `cgroup/connect6` at the cgroup v2 root; v4-mapped destinations are judged as IPv4.
/// Fails open, like `guard_connect4`.
#[cgroup_sock_addr(connect6)]
pub fn guard_connect6(ctx: SockAddrContext) -> i32 {
    net::ret(net::try_v6(&ctx, NET_OP_CONNECT))
}

/// `cgroup/sendmsg4`: datagrams sent with a destination address (unconnected UDP, DNS).
/// Returns 1 to send, 0 to fail the send with `EPERM`. Fails open, like `guard_connect4`.
#[cgroup_sock_addr(sendmsg4)]
pub fn guard_sendmsg4(ctx: SockAddrContext) -> i32 {
    net::ret(net::try_v4(&ctx, NET_OP_SENDMSG))
}

/// `cgroup/sendmsg6`, like `guard_sendmsg4`; v4-mapped destinations are judged as IPv4.
#[cgroup_sock_addr(sendmsg6)]
pub fn guard_sendmsg6(ctx: SockAddrContext) -> i32 {
    net::ret(net::try_v6(&ctx, NET_OP_SENDMSG))
}

/// `syscalls/sys_enter_socket`: kills an agent workload asking for an `AF_PACKET` socket (which
/// `cgroup/sock_create` never sees) unless its policy allows raw sockets. Fails open: the only
/// failure is reading the tracepoint record.
#[tracepoint]
pub fn guard_socket_enter(ctx: TracePointContext) -> u32 {
    match sock::try_socket_enter(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup/sock_create` at the cgroup v2 root: refuses raw and packet sockets to agent
/// workloads unless their policy allows them. Returns 1 to allow, 0 for `EPERM`. Fails open
/// (nothing in it can fail).
#[cgroup_sock(sock_create)]
pub fn guard_sock_create(ctx: SockContext) -> i32 {
    sock::try_sock_create(&ctx)
}

/// `raw_tracepoint/sys_enter`: the hold gate. Kills a held process at its first system call
/// (it was continued by someone other than the daemon). Fails closed for held processes: a
/// held process that cannot be looked up does not exist.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn guard_gate(_ctx: RawTracePointContext) -> i32 {
    match gate::try_gate() {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup/cgroup_attach_task`: reports a tagged process moved to another cgroup; it keeps its
/// policy (see `workload::current`). Fails open (no report) only if the record is unreadable.
#[tracepoint]
pub fn guard_attach(ctx: TracePointContext) -> u32 {
    match cgroups::try_attach(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup/cgroup_mkdir`: reports new cgroups, for agents matched by glob or systemd unit.
#[tracepoint]
pub fn guard_cgroup_mkdir(ctx: TracePointContext) -> u32 {
    match cgroups::try_cgroup(&ctx, cgroups::MKDIR) {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup/cgroup_rmdir`: forgets a removed cgroup's registration and reports it.
#[tracepoint]
pub fn guard_cgroup_rmdir(ctx: TracePointContext) -> u32 {
    match cgroups::try_cgroup(&ctx, cgroups::RMDIR) {
        Ok(()) | Err(_) => 0,
    }
}

/// `cgroup_skb/egress` at the cgroup v2 root: byte budgets of agent workloads' sockets, DNS
/// queries copied to the daemon, DNS of tunnelling workloads dropped. Returns 1 to pass, 0 to
/// drop. Fails open: a packet it cannot parse, or of a socket no hook recorded, passes.
#[cgroup_skb(egress)]
pub fn guard_egress(ctx: SkBuffContext) -> i32 {
    if skb::try_egress(&ctx) == skb::DROP { skb::DROP } else { skb::PASS }
}

/// `cgroup_skb/ingress` at the cgroup v2 root: DNS answers to agent workloads' sockets copied
/// to the daemon (FQDN allowlists). Never drops.
#[cgroup_skb(ingress)]
pub fn guard_ingress(ctx: SkBuffContext) -> i32 {
    skb::try_ingress(&ctx);
    skb::PASS
}

/// `syscalls/sys_enter_openat`: sensitive reads of agent workloads (see `open`). Fails open.
#[tracepoint]
pub fn guard_openat(ctx: TracePointContext) -> u32 {
    match open::try_openat(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `syscalls/sys_enter_openat2`, like `guard_openat`.
#[tracepoint]
pub fn guard_openat2(ctx: TracePointContext) -> u32 {
    match open::try_openat2(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `syscalls/sys_enter_open`, like `guard_openat`.
#[tracepoint]
pub fn guard_open(ctx: TracePointContext) -> u32 {
    match open::try_open_legacy(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `syscalls/sys_enter_*` of the file calls a protect rule can refuse (one program, attached to
/// each): remembers the call of an agent workload with `files.protect` rules. Fails open (no
/// report; Landlock still refuses the call).
#[tracepoint]
pub fn guard_files_enter(ctx: TracePointContext) -> u32 {
    match files::try_enter(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `syscalls/sys_exit_*` of the same calls: reports one that failed with EACCES or EPERM.
#[tracepoint]
pub fn guard_files_exit(ctx: TracePointContext) -> u32 {
    match files::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `syscalls/sys_enter_unlink`, `sys_enter_unlinkat`, `sys_enter_rmdir`: remember a deletion
/// of a workload with a deletion budget for its exit (see `deletes`). Fail open: nothing
/// counted.
#[tracepoint]
pub fn guard_unlink_enter(ctx: TracePointContext) -> u32 {
    match deletes::try_enter(&ctx, guard_common::DELETE_SYS_UNLINK) {
        Ok(()) | Err(_) => 0,
    }
}

#[tracepoint]
pub fn guard_unlinkat_enter(ctx: TracePointContext) -> u32 {
    match deletes::try_enter(&ctx, guard_common::DELETE_SYS_UNLINKAT) {
        Ok(()) | Err(_) => 0,
    }
}

#[tracepoint]
pub fn guard_rmdir_enter(ctx: TracePointContext) -> u32 {
    match deletes::try_enter(&ctx, guard_common::DELETE_SYS_RMDIR) {
        Ok(()) | Err(_) => 0,
    }
}

/// `syscalls/sys_exit_unlink`, `sys_exit_unlinkat`, `sys_exit_rmdir`: count a successful
/// deletion; past the budget kill or stop the deleter (see `deletes`). Fails open: a deletion
/// whose entry was not recorded (map full) is not counted.
#[tracepoint]
pub fn guard_unlink_exit(ctx: TracePointContext) -> u32 {
    match deletes::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[tracepoint]
pub fn guard_unlinkat_exit(ctx: TracePointContext) -> u32 {
    match deletes::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[tracepoint]
pub fn guard_rmdir_exit(ctx: TracePointContext) -> u32 {
    match deletes::try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
