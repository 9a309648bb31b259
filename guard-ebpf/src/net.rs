//! Connect decisions: one longest-prefix lookup per destination, then the entry's port ranges.
use aya_ebpf::{maps::lpm_trie::Key, programs::SockAddrContext};
use guard_common::{
    ConnectEvent, Decision, EVENT_FLAG_DNS_BLOCKED, EVENT_FLAG_TAINT_ALLOWED, EVENT_FLAG_TAINTED,
    EXFIL_TAINT_ALLOWLIST, EXFIL_TAINT_KILL, EventKind, MAX_PORT_RANGES, NET_ALLOW, NET_DENY,
    NET_OP_SENDMSG, NO_RULE, NetKeyV4, NetKeyV6, NetRule, POLICY_FLAG_AUDIT, SockOwner,
};

use crate::{
    kernel::{fill_header, zero},
    maps::{CONNECT_SCRATCH, DNS_BLOCKED, EVENTS, NET_V4, NET_V6, SOCK_OWNER, TAINT, count_drop, exfil_config, policy_config, wake},
    workload::{self, Workload},
};

pub const ALLOW: i32 = 1;
pub const REFUSE: i32 = 0;

/// The program's return value, as a literal 0 or 1: the verifier requires sock_addr programs to
/// provably return one of the two. Errors allow (fail open).
#[inline(always)]
pub fn ret(r: Result<i32, i64>) -> i32 {
    match r {
        Ok(REFUSE) => REFUSE,
        _ => ALLOW,
    }
}
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

pub fn try_v4(ctx: &SockAddrContext, op: u16) -> Result<i32, i64> {
    let Some(w) = workload::current() else {
        return Ok(ALLOW);
    };
    // SAFETY: the kernel hands sock_addr programs a valid context.
    let sa = unsafe { &*ctx.sock_addr };
    let addr = sa.user_ip4.to_ne_bytes();
    let port = u16::from_be(sa.user_port as u16);
    let r = judge_v4(&w, op, addr, port, sa.protocol);
    own(ctx, &w, op, r);
    Ok(r)
}

pub fn try_v6(ctx: &SockAddrContext, op: u16) -> Result<i32, i64> {
    let Some(w) = workload::current() else {
        return Ok(ALLOW);
    };
    // SAFETY: as in try_v4.
    let sa = unsafe { &*ctx.sock_addr };
    let words = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    let port = u16::from_be(sa.user_port as u16);
    // ::ffff:a.b.c.d is the IPv4 address a.b.c.d on a dual-stack socket: judge it as one.
    if words[0] == 0 && words[1] == 0 && words[2] == 0xffffu32.to_be() {
        let r = judge_v4(&w, op, words[3].to_ne_bytes(), port, sa.protocol);
        own(ctx, &w, op, r);
        return Ok(r);
    }
    let mut addr = [0u8; 16];
    for (i, word) in words.iter().enumerate() {
        let b = word.to_ne_bytes();
        addr[i * 4] = b[0];
        addr[i * 4 + 1] = b[1];
        addr[i * 4 + 2] = b[2];
        addr[i * 4 + 3] = b[3];
    }
    let key = Key::new(32 + 128, NetKeyV6 { policy_id_be: w.policy_id.to_be_bytes(), addr });
    let rule = NET_V6.get(&key);
    let r = decide(&w, op, rule, AF_INET6, addr, port, sa.protocol);
    own(ctx, &w, op, r);
    Ok(r)
}

/// Records whose socket this is, for the `cgroup_skb` programs (byte budgets, DNS), in the
/// socket's own storage (`SOCK_OWNER`). A sendmsg only records a socket not seen yet:
/// datagrams are many; a connect records its caller.
#[inline(always)]
fn own(ctx: &SockAddrContext, w: &Workload, op: u16, ret: i32) {
    if ret != ALLOW {
        return;
    }
    let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
    let mut o = SockOwner { tgid, policy_id: w.policy_id, cgroup_id: w.cgroup_id, matched_cgroup_id: w.matched_cgroup_id };
    // SAFETY: the kernel hands sock_addr programs their socket; `o` is copied in when the entry
    // is created, and the pointer returned (NULL if it could not be) is to this socket's value.
    // Creation is charged to the socket's option memory (`net.core.optmem_max`, as
    // `sock_kmalloc`): a socket whose option memory is used up gets no owner and is not
    // budgeted (fail open, as an entry evicted from the cookie-keyed LRU map this replaced).
    let p = unsafe { SOCK_OWNER.get_or_insert_ptr_mut(ctx, Some(&mut o)) };
    if op != NET_OP_SENDMSG && !p.is_null() {
        // SAFETY: as above; a whole-value write.
        unsafe { *p = o };
    }
}

