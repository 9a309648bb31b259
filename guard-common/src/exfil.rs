//! The kernel/user ABI of the exfiltration defences: byte budgets (`cgroup_skb/egress`),
//! sensitive-read taint (`sys_enter_openat*`), DNS seen for FQDN allowlists and tunnel shapes
//! (`cgroup_skb` ingress/egress), and which socket belongs to which workload.
use core::mem::size_of;

use crate::{EventHeader, FILENAME_LEN};

/// `ExfilConfig::flags`: over budget, the sending process is killed (else only dropped).
pub const EXFIL_BUDGET_KILL: u32 = 1 << 0;
/// `ExfilConfig::flags`: after a sensitive read, only allow-listed destinations.
pub const EXFIL_TAINT_ALLOWLIST: u32 = 1 << 1;
/// `ExfilConfig::flags`: after a sensitive read, a non-loopback connect off the allow list
/// kills the process (a loopback one is refused).
pub const EXFIL_TAINT_KILL: u32 = 1 << 2;
/// `ExfilConfig::flags`: the policy has sensitive paths: opens are checked.
pub const EXFIL_WATCH_OPENS: u32 = 1 << 3;
/// `ExfilConfig::flags`: DNS is copied to the daemon (host rules or tunnel limits).
pub const EXFIL_WATCH_DNS: u32 = 1 << 4;
/// `ExfilConfig::flags`: some sensitive paths are `action: deny` (`lsm/file_open` refuses them on
/// the `lsm` tier; the open tracepoints kill on the `tracepoint` tier).
pub const EXFIL_DENY_OPENS: u32 = 1 << 5;

/// Per-policy exfiltration settings, indexed by policy id (like `PolicyConfig`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExfilConfig {
    /// Bytes per window to one (destination address, port); 0: no budget.
    pub budget_bytes: u64,
    pub window_ns: u64,
    /// `EXFIL_*` bits.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ExfilConfig>() == 24);

/// Who a socket belongs to: recorded by the connect and sendmsg hooks (where the task is
/// known), read by the `cgroup_skb` programs (where it is not). Kept in the socket's own storage
/// (`SOCK_OWNER`, socket-local storage): freed with the socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockOwner {
    pub tgid: u32,
    /// The policy at the time; the programs prefer the one now registered for
    /// `matched_cgroup_id` (a reload moves policies to new ids).
    pub policy_id: u32,
    /// The cgroup the task was in: the workload budgets and DNS blocks are kept for.
    pub cgroup_id: u64,
    pub matched_cgroup_id: u64,
}
const _: () = assert!(size_of::<SockOwner>() == 24);

/// Byte-budget map key: one workload, one destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetKey {
    pub cgroup_id: u64,
    /// Network byte order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BudgetKey>() == 32);

/// Byte-budget map value: the current window.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BudgetValue {
    /// `bpf_ktime_get_boot_ns()` when the window began.
    pub window_start: u64,
    /// Bytes let through in this window (IP packet lengths).
    pub bytes: u64,
    /// Bytes dropped in this window.
    pub dropped: u64,
    /// 1 once the window went over budget (reported once per window).
    pub over: u32,
    /// 1 if the destination is in `budget_exempt` (counted, never limited).
    pub exempt: u32,
}
const _: () = assert!(size_of::<BudgetValue>() == 32);

/// A workload went over its byte budget to one destination (`EventKind::Budget`). Made in
/// `cgroup_skb/egress`, where the current task is not the sender: the owner comes from
/// `SOCK_OWNER`. `Killed` asks the daemon to kill `tgid`; `Denied` means dropped only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BudgetEvent {
    pub kind: u32,
    pub decision: u32,
    pub boot_ns: u64,
    pub tgid: u32,
    pub policy_id: u32,
    pub cgroup_id: u64,
    /// Bytes let through in the window before the packet that went over.
    pub bytes: u64,
    /// Length of that packet.
    pub packet: u64,
    pub budget: u64,
    pub window_ns: u64,
    pub window_start: u64,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub protocol: u32,
}
const _: () = assert!(size_of::<BudgetEvent>() == 96);

/// `SensRule::flags`: a match taints the process in the kernel at once (confirmed or cleared
/// by the daemon), so a read followed at once by a connect is caught.
pub const SENS_TAINT_NOW: u32 = 1 << 0;
/// `SensRule::flags`: an `action: deny` path: the key alone decides the glob exactly, so the
/// kernel refuses the open (`lsm` tier: `EPERM`; `tracepoint` tier: SIGKILL at the call).
pub const SENS_DENY: u32 = 1 << 1;

