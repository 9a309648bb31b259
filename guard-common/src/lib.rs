//! The kernel/user ABI of guard: every type that crosses the boundary between the eBPF programs
//! (`guard-ebpf`) and the daemon (`guard-agent`) is defined here and only here.
//!
//! Rules for this file: `#[repr(C)]`, `Copy`, explicit padding fields, sizes asserted at compile
//! time, flags as `u32` (never `bool`), and enum discriminants that are never reused.
#![no_std]

use core::mem::size_of;

mod deletes;
mod exfil;
pub use deletes::*;
pub use exfil::*;
mod files;
pub use files::*;

/// Longest exec filename (as passed to `execve`) carried in an event and used as a map key.
pub const FILENAME_LEN: usize = 256;
/// Longest basename used as a map key (longer basenames never match a basename rule).
pub const BASENAME_LEN: usize = 64;
/// Longest cgroup directory name (kernfs node name) carried in an event.
pub const CGROUP_NAME_LEN: usize = 64;
/// How many cgroup levels (from the root) the programs walk to find an agent ancestor.
pub const MAX_CGROUP_DEPTH: u32 = 32;
/// Port ranges held by one network trie entry (its own plus those inherited from shorter
/// prefixes, flattened by the policy compiler so one lookup decides).
pub const MAX_PORT_RANGES: usize = 16;
/// `rule_id` of a decision that no rule made (a policy default, or an allowed exec).
pub const NO_RULE: u32 = 0;

/// Kind of a ring-buffer record. Values are stable: never reuse one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    /// A connect or a sendmsg (see `ConnectEvent::op`).
    Connect = 2,
    /// A socket creation refused (raw and packet sockets).
    Socket = 3,
    /// A new process (not thread) in an agent workload (`ProcEvent::child`).
    Fork = 4,
    /// A process of an agent workload ended (its thread group leader exited).
    Exit = 5,
    /// A tagged process was moved to another cgroup (`MoveEvent`).
    Move = 6,
    /// A cgroup was created or removed (`CgroupEvent`).
    Cgroup = 7,
    /// A held process ran a system call and was killed by the gate (`ProcEvent`, child = 0).
    Gate = 8,
    /// An agent workload opened a path the sensitive-path filter matched (`OpenEvent`).
    Open = 9,
    /// A workload went over its byte budget to one destination (`BudgetEvent`).
    Budget = 10,
    /// A DNS query or answer of an agent workload (`DnsEvent`).
    Dns = 11,
    /// A watched file call (unlink, rename, truncate, a write open, ...) of an agent workload
    /// with `files.protect` rules failed with EACCES or EPERM (`FileEvent`).
    FileDenied = 12,
    /// A workload went past its deletion budget (`DeletionsEvent`).
    Deletions = 13,
}

impl EventKind {
    /// One past the largest discriminant: the size of the per-kind drop counter array.
    pub const COUNT: u32 = 14;

    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Exec),
            2 => Some(Self::Connect),
            3 => Some(Self::Socket),
            4 => Some(Self::Fork),
            5 => Some(Self::Exit),
            6 => Some(Self::Move),
            7 => Some(Self::Cgroup),
            8 => Some(Self::Gate),
            9 => Some(Self::Open),
            10 => Some(Self::Budget),
            11 => Some(Self::Dns),
            12 => Some(Self::FileDenied),
            13 => Some(Self::Deletions),
            _ => None,
        }
    }
}

/// What the kernel did. Values are stable: never reuse one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed = 1,
    /// A connect refused with `EPERM`.
    Denied = 2,
    /// An exec killed with SIGKILL before its first user-space instruction.
    Killed = 3,
    /// Audit mode: the connect would have been refused.
    WouldDeny = 4,
    /// Audit mode: the exec would have been killed.
    WouldKill = 5,
    /// The exec was stopped (SIGSTOP) before its first instruction; the daemon decides.
    Held = 6,
    /// A rule with `action: audit` matched: reported, not stopped.
    Audited = 7,
    /// Audit mode, an exec the daemon must judge from its argv: not stopped, the daemon says
    /// what would have happened.
    Evaluate = 8,
    /// Audit mode: the exec would have been held for approval (set by the daemon, never by the
    /// kernel).
    WouldHold = 9,
}

