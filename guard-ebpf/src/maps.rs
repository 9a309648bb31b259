//! Every map of the object. Sizes here are defaults; the loader may resize them.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use aya_ebpf::{btf_maps::SkStorage, macros::btf_map};
use aya_ebpf::maps::lpm_trie::Key;
use guard_common::{
    CgroupPolicy, EventKind, ExecEvent, Held, Tagged, ExecInodeKey, ExecNameKey, ExecNamePrefixKey, ExecPathKey,
    ExecPrefixKey, ExecRule, NetKeyV4, NetKeyV6, NetRule, PolicyConfig, BudgetKey, BudgetValue,
    ExfilConfig, OpenEvent, POLICY_SLOTS, SensKey, SensRule, SockOwner, Taint,
    FILE_SYSCALL_SLOTS, FileEvent, FileSyscall,
};

/// The one ring buffer every event goes through.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// Submit flags for a record the daemon must see at once: a hold to decide, a kill to carry
/// out, a DNS answer to learn, a cgroup to register, and any verdict but "allowed" (rare, and
/// what a SIEM wants promptly). Forced, because the kernel's default only wakes a consumer that
/// has read everything, and routine records may be queued before this one.
pub const URGENT: u64 = BPF_RB_FORCE_WAKEUP;

/// Submit flags for a record nobody waits on (an allowed exec, a fork, an exit, a connect the
/// kernel already decided): no wake-up, which on the producing CPU costs an interrupt and a
/// cross-CPU wake. The daemon reads these on its poll timer, or sooner: the record of `size`
/// bytes that carries the queued data across a multiple of an eighth of the buffer wakes it.
/// Only the crossing wakes: a daemon that is behind (the buffer past an eighth) is already
/// awake or about to be, and forcing a wake-up on every record then made each routine record
/// cost ~8 µs on a busy host instead of ~1.
#[inline(always)]
pub fn routine(size: usize) -> u64 {
    let eighth = EVENTS.query(BPF_RB_RING_SIZE) >> 3;
    if eighth == 0 {
        return BPF_RB_FORCE_WAKEUP;
    }
    let queued = EVENTS.query(BPF_RB_AVAIL_DATA);
    // The kernel adds an 8-byte header and rounds the record up to 8 bytes.
    let after = queued + ((size as u64 + 8 + 7) & !7);
    if after / eighth != queued / eighth {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// `URGENT`, or `routine(size)` for a record of `size` bytes.
#[inline(always)]
pub fn wake(urgent: bool, size: usize) -> u64 {
    if urgent { URGENT } else { routine(size) }
}

/// Events that did not fit in `EVENTS`, per CPU, indexed by `EventKind`.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EventKind::COUNT, 0);

/// How many of `DROPS` (summed over CPUs, per kind) a daemon has already reported as lost.
/// Only userspace writes it; no program reads it. It lives here, pinned with the generation,
/// so it starts at 0 exactly when `DROPS` does and a restarted daemon reports only the rest.
#[map]
pub static DROPS_REPORTED: Array<u64> = Array::with_max_entries(EventKind::COUNT, 0);

/// Registered agent cgroups: cgroup id -> policy and how the registration matches.
#[map]
pub static AGENT_CGROUPS: HashMap<u64, CgroupPolicy> = HashMap::with_max_entries(4096, 0);

/// Per-policy settings, indexed by `policy_slot(policy id)`.
#[map]
pub static POLICIES: Array<PolicyConfig> = Array::with_max_entries(POLICY_SLOTS, 0);

/// Exact-path exec rules.
#[map]
pub static EXEC_PATHS: HashMap<ExecPathKey, ExecRule> = HashMap::with_max_entries(16384, 0);

/// Basename exec rules.
#[map]
pub static EXEC_NAMES: HashMap<ExecNameKey, ExecRule> = HashMap::with_max_entries(16384, 0);

/// `path_prefix` rules, by filename prefix.
#[map]
pub static EXEC_PREFIXES: LpmTrie<ExecPrefixKey, ExecRule> = LpmTrie::with_max_entries(4096, 0);

/// `basename_prefix` rules.
#[map(name = "EXEC_NAME_PFX")]
pub static EXEC_NAME_PREFIXES: LpmTrie<ExecNamePrefixKey, ExecRule> = LpmTrie::with_max_entries(4096, 0);

/// Files named by `path` rules and directories named by `path_prefix` rules, by identity.
#[map]
pub static EXEC_INODES: HashMap<ExecInodeKey, ExecRule> = HashMap::with_max_entries(16384, 0);

/// Network rules, IPv4 and IPv6, keyed by (policy id, prefix).
#[map]
pub static NET_V4: LpmTrie<NetKeyV4, NetRule> = LpmTrie::with_max_entries(16384, 0);
#[map]
pub static NET_V6: LpmTrie<NetKeyV6, NetRule> = LpmTrie::with_max_entries(16384, 0);

/// Processes stopped at exec until the daemon decides, by tgid. The gate kills any of them
/// that runs a system call (continued by anyone but the daemon, which marks the entry
/// `HELD_RELEASED` first). Entries are added and removed only through `held_insert` and
/// `held_remove`, so `HELD_COUNT` is never below the number of entries.
#[map]
pub static HELD: HashMap<u32, Held> = HashMap::with_max_entries(4096, 0);

/// At least the number of `HELD` entries (never less; more only if an entry was replaced):
/// the gate, which runs on every system call on the host, looks no further while it is 0.
#[map]
pub static HELD_COUNT: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn held_add(delta: u64) {
    if let Some(p) = HELD_COUNT.get_ptr_mut(0) {
        // SAFETY: `p` points at the map's one value, which lives as long as the map. The BPF
        // target has no atomic read-modify-write in `core`; this is the instruction itself, an
        // atomic add without fetch, which every BPF CPU version has.
        unsafe { core::arch::asm!("lock *(u64 *)({p} + 0) += {d}", p = in(reg) p, d = in(reg) delta) };
    }
}

/// Whether anything may be held: one array read.
#[inline(always)]
pub fn held_any() -> bool {
    match HELD_COUNT.get_ptr(0) {
        // SAFETY: as in `held_add`; read once.
        Some(p) => (unsafe { core::ptr::read_volatile(p) }) != 0,
        None => true,
    }
}

/// Records a hold; counted first, so the gate never sees an entry it does not look for.
#[inline(always)]
pub fn held_insert(tgid: u32, held: &Held) -> bool {
    held_add(1);
    if HELD.insert(&tgid, held, 0).is_err() {
        held_add(u64::MAX);
        return false;
    }
    true
}

/// Removes a hold, uncounting only the entry this call removed.
#[inline(always)]
pub fn held_remove(tgid: u32) {
    if HELD.remove(&tgid).is_ok() {
        held_add(u64::MAX);
    }
}

/// Processes of agent workloads, by tgid: added at exec and fork, removed at exit. A process
/// moved out of its agent's cgroups keeps its policy from here.
#[map]
pub static TAGGED: HashMap<u32, Tagged> = HashMap::with_max_entries(65536, 0);

/// Per-policy exfiltration settings, indexed by policy id.
#[map]
pub static EXFIL: Array<ExfilConfig> = Array::with_max_entries(POLICY_SLOTS, 0);

/// Bytes per (workload, destination, port) in the current budget window.
#[map]
pub static BUDGETS: LruHashMap<BudgetKey, BudgetValue> = LruHashMap::with_max_entries(65536, 0);

/// `exfil.budget_exempt`: destinations counted but never limited, keyed like `NET_V4`/`NET_V6`.
#[map(name = "BUDGET_EXEMPT4")]
pub static BUDGET_EXEMPT_V4: LpmTrie<NetKeyV4, u32> = LpmTrie::with_max_entries(4096, 0);
#[map(name = "BUDGET_EXEMPT6")]
pub static BUDGET_EXEMPT_V6: LpmTrie<NetKeyV6, u32> = LpmTrie::with_max_entries(4096, 0);

/// The kernel side of `exfil.sensitive_paths`: literal starts of names and `parent/name`s.
#[map]
pub static SENSITIVE: LpmTrie<SensKey, SensRule> = LpmTrie::with_max_entries(4096, 0);

/// Processes that opened a sensitive path, or descend from one that did, by tgid.
#[map]
pub static TAINT: HashMap<u32, Taint> = HashMap::with_max_entries(65536, 0);

/// Workloads (cgroup ids) whose DNS is cut off for a tunnel shape; set by the daemon.
#[map]
pub static DNS_BLOCKED: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

/// Per-CPU room for the open event and the sensitive-path key.
#[repr(C)]
pub struct OpenScratch {
    pub event: OpenEvent,
    pub key: Key<SensKey>,
    /// The filename read from user memory, zero beyond it: twice its longest length, so a
    /// key can be copied from any offset within it with a constant size.
    pub name: [u8; 2 * guard_common::FILENAME_LEN],
    /// Where the last and the one-before-last '/' are (`NO_SLASH`: none), written to memory
    /// rather than kept in registers so the verifier need not track them per iteration.
    pub last: u64,
    pub prev: u64,
}

#[map]
pub static OPEN_SCRATCH: PerCpuArray<OpenScratch> = PerCpuArray::with_max_entries(1, 0);

/// Protected paths: what each watched syscall number is (filled by the loader).
#[map]
pub static FILE_SYSCALLS: Array<FileSyscall> = Array::with_max_entries(FILE_SYSCALL_SLOTS, 0);

/// Protected paths: the file call each thread is in, from `sys_enter` to `sys_exit`, by
/// pid_tgid. LRU: a thread that never returns (killed inside the call) cannot fill it.
#[map]
pub static FILE_PENDING: LruHashMap<u64, FileEvent> = LruHashMap::with_max_entries(8192, 0);

/// Per-CPU room to build a `FileEvent` (too large for the stack).
#[map]
pub static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the exec event and the lookup keys (too large for the 512-byte BPF stack).
#[repr(C)]
pub struct ExecScratch {
    pub event: ExecEvent,
    pub name_key: ExecNameKey,
    pub prefix_key: Key<ExecPrefixKey>,
    pub name_prefix_key: Key<ExecNamePrefixKey>,
}

#[map]
pub static CONNECT_SCRATCH: PerCpuArray<guard_common::ConnectEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);

/// Counts an event lost because the ring buffer was full.
#[inline(always)]
pub fn count_drop(kind: EventKind) {
    if let Some(n) = DROPS.get_ptr_mut(kind as u32) {
        // SAFETY: a per-CPU array slot is only touched by programs on this CPU, and BPF programs
        // are not preempted by each other on one CPU for these program types.
        unsafe { *n += 1 };
    }
}

/// Looks up policy settings; a missing slot reads as enforce mode, default allow.
#[inline(always)]
pub fn policy_config(policy_id: u32) -> PolicyConfig {
    match POLICIES.get(guard_common::policy_slot(policy_id)) {
        Some(c) => *c,
        None => PolicyConfig { flags: 0, net_default: guard_common::NET_ALLOW, exec_default_rule: 0, _pad: 0 },
    }
}

/// Exfiltration settings of a policy; a missing slot has none.
#[inline(always)]
pub fn exfil_config(policy_id: u32) -> ExfilConfig {
    match EXFIL.get(guard_common::policy_slot(policy_id)) {
        Some(c) => *c,
        None => ExfilConfig { budget_bytes: 0, window_ns: 0, flags: 0, _pad: 0 },
    }
}

// --- Socket-local storage (issue 16: hosts pay nothing for guard) ---

/// Which workload a socket belongs to (see `SockOwner`), stored on the socket itself
/// (`BPF_MAP_TYPE_SK_STORAGE`), written by the connect/sendmsg hooks. The `cgroup_skb`
/// programs run for every packet on the host: for a socket no agent workload connected, this
/// is one pointer read on the socket (`bpf_sk_storage_get` finding nothing), where a
/// cookie-keyed hash map cost the cookie and a hash lookup per packet. The entry lives and dies
/// with the socket, so no LRU can evict a live agent socket's owner either.
///
/// A BTF-defined map (`.maps` section): the kernel requires BTF for socket storage, and
/// `aya_ebpf::maps` (the legacy `maps` section) has no such type; `aya_ebpf::btf_maps` does,
/// bpf-linker emits its BTF (`--btf`, which aya-build passes), and aya 0.14 loads and pins it
/// like the others.
#[btf_map]
pub static SOCK_OWNER: SkStorage<SockOwner> = SkStorage::new();

/// The socket-storage map, as the helpers take it.
#[inline(always)]
pub fn sock_owner_map() -> *mut core::ffi::c_void {
    core::ptr::addr_of!(SOCK_OWNER).cast_mut().cast()
}
