//! Connect decisions: one longest-prefix lookup per destination, then the entry's port ranges.
use aya_ebpf::{maps::lpm_trie::Key, programs::SockAddrContext};
use guard_common::{
    ConnectEvent, Decision, EventKind, MAX_PORT_RANGES, NET_DENY, NET_OP_SENDMSG, NO_RULE,
    NetKeyV4, NetKeyV6, NetRule, POLICY_FLAG_AUDIT,
};

use crate::{
    kernel::fill_header,
    maps::{EVENTS, NET_V4, NET_V6, count_drop, policy_config},
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
    Ok(judge_v4(&w, op, addr, port, sa.protocol))
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
        return Ok(judge_v4(&w, op, words[3].to_ne_bytes(), port, sa.protocol));
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
    Ok(decide(&w, op, rule, AF_INET6, addr, port, sa.protocol))
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
    let (decision, ret) = match (action == NET_DENY, audit) {
        (false, _) => (Decision::Allowed, ALLOW),
        (true, true) => (Decision::WouldDeny, ALLOW),
        (true, false) => (Decision::Denied, REFUSE),
    };
    if op == NET_OP_SENDMSG && decision == Decision::Allowed {
        return ret;
    }
    // SAFETY: an all-zero ConnectEvent is a valid value (integers and arrays only).
    let mut ev: ConnectEvent = unsafe { core::mem::zeroed() };
    fill_header(&mut ev.header, EventKind::Connect, w);
    ev.header.decision = decision as u32;
    ev.header.rule_id = rule_id;
    ev.family = family;
    ev.protocol = protocol;
    ev.port = port;
    ev.op = op;
    ev.addr = addr;
    if EVENTS.output::<ConnectEvent>(&ev, 0).is_err() {
        count_drop(EventKind::Connect);
    }
    ret
}