impl Decision {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Allowed),
            2 => Some(Self::Denied),
            3 => Some(Self::Killed),
            4 => Some(Self::WouldDeny),
            5 => Some(Self::WouldKill),
            6 => Some(Self::Held),
            7 => Some(Self::Audited),
            8 => Some(Self::Evaluate),
            9 => Some(Self::WouldHold),
            _ => None,
        }
    }
}

/// `EventHeader::flags`: `bpf_send_signal` failed, the denied process was not killed.
pub const EVENT_FLAG_SIGNAL_FAILED: u32 = 1 << 0;
/// `EventHeader::flags`: the filename did not fit in `FILENAME_LEN` bytes.
pub const EVENT_FLAG_FILENAME_TRUNCATED: u32 = 1 << 1;
/// `EventHeader::flags`: argv was longer than `ARGV_LEN` bytes; the event holds its start.
pub const EVENT_FLAG_ARGV_TRUNCATED: u32 = 1 << 2;
/// `EventHeader::flags`: the cwd has more than `CWD_PARTS` components, or a longer one.
pub const EVENT_FLAG_CWD_TRUNCATED: u32 = 1 << 3;
/// `EventHeader::flags`: the cwd walk ended at the root of a mounted filesystem, not at the
/// task's root: the components are relative to that mount.
pub const EVENT_FLAG_CWD_IN_MOUNT: u32 = 1 << 4;
/// `EventHeader::flags`: the task is no longer in its agent's cgroups (it was moved out); its
/// policy came from `TAGGED`.
pub const EVENT_FLAG_MOVED_OUT: u32 = 1 << 5;
/// `EventHeader::flags`: a hold could not be recorded (the held-tasks map is full), so the exec
/// was killed instead (fail closed).
pub const EVENT_FLAG_HOLD_FULL: u32 = 1 << 6;
/// `EventHeader::flags`: a connect refused (or killed) because the process read a sensitive
/// path (`TAINT`) and the destination is not on the allow list.
pub const EVENT_FLAG_TAINTED: u32 = 1 << 7;
/// `EventHeader::flags`: DNS refused: the workload's DNS was cut off for a tunnel shape.
pub const EVENT_FLAG_DNS_BLOCKED: u32 = 1 << 8;
/// `EventHeader::flags` of a connect: the process is tainted and the connect was allowed
/// by an explicit allow rule.
pub const EVENT_FLAG_TAINT_ALLOWED: u32 = 1 << 9;
/// Decided by a BPF LSM hook (`bprm_check_security`, `socket_create`, `file_open`): the call
/// failed with an error and the caller lives. An exec denied there never ran: the event's
/// comm, cwd and credentials are the caller's, and its argv was not read.
pub const EVENT_FLAG_LSM: u32 = 1 << 10;

/// argv bytes carried in an exec event (NUL-separated, as in `/proc/PID/cmdline`).
pub const ARGV_LEN: usize = 4096;
/// cwd components carried in an exec event, innermost first, each NUL-padded.
pub const CWD_PARTS: usize = 8;
pub const CWD_PART_LEN: usize = 32;
/// `ExecEvent::cwd_depth` when the cwd could not be read.
pub const CWD_UNKNOWN: u32 = u32::MAX;
/// `ExecEvent::loginuid` when the task has none (never logged in: the kernel's `(uid_t)-1`).
pub const NO_LOGINUID: u32 = u32::MAX;