/// Bytes of path text in a [`SensKey`] (after the kind byte).
pub const SENS_TEXT_LEN: usize = 123;
/// `SensKey::text[0]`: the rest is the opened file's name (its last component).
pub const SENS_KIND_NAME: u8 = b'N';
/// `SensKey::text[0]`: the rest is `parent/name` (the last two components).
pub const SENS_KIND_TAIL: u8 = b'T';

/// Sensitive-path trie key: the policy id (big-endian, leading 32 bits), a kind byte and the
/// literal start of a name or `parent/name`, compiled from the `sensitive_paths` globs.
/// Prefix length = 32 + 8 + 8 * (literal bytes); an exact name ends in a NUL byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SensKey {
    pub policy_id_be: [u8; 4],
    pub kind: u8,
    pub text: [u8; SENS_TEXT_LEN],
}
const _: () = assert!(size_of::<SensKey>() == 128);

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SensRule {
    /// `SENS_*` bits.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SensRule>() == 8);

/// `Taint::flags`: the daemon confirmed the read against the globs.
pub const TAINT_CONFIRMED: u32 = 1 << 0;
/// `Taint::flags`: inherited from a parent at fork.
pub const TAINT_INHERITED: u32 = 1 << 1;

/// Value of `TAINT` (by tgid): the process, or an ancestor, opened a sensitive path.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Taint {
    pub boot_ns: u64,
    /// The process that made the read.
    pub reader: u32,
    /// `TAINT_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<Taint>() == 16);

/// An agent workload opened a path the kernel filter matched (`EventKind::Open`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// `openat`'s dirfd (`AT_FDCWD` = -100 for `open`).
    pub dirfd: i32,
    /// `O_*` flags.
    pub open_flags: u32,
    /// `SensRule::flags` of the matched entry (`SENS_TAINT_NOW`: the kernel tainted it;
    /// `SENS_DENY`: refused, and `header.decision` says how).
    pub sens_flags: u32,
    pub filename_len: u32,
    pub filename: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<OpenEvent>() == size_of::<EventHeader>() + 16 + FILENAME_LEN);

/// `DnsEvent::direction`.
pub const DNS_QUERY: u32 = 1;
pub const DNS_ANSWER: u32 = 2;
/// DNS payload bytes copied into a [`DnsEvent`].
pub const DNS_PAYLOAD_LEN: usize = 1024;

/// A DNS message to or from an agent workload's socket (`EventKind::Dns`), UDP or TCP port 53,
/// copied by `cgroup_skb` for the daemon (FQDN allowlists, tunnel shapes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    pub kind: u32,
    /// `DNS_QUERY` or `DNS_ANSWER`.
    pub direction: u32,
    pub boot_ns: u64,
    pub tgid: u32,
    pub policy_id: u32,
    pub cgroup_id: u64,
    /// 17 (UDP) or 6 (TCP: the payload starts with the 2-byte length).
    pub protocol: u32,
    /// `AF_INET` or `AF_INET6` of `server`.
    pub family: u32,
    /// The DNS server: the destination of a query, the source of an answer.
    pub server: [u8; 16],
    pub server_port: u16,
    pub _pad: u16,
    /// Payload bytes in the packet.
    pub payload_len: u32,
    /// Bytes copied into `payload` (at most `DNS_PAYLOAD_LEN`).
    pub copied: u32,
    pub _pad2: u32,
    pub payload: [u8; DNS_PAYLOAD_LEN],
}
const _: () = assert!(size_of::<DnsEvent>() == 72 + DNS_PAYLOAD_LEN);

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: as in lib.rs: `#[repr(C)]`, `Copy`, integers and arrays only, padding written
    // out as fields (sizes asserted above).
    unsafe impl aya::Pod for ExfilConfig {}
    unsafe impl aya::Pod for SockOwner {}
    unsafe impl aya::Pod for BudgetKey {}
    unsafe impl aya::Pod for BudgetValue {}
    unsafe impl aya::Pod for BudgetEvent {}
    unsafe impl aya::Pod for SensKey {}
    unsafe impl aya::Pod for SensRule {}
    unsafe impl aya::Pod for Taint {}
    unsafe impl aya::Pod for OpenEvent {}
    unsafe impl aya::Pod for DnsEvent {}
}
