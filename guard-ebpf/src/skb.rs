//! Packets of agent workloads' sockets (`cgroup_skb`, attached at the cgroup v2 root): byte
//! budgets per (workload, destination, port) on egress, DNS to and from port 53 copied to the
//! daemon, and DNS cut off for workloads caught tunnelling. The current task here is not the
//! sender: whose socket it is comes from `SOCK_OWNER`, the socket's own storage (filled by the
//! connect/sendmsg hooks).
use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_sk_storage_get, bpf_skb_load_bytes},
    maps::lpm_trie::Key,
    programs::SkBuffContext,
};
use guard_common::{
    BudgetEvent, BudgetKey, BudgetValue, DNS_ANSWER, DNS_PAYLOAD_LEN, DNS_QUERY, Decision, DnsEvent,
    EXFIL_BUDGET_KILL, EXFIL_WATCH_DNS, EventKind, NetKeyV4, NetKeyV6, POLICY_FLAG_AUDIT, SockOwner,
};

use crate::maps::{
    AGENT_CGROUPS, BUDGET_EXEMPT_V4, BUDGET_EXEMPT_V6, BUDGETS, DNS_BLOCKED, EVENTS, URGENT,
    count_drop, exfil_config, policy_config, sock_owner_map,
};

pub const PASS: i32 = 1;
pub const DROP: i32 = 0;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;

/// What the IP and transport headers say.
struct Packet {
    family: u16,
    protocol: u8,
    /// Source (ingress) or destination (egress) address, network byte order.
    addr: [u8; 16],
    src_port: u16,
    dst_port: u16,
    /// Offset of the transport payload.
    payload_off: u32,
}

/// Parses IPv4/IPv6 + TCP/UDP headers; `None` for anything else (IPv6 extension headers too).
#[inline(always)]
fn parse(ctx: &SkBuffContext, remote_is_dst: bool) -> Option<Packet> {
    let b0: u8 = ctx.load(0).ok()?;
    let mut addr = [0u8; 16];
    let (family, protocol, l4) = match b0 >> 4 {
        4 => {
            let protocol: u8 = ctx.load(9).ok()?;
            let at = if remote_is_dst { 16 } else { 12 };
            let a: [u8; 4] = ctx.load(at).ok()?;
            addr[..4].copy_from_slice(&a);
            (AF_INET, protocol, u32::from(b0 & 0x0f) * 4)
        }
        6 => {
            let protocol: u8 = ctx.load(6).ok()?;
            let at = if remote_is_dst { 24 } else { 8 };
            addr = ctx.load(at).ok()?;
            (AF_INET6, protocol, 40)
        }
        _ => return None,
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    let ports: [u8; 4] = ctx.load(l4 as usize).ok()?;
    let payload_off = if protocol == IPPROTO_UDP {
        l4 + 8
    } else {
        let doff: u8 = ctx.load(l4 as usize + 12).ok()?;
        l4 + u32::from(doff >> 4) * 4
    };
    Some(Packet {
        family,
        protocol,
        addr,
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
        payload_off,
    })
}

/// The owner of the packet's socket, as its connect or sendmsg recorded it. For a
/// socket no agent workload connected (every other socket on the host) this is all a packet
/// costs: one socket-storage read that finds nothing.
#[inline(always)]
fn owner(ctx: &SkBuffContext) -> Option<SockOwner> {
    // SAFETY: the kernel hands cgroup_skb programs a valid `__sk_buff`; `sk` may be NULL.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: the helper reads the socket's storage only (NULL for a request or timewait
    // socket, or a socket without an entry); no value is created.
    let p = unsafe { bpf_sk_storage_get(sock_owner_map(), sk.cast(), core::ptr::null_mut(), 0) }.cast::<SockOwner>();
    if p.is_null() {
        return None;
    }
    // SAFETY: copied out at once; the storage lives as long as the socket, which outlives us.
    Some(unsafe { *p })
}

/// `o` with the policy now registered for its workload (a reload may have changed it).
#[inline(always)]
fn current_policy(mut o: SockOwner) -> SockOwner {
    // SAFETY: the value is copied out at once.
    if let Some(reg) = unsafe { AGENT_CGROUPS.get(&o.matched_cgroup_id) } {
        o.policy_id = reg.policy_id;
    }
    o
}

pub fn try_egress(ctx: &SkBuffContext) -> i32 {
    let Some(o) = owner(ctx) else {
        return PASS;
    };
    let o = current_policy(o);
    let Some(p) = parse(ctx, true) else {
        return PASS;
    };
    let audit = policy_config(o.policy_id).flags & POLICY_FLAG_AUDIT != 0;
    let exfil = exfil_config(o.policy_id);
    if p.dst_port == DNS_PORT {
        // Connected UDP and TCP sockets never pass the sendmsg hook again: cut them off here.
        // SAFETY: presence test only.
        if unsafe { DNS_BLOCKED.get(&o.cgroup_id) }.is_some() && !audit {
            return DROP;
        }
        if exfil.flags & EXFIL_WATCH_DNS != 0 {
            copy_dns(ctx, &o, &p, DNS_QUERY);
        }
        return PASS;
    }
    if exfil.budget_bytes == 0 {
        return PASS;
    }
    let key = BudgetKey { cgroup_id: o.cgroup_id, addr: p.addr, port: p.dst_port, family: p.family, _pad: 0 };
    let len = u64::from(ctx.len());
    // SAFETY: no arguments, no memory access.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(v) = BUDGETS.get_ptr_mut(&key) else {
        let exempt = exempt(o.policy_id, &p);
        let over = !exempt && len > exfil.budget_bytes;
        let v = BudgetValue { window_start: now, bytes: if over { 0 } else { len }, dropped: if over { len } else { 0 }, over: u32::from(over), exempt: u32::from(exempt) };
        let _ = BUDGETS.insert(&key, &v, 0);
        if over {
            report(&o, &p, &exfil, &v, len, audit);
            return if audit { PASS } else { DROP };
        }
        return PASS;
    };
    // SAFETY: the entry stays valid for this run (LRU maps are preallocated); concurrent
    // updates from another CPU can only blur the count by a packet.
    let v = unsafe { &mut *v };
    if now.wrapping_sub(v.window_start) >= exfil.window_ns {
        v.window_start = now;
        v.bytes = 0;
        v.dropped = 0;
        v.over = 0;
        v.exempt = u32::from(exempt(o.policy_id, &p));
    }
    if v.exempt != 0 {
        v.bytes += len;
        return PASS;
    }
    if v.over != 0 {
        v.dropped += len;
        return if audit { PASS } else { DROP };
    }
    if v.bytes + len > exfil.budget_bytes {
        v.over = 1;
        v.dropped += len;
        report(&o, &p, &exfil, v, len, audit);
        return if audit { PASS } else { DROP };
    }
    v.bytes += len;
    PASS
}