const DNS_PORT: u16 = 53;

/// Is the destination loopback (127.0.0.0/8 or ::1)?
#[inline(always)]
fn loopback(family: u32, addr: &[u8; 16]) -> bool {
    if family == AF_INET {
        return addr[0] == 127;
    }
    let mut zero = true;
    for b in &addr[..15] {
        zero &= *b == 0;
    }
    zero && addr[15] == 1
}

#[inline(always)]
fn judge_v4(w: &Workload, op: u16, addr4: [u8; 4], port: u16, protocol: u32) -> i32 {
    let key = Key::new(32 + 32, NetKeyV4 { policy_id_be: w.policy_id.to_be_bytes(), addr: addr4 });
    let rule = NET_V4.get(&key);
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&addr4);
    decide(w, op, rule, AF_INET, addr, port, protocol)
}

/// Applies the first port range that contains `port`, else the policy default; reports it
/// (for sendmsg, only a refusal: allowed datagrams are too many to report one by one).
#[inline(always)]
fn decide(w: &Workload, op: u16, rule: Option<&NetRule>, family: u32, addr: [u8; 16], port: u16, protocol: u32) -> i32 {
    let config = policy_config(w.policy_id);
    let (mut action, mut rule_id) = (config.net_default, NO_RULE);
    if let Some(rule) = rule {
        for i in 0..MAX_PORT_RANGES {
            if i as u32 >= rule.count {
                break;
            }
            let r = &rule.ranges[i];
            if r.lo <= port && port <= r.hi {
                action = r.action;
                rule_id = r.rule_id;
                break;
            }
        }
    }
    let audit = config.flags & POLICY_FLAG_AUDIT != 0;
    let mut flags = 0;
    let mut kill = false;
    if action == NET_ALLOW && port == DNS_PORT {
        // SAFETY: presence test only.
        if unsafe { DNS_BLOCKED.get(&w.cgroup_id) }.is_some() {
            action = NET_DENY;
            flags |= EVENT_FLAG_DNS_BLOCKED;
        }
    } else if action == NET_ALLOW {
        // After a sensitive read, only what an allow rule names (DNS is left to the tunnel
        // checks: host rules need it).
        let exfil = exfil_config(w.policy_id).flags;
        let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: presence test only.
        if exfil & (EXFIL_TAINT_ALLOWLIST | EXFIL_TAINT_KILL) != 0 && unsafe { TAINT.get(&tgid) }.is_some() {
            if rule_id != NO_RULE {
                flags |= EVENT_FLAG_TAINT_ALLOWED;
            } else {
                action = NET_DENY;
                flags |= EVENT_FLAG_TAINTED;
                kill = exfil & EXFIL_TAINT_KILL != 0 && !loopback(family, &addr);
            }
        }
    }
    let (decision, ret) = match (action == NET_DENY, audit) {
        (false, _) => (Decision::Allowed, ALLOW),
        (true, true) if kill => (Decision::WouldKill, ALLOW),
        (true, true) => (Decision::WouldDeny, ALLOW),
        // The daemon carries out the kill: sock_addr programs cannot signal.
        (true, false) if kill => (Decision::Killed, REFUSE),
        (true, false) => (Decision::Denied, REFUSE),
    };
    if op == NET_OP_SENDMSG && decision == Decision::Allowed {
        return ret;
    }
    // In a per-CPU slot, not on the stack: with the v6 path's frames it would pass the 512-byte
    // stack limit on 6.1 ("combined stack size of 3 calls is 544").
    let Some(ev) = CONNECT_SCRATCH.get_ptr_mut(0) else { return ret };
    // SAFETY: the per-CPU slot is ours for the duration of this program run.
    let ev: &mut ConnectEvent = unsafe { &mut *ev };
    zero(ev);
    fill_header(&mut ev.header, EventKind::Connect, w);
    ev.header.decision = decision as u32;
    ev.header.rule_id = rule_id;
    ev.header.flags |= flags;
    ev.family = family;
    ev.protocol = protocol;
    ev.port = port;
    ev.op = op;
    ev.addr = addr;
    if EVENTS.output::<ConnectEvent>(ev, wake(decision != Decision::Allowed, size_of::<ConnectEvent>())).is_err() {
        count_drop(EventKind::Connect);
    }
    ret
}
