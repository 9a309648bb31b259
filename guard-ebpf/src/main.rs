//! guard's kernel programs. Every entry point is one line that calls a `try_*` function; the
//! doc comment of each says whether it fails open or closed, and why.
#![no_std]
#![no_main]

mod exec;
mod kernel;
mod maps;
mod net;
mod workload;

use aya_ebpf::{
    macros::{cgroup_sock_addr, tracepoint},
    programs::{SockAddrContext, TracePointContext},
};

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

/// `cgroup/connect4` at the cgroup v2 root. Returns 1 to allow, 0 to refuse with `EPERM`.
/// Fails open: the only failure is an impossible per-CPU map miss.
#[cgroup_sock_addr(connect4)]
pub fn guard_connect4(ctx: SockAddrContext) -> i32 {
    net::try_connect4(&ctx).unwrap_or(net::ALLOW)
}

/// `cgroup/connect6` at the cgroup v2 root; v4-mapped destinations are judged as IPv4.
/// Fails open, like `guard_connect4`.
#[cgroup_sock_addr(connect6)]
pub fn guard_connect6(ctx: SockAddrContext) -> i32 {
    net::try_connect6(&ctx).unwrap_or(net::ALLOW)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