pub fn try_ingress(ctx: &SkBuffContext) -> i32 {
    // The owner first: for a socket no agent workload connected it is one read, cheaper than
    // parsing the headers of every packet on the host.
    let Some(o) = owner(ctx) else {
        return PASS;
    };
    let Some(p) = parse(ctx, false) else {
        return PASS;
    };
    if p.src_port != DNS_PORT {
        return PASS;
    }
    let o = current_policy(o);
    if exfil_config(o.policy_id).flags & EXFIL_WATCH_DNS != 0 {
        copy_dns(ctx, &o, &p, DNS_ANSWER);
    }
    PASS
}

#[inline(always)]
fn exempt(policy_id: u32, p: &Packet) -> bool {
    let policy_id_be = policy_id.to_be_bytes();
    if p.family == AF_INET {
        let key = Key::new(64, NetKeyV4 { policy_id_be, addr: [p.addr[0], p.addr[1], p.addr[2], p.addr[3]] });
        BUDGET_EXEMPT_V4.get(&key).is_some()
    } else {
        let key = Key::new(32 + 128, NetKeyV6 { policy_id_be, addr: p.addr });
        BUDGET_EXEMPT_V6.get(&key).is_some()
    }
}

#[inline(always)]
fn report(o: &SockOwner, p: &Packet, exfil: &guard_common::ExfilConfig, v: &BudgetValue, len: u64, audit: bool) {
    let kill = exfil.flags & EXFIL_BUDGET_KILL != 0;
    let decision = match (kill, audit) {
        (true, false) => Decision::Killed,
        (false, false) => Decision::Denied,
        (true, true) => Decision::WouldKill,
        (false, true) => Decision::WouldDeny,
    };
    let ev = BudgetEvent {
        kind: EventKind::Budget as u32,
        decision: decision as u32,
        // SAFETY: no arguments, no memory access.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        tgid: o.tgid,
        policy_id: o.policy_id,
        cgroup_id: o.cgroup_id,
        bytes: v.bytes,
        packet: len,
        budget: exfil.budget_bytes,
        window_ns: exfil.window_ns,
        window_start: v.window_start,
        addr: p.addr,
        port: p.dst_port,
        family: p.family,
        protocol: u32::from(p.protocol),
    };
    if EVENTS.output::<BudgetEvent>(&ev, URGENT).is_err() {
        count_drop(EventKind::Budget);
    }
}

/// Copies a DNS message (the start of it, at most `DNS_PAYLOAD_LEN` bytes) to the daemon.
#[inline(always)]
fn copy_dns(ctx: &SkBuffContext, o: &SockOwner, p: &Packet, direction: u32) {
    let total = ctx.len();
    if p.payload_off >= total {
        return;
    }
    let payload_len = total - p.payload_off;
    if payload_len == 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DnsEvent>(0) else {
        count_drop(EventKind::Dns);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, writable DnsEvent in the ring buffer; every field is
    // written before submit (the payload up to `copied`; the daemon reads no further).
    unsafe {
        (*ev).kind = EventKind::Dns as u32;
        (*ev).direction = direction;
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).tgid = o.tgid;
        (*ev).policy_id = o.policy_id;
        (*ev).cgroup_id = o.cgroup_id;
        (*ev).protocol = u32::from(p.protocol);
        (*ev).family = u32::from(p.family);
        (*ev).server = p.addr;
        (*ev).server_port = DNS_PORT;
        (*ev)._pad = 0;
        (*ev).payload_len = payload_len;
        (*ev)._pad2 = 0;
        let mut n = payload_len;
        if n > DNS_PAYLOAD_LEN as u32 {
            n = DNS_PAYLOAD_LEN as u32;
        }
        // The same value, in a form the verifier can bound to 1..=DNS_PAYLOAD_LEN.
        let n = ((n - 1) & (DNS_PAYLOAD_LEN as u32 - 1)) + 1;
        let ok = bpf_skb_load_bytes(ctx.as_ptr().cast(), p.payload_off, (*ev).payload.as_mut_ptr().cast(), n) == 0;
        (*ev).copied = if ok { n } else { 0 };
    }
    entry.submit(URGENT);
}