/// Fields every ring-buffer record starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// A [`Decision`] value.
    pub decision: u32,
    /// `bpf_ktime_get_boot_ns()` when the event was made.
    pub boot_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The agent policy that matched (index into the daemon's compiled policy, from 1).
    pub policy_id: u32,
    /// The task's own cgroup v2 id.
    pub cgroup_id: u64,
    /// The ancestor (or self) cgroup whose registration matched.
    pub matched_cgroup_id: u64,
    /// The parent of the task's own cgroup (0 for the root).
    pub parent_cgroup_id: u64,
    /// The rule that decided, or [`NO_RULE`].
    pub rule_id: u32,
    /// `EVENT_FLAG_*` bits.
    pub flags: u32,
    /// Levels from the matched cgroup down to the task's own (0: the same cgroup; `u32::MAX`:
    /// unknown, deeper than `MAX_CGROUP_DEPTH`).
    pub depth_below_match: u32,
    pub _pad: u32,
    /// The kernfs name of the task's own cgroup, NUL-padded.
    pub cgroup_name: [u8; CGROUP_NAME_LEN],
}
const _: () = assert!(size_of::<EventHeader>() == 80 + CGROUP_NAME_LEN);

/// The map key for exact-path exec rules: `policy_id` then the NUL-padded path. The exec
/// program builds it in place inside [`ExecEvent`], so the event is the key plus a header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecPathKey {
    pub policy_id: u32,
    pub path: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<ExecPathKey>() == 4 + FILENAME_LEN);

/// The map key for basename exec rules: `policy_id` then the NUL-padded basename.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecNameKey {
    pub policy_id: u32,
    pub name: [u8; BASENAME_LEN],
}
const _: () = assert!(size_of::<ExecNameKey>() == 4 + BASENAME_LEN);

/// Data of the exec path-prefix trie key: the policy id (big-endian, leading 32 bits of the
/// prefix) then the filename. Prefix length = 32 + 8 * (bytes of the rule's prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecPrefixKey {
    pub policy_id_be: [u8; 4],
    pub path: [u8; PREFIX_PATH_LEN],
}
/// Filename bytes in an [`ExecPrefixKey`]: an LPM trie key holds at most 256 bytes of data.
pub const PREFIX_PATH_LEN: usize = 252;
const _: () = assert!(size_of::<ExecPrefixKey>() == 256);

/// Data of the basename-prefix trie key, laid out like [`ExecPrefixKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecNamePrefixKey {
    pub policy_id_be: [u8; 4],
    pub name: [u8; BASENAME_LEN],
}
const _: () = assert!(size_of::<ExecNamePrefixKey>() == 4 + BASENAME_LEN);

/// The identity of a file or directory: the policy id, the kernel's `s_dev` of its filesystem
/// (`MAJOR << 20 | MINOR`) and its inode number. Keys of the exec identity map: a file named by
/// a `path` rule, or a directory named by a `path_prefix` rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecInodeKey {
    pub policy_id: u32,
    pub dev: u32,
    pub ino: u64,
}
const _: () = assert!(size_of::<ExecInodeKey>() == 16);

/// Directory levels above an executed file compared against `path_prefix` directories.
pub const MAX_DIR_DEPTH: u32 = 16;

/// What an exec rule map entry says.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRule {
    pub rule_id: u32,
    /// An `EXEC_ACTION_*` value.
    pub action: u32,
}

/// `ExecRule::action`: kill the new image (0 reads as this too).
pub const EXEC_ACTION_KILL: u32 = 1;
/// `ExecRule::action`: stop the new image and let the daemon decide (argv conditions, approval).
pub const EXEC_ACTION_HOLD: u32 = 2;
/// `ExecRule::action`: an `exec.allow` entry; a deny or hold found elsewhere still wins.
pub const EXEC_ACTION_ALLOW: u32 = 3;
/// `ExecRule::action`: report, do not stop.
pub const EXEC_ACTION_AUDIT: u32 = 4;
const _: () = assert!(size_of::<ExecRule>() == 8);

/// An exec of a process in an agent workload (`EventKind::Exec`).
///
/// The record on the ring buffer ends after `argv_len` bytes of `argv`: it is
/// `size_of::<ExecEvent>() - ARGV_LEN + argv_len` bytes long.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Length of the filename in `key.path`, without the NUL.
    pub filename_len: u32,
    /// `key.policy_id` is the header's `policy_id`; `key.path` the filename passed to `execve`.
    pub key: ExecPathKey,
    pub euid: u32,
    /// The audit login uid, or `NO_LOGINUID`.
    pub loginuid: u32,
    /// The new image's `comm`.
    pub comm: [u8; 16],
    /// The executed file's `s_dev` (kernel encoding) and inode; 0 if unknown.
    pub exe_dev: u32,
    /// Components of the cwd in `cwd`.
    pub cwd_depth: u32,
    pub exe_ino: u64,
    /// The cwd, innermost component first.
    pub cwd: [[u8; CWD_PART_LEN]; CWD_PARTS],
    pub argv_len: u32,
    pub _pad: u32,
    pub argv: [u8; ARGV_LEN],
}
const _: () = assert!(core::mem::offset_of!(ExecEvent, exe_ino) % 8 == 0);
const _: () = assert!(size_of::<ExecEvent>() == size_of::<EventHeader>() + 8 + FILENAME_LEN + 40 + CWD_PARTS * CWD_PART_LEN + 8 + ARGV_LEN);

/// A connect (or, later, sendmsg) of a process in an agent workload (`EventKind::Connect`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// `AF_INET` or `AF_INET6`: the family the address is judged in (a v4-mapped v6 address is
    /// reported as `AF_INET`).
    pub family: u32,
    /// `IPPROTO_TCP`, `IPPROTO_UDP`, ... as the socket says.
    pub protocol: u32,
    /// Destination port, host byte order.
    pub port: u16,
    /// `NET_OP_CONNECT` or `NET_OP_SENDMSG`.
    pub op: u16,
    pub _pad: [u8; 4],
    /// Destination address, network byte order; an IPv4 address uses the first 4 bytes.
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<ConnectEvent>() == size_of::<EventHeader>() + 32);

/// `ConnectEvent::op`: a `connect()` (TCP, or UDP `connect`).
pub const NET_OP_CONNECT: u16 = 1;
/// `ConnectEvent::op`: a `sendmsg()`/`sendto()` with an address (unconnected UDP, e.g. DNS).
/// Only refusals are reported: allowed datagrams are too many to report one by one.
pub const NET_OP_SENDMSG: u16 = 2;

/// A socket creation refused in an agent workload (`EventKind::Socket`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEvent {
    pub header: EventHeader,
    pub family: u32,
    /// `SOCK_RAW`, `SOCK_DGRAM`, ...
    pub sock_type: u32,
    pub protocol: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SocketEvent>() == size_of::<EventHeader>() + 16);

/// A tagged process moved to another cgroup (`EventKind::Move`), seen in
/// `cgroup/cgroup_attach_task`. The header describes the writer; the moved process stays under
/// the policy in `policy_id` (kept in `TAGGED`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MoveEvent {
    pub header: EventHeader,
    /// The moved process.
    pub pid: u32,
    /// The policy it keeps.
    pub policy_id: u32,
    /// The cgroup it was moved to.
    pub dst_cgroup_id: u64,
    pub dst_path: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<MoveEvent>() == size_of::<EventHeader>() + 16 + FILENAME_LEN);

/// `CgroupEvent::op`.
pub const CGROUP_OP_MKDIR: u32 = 1;
pub const CGROUP_OP_RMDIR: u32 = 2;

/// A cgroup v2 directory created or removed (`EventKind::Cgroup`): agents matched by glob or
/// systemd unit pick up new cgroups from these.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupEvent {
    pub kind: u32,
    /// `CGROUP_OP_*`.
    pub op: u32,
    pub id: u64,
    /// Path from the cgroup v2 root, starting with `/`, NUL-terminated.
    pub path: [u8; FILENAME_LEN],
}
const _: () = assert!(size_of::<CgroupEvent>() == 16 + FILENAME_LEN);

/// Value of `HELD` (keyed by tgid): a process stopped at exec until the daemon decides.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Held {
    /// `bpf_ktime_get_boot_ns()` at the exec, or `HELD_RELEASED` once the daemon has decided.
    pub boot_ns: u64,
    pub policy_id: u32,
    pub rule_id: u32,
}
const _: () = assert!(size_of::<Held>() == 16);
/// `Held::boot_ns` of a hold the daemon ended (released, or killed): the process may run, and
/// its entry goes at its next system call or its exit, where the programs keep `HELD_COUNT`.
pub const HELD_RELEASED: u64 = 0;

/// Value of `TAGGED` (keyed by tgid): a process that belongs to an agent workload, and stays
/// under its policy even if it is moved out of the agent's cgroups.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Tagged {
    pub policy_id: u32,
    pub _pad: u32,
    /// The registered cgroup that matched it.
    pub matched_cgroup_id: u64,
}
const _: () = assert!(size_of::<Tagged>() == 16);

/// A fork or an exit of a process in an agent workload (`EventKind::Fork`, `EventKind::Exit`):
/// lineage for the daemon's process table. The header describes the parent (fork) or the
/// exiting process (exit).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcEvent {
    pub header: EventHeader,
    /// Fork: the new process's pid. Exit: 0.
    pub child: u32,
    /// Exit: the kernel's `task->exit_code` (status << 8, or the killing signal). Fork: 0.
    pub exit_code: u32,
}
const _: () = assert!(size_of::<ProcEvent>() == size_of::<EventHeader>() + 8);

/// `CgroupPolicy::flags`: the registered cgroup itself is an agent workload.
pub const CGROUP_MATCH_SELF: u32 = 1 << 0;
/// `CgroupPolicy::flags`: every cgroup below the registered one is an agent workload.
pub const CGROUP_MATCH_DESCENDANTS: u32 = 1 << 1;

/// Value of the cgroup-id -> policy map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupPolicy {
    pub policy_id: u32,
    /// `CGROUP_MATCH_*` bits.
    pub flags: u32,
}
const _: () = assert!(size_of::<CgroupPolicy>() == 8);

/// `PolicyConfig::flags`: audit mode, decisions are reported as `would-*` and not enforced.
pub const POLICY_FLAG_AUDIT: u32 = 1 << 0;
/// `PolicyConfig::flags`: raw (`SOCK_RAW`) and packet (`AF_PACKET`) sockets are allowed.
pub const POLICY_FLAG_ALLOW_RAW_SOCKETS: u32 = 1 << 1;
/// `PolicyConfig::flags`: the agent has `exec.allow`: an exec no allow rule matches is killed.
pub const POLICY_FLAG_EXEC_ALLOWLIST: u32 = 1 << 2;
/// `PolicyConfig::flags`: the agent has `files.protect` rules (enforce mode): its failed file
/// calls are reported (`FileEvent`).
pub const POLICY_FLAG_FILES_PROTECT: u32 = 1 << 3;

/// `PolicyConfig::net_default` and `PortRange::action`.
pub const NET_ALLOW: u32 = 1;
pub const NET_DENY: u32 = 2;

/// Per-policy settings, indexed by policy id.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PolicyConfig {
    /// `POLICY_FLAG_*` bits.
    pub flags: u32,
    /// `NET_ALLOW` or `NET_DENY` when no network rule matches; 0 means the slot is unused.
    pub net_default: u32,
    /// With `POLICY_FLAG_EXEC_ALLOWLIST`: the rule id an exec off the allow list is killed by.
    pub exec_default_rule: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<PolicyConfig>() == 16);

/// Slots of the per-policy settings arrays (`POLICIES`, `EXFIL`), indexed by
/// [`policy_slot`]. Each policy generation (every load or reload) has its own range of
/// [`POLICY_GENERATION_IDS`] ids, `generation * POLICY_GENERATION_IDS + 1 ..`, so an id in a
/// record names the exact generation that decided, never a later one that reused it. Slots
/// alternate between the two halves from one generation to the next, so the new policy is
/// written beside the old one and swapped in per cgroup.
pub const POLICY_SLOTS: u32 = 1024;
/// Policy ids per generation (the first, `generation * POLICY_GENERATION_IDS`, is unused).
pub const POLICY_GENERATION_IDS: u32 = POLICY_SLOTS / 2;
const _: () = assert!(POLICY_SLOTS.is_power_of_two());

/// The settings-array slot of a policy id.
#[inline(always)]
pub const fn policy_slot(policy_id: u32) -> u32 {
    policy_id & (POLICY_SLOTS - 1)
}

/// The generation a policy id belongs to.
#[inline(always)]
pub const fn policy_generation(policy_id: u32) -> u32 {
    policy_id / POLICY_GENERATION_IDS
}

/// One port range of a network rule, inclusive on both ends, host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    /// `NET_ALLOW` or `NET_DENY`.
    pub action: u32,
    pub rule_id: u32,
}
const _: () = assert!(size_of::<PortRange>() == 12);

/// The value of a network trie entry: the ranges to try in order, first match decides.
///
/// The compiler puts this prefix's own deny ranges first, then its allow ranges, then those of
/// each shorter enclosing prefix of the same policy: one longest-prefix lookup then gives the
/// complete answer ("longest prefix whose ports match wins; deny wins at equal length").
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetRule {
    pub count: u32,
    pub _pad: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}
const _: () = assert!(size_of::<NetRule>() == 8 + 12 * MAX_PORT_RANGES);

/// Trie key data for IPv4: the policy id (big-endian, so it forms the leading 32 bits of the
/// prefix) and the address in network byte order. Prefix length = 32 + CIDR length.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetKeyV4 {
    pub policy_id_be: [u8; 4],
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<NetKeyV4>() == 8);

/// Trie key data for IPv6, laid out like [`NetKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetKeyV6 {
    pub policy_id_be: [u8; 4],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<NetKeyV6>() == 20);

pub mod globals;
pub mod names;

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: every type below is `#[repr(C)]`, `Copy`, made only of integers and arrays of
    // integers, with padding written out as fields (sizes asserted above), so any bit pattern is
    // a valid value and there are no uninitialised bytes.
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for ExecPathKey {}
    unsafe impl aya::Pod for ExecNameKey {}
    unsafe impl aya::Pod for ExecRule {}
    unsafe impl aya::Pod for ExecPrefixKey {}
    unsafe impl aya::Pod for ExecNamePrefixKey {}
    unsafe impl aya::Pod for ExecInodeKey {}
    unsafe impl aya::Pod for ExecEvent {}
    unsafe impl aya::Pod for ConnectEvent {}
    unsafe impl aya::Pod for SocketEvent {}
    unsafe impl aya::Pod for ProcEvent {}
    unsafe impl aya::Pod for MoveEvent {}
    unsafe impl aya::Pod for CgroupEvent {}
    unsafe impl aya::Pod for Held {}
    unsafe impl aya::Pod for Tagged {}
    unsafe impl aya::Pod for CgroupPolicy {}
    unsafe impl aya::Pod for PolicyConfig {}
    unsafe impl aya::Pod for PortRange {}
    unsafe impl aya::Pod for NetRule {}
    unsafe impl aya::Pod for NetKeyV4 {}
    unsafe impl aya::Pod for NetKeyV6 {}
}
