//! Loads the eBPF object, fills in what it needs to know about the running kernel, writes the
//! compiled policy into its maps, registers agent cgroups, attaches the programs and pins them
//! (see [`pins`]): enforcement outlives the daemon until [`Loaded::detach`] or
//! `guard-agent detach` removes it.
pub(crate) mod apply;
mod deletes;
mod exfil;
mod files;
mod btf;
mod leftover;
mod offsets;
pub mod pins;
pub mod tier;
mod tracefs;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        Lsm, RawTracePoint, TracePoint,
        links::{FdLink, LinkError},
    },
};
use sha2::{Digest as _, Sha256};

pub use leftover::Leftover;
use pins::Generation;
use guard_common::{EventKind, globals, names};

use crate::{
    cgroup, paths,
    policy::{Policy, PolicyError, compile::Compiled},
};

/// The object built from `guard-ebpf` by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guard"));

pub use tier::Tier;

/// Every program of the `tracepoint` tier, in attach order (the `lsm` tier adds
/// [`tier::LSM_PROGRAMS`]). A generation is complete when each has a pinned link.
pub const PROGRAMS: [&str; 26] = [
    names::PROG_GATE,
    names::PROG_EXEC,
    names::PROG_EXIT,
    names::PROG_SOCKET_ENTER,
    names::PROG_FORK,
    names::PROG_CONNECT4,
    names::PROG_CONNECT6,
    names::PROG_SENDMSG4,
    names::PROG_SENDMSG6,
    names::PROG_SOCK_CREATE,
    names::PROG_EGRESS,
    names::PROG_INGRESS,
    names::PROG_OPENAT,
    names::PROG_OPENAT2,
    names::PROG_OPEN,
    names::PROG_FILES_ENTER,
    names::PROG_FILES_EXIT,
    names::PROG_UNLINK_ENTER,
    names::PROG_UNLINKAT_ENTER,
    names::PROG_RMDIR_ENTER,
    names::PROG_UNLINK_EXIT,
    names::PROG_UNLINKAT_EXIT,
    names::PROG_RMDIR_EXIT,
    names::PROG_ATTACH,
    names::PROG_MKDIR,
    names::PROG_RMDIR,
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Mount(#[from] paths::MountError),
    #[error(transparent)]
    Policy(PolicyError),
    #[error("cannot read the tracepoint format of {tracepoint}")]
    Tracefs { tracepoint: &'static str, #[source] source: tracefs::FormatError },
    #[error("cannot load the eBPF object (are you root, with CAP_BPF and CAP_PERFMON?)")]
    Object(#[source] aya::EbpfError),
    #[error("the eBPF object has no {kind} named {name}")]
    Missing { kind: &'static str, name: &'static str },
    #[error("eBPF map {name}")]
    Map { name: &'static str, #[source] source: aya::maps::MapError },
    #[error("the policy needs {needed} entries in map {name}, which holds {capacity} (raise --map-entries)")]
    TooLarge { name: &'static str, needed: usize, capacity: u32 },
    #[error("the policy needs {needed} entries in map {name}, which holds {capacity}")]
    TooLargeFixed { name: &'static str, needed: usize, capacity: usize },
    #[error("cannot write policy entry into map {name} (is the map too small for the policy?)")]
    MapInsert { name: &'static str, #[source] source: aya::maps::MapError },
    #[error("cannot load or attach program {name}")]
    Program { name: &'static str, #[source] source: aya::programs::ProgramError },
    #[error("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux), needed for tp_btf programs")]
    KernelBtf(#[source] aya::BtfError),
    #[error("cannot pin or open pinned object {path}")]
    Pin { path: PathBuf, #[source] source: std::io::Error },
    #[error("cannot pin or open pinned map {path}")]
    PinMap { path: PathBuf, #[source] source: aya::maps::MapError },
    #[error("cannot pin link of {name}")]
    PinLink { name: &'static str, #[source] source: Box<dyn std::error::Error + Send + Sync> },
    #[error("cannot prepare agent cgroup {path}")]
    Cgroup { path: PathBuf, #[source] source: std::io::Error },
}

/// An agent cgroup whose id is in the kernel's registration map.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: u64,
    /// Path relative to the cgroup v2 root, with a leading `/`.
    pub path: String,
    pub policy_id: u32,
}

/// The programs a generation of `tier` attaches.
pub fn programs(tier: Tier) -> Vec<&'static str> {
    let mut all = PROGRAMS.to_vec();
    if tier == Tier::Lsm {
        all.extend(tier::LSM_PROGRAMS.iter().map(|(p, _)| *p));
    }
    all
}

pub struct Loaded {
    pub generation: Generation,
    /// The tier chosen by probing at start-up, and what the probe found.
    pub tier: Tier,
    pub probe: tier::Probe,
    /// The generation was already pinned (by an earlier daemon) and was adopted as it was.
    pub adopted: bool,
    /// Older generations detached after this one was attached.
    pub replaced: usize,
    pub registrations: Vec<Registration>,
    /// Processes a previous daemon held and never decided: killed at start (fail closed).
    pub leftovers: Vec<Leftover>,
    /// Drops counted by the generations this one replaced that no daemon reported, per kind:
    /// their counters went with them.
    pub replaced_drops: Vec<(EventKind, u64)>,
    /// Where the policy in force has its ids (see `apply`); `None` before the first apply.
    base: Option<u32>,
    /// Policy ids in force and their agents' names.
    names: Option<Vec<(u32, String)>>,
    map_entries: u32,
}

impl Loaded {
    fn pinned_map(&self, name: &'static str) -> Result<Map, LoadError> {
        open_pinned(&self.generation, name)
    }

    /// The ring buffer every event arrives on.
    pub fn events(&self) -> Result<RingBuf<MapData>, LoadError> {
        RingBuf::try_from(self.pinned_map(names::EVENTS)?).map_err(|source| LoadError::Map { name: names::EVENTS, source })
    }

    /// `HELD_COUNT`, which the gate reads before looking in `HELD`: 0 once every hold has
    /// ended and its process has run or exited.
    pub fn held_count(&self) -> Result<u64, LoadError> {
        let count = Array::<_, u64>::try_from(self.pinned_map(names::HELD_COUNT)?)
            .map_err(|source| LoadError::Map { name: names::HELD_COUNT, source })?;
        count.get(&0, 0).map_err(|source| LoadError::Map { name: names::HELD_COUNT, source })
    }

    /// Events the kernel could not put in the ring buffer, per kind, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(EventKind, u64)>, LoadError> {
        drops_of(&self.generation)
    }

    /// How many of [`Loaded::drops`] daemons have reported as lost, per kind (`DROPS_REPORTED`,
    /// pinned with the generation: it survives daemon restarts, and a new generation starts
    /// it at 0 along with `DROPS`).
    pub fn drops_reported(&self) -> Result<Vec<(EventKind, u64)>, LoadError> {
        reported_of(&self.generation)
    }

    /// Records that the drops up to `counts` have been reported.
    pub fn mark_drops_reported(&self, counts: &[(EventKind, u64)]) -> Result<(), LoadError> {
        let name = names::DROPS_REPORTED;
        let mut map = Array::<_, u64>::try_from(self.pinned_map(name)?).map_err(|source| LoadError::Map { name, source })?;
        for (kind, n) in counts {
            map.set(*kind as u32, n, 0).map_err(|source| LoadError::MapInsert { name, source })?;
        }
        Ok(())
    }

    /// Detaches every program (unpins this generation) and removes the agent cgroups under
    /// `guard/` that are empty.
    pub fn detach(self, pin_dir: &Path, cgroup_root: &Path) -> Result<(), LoadError> {
        self.generation.remove().map_err(|source| LoadError::Pin { path: self.generation.dir.clone(), source })?;
        pins::remove_all(pin_dir).map_err(|source| LoadError::Pin { path: pin_dir.to_path_buf(), source })?;
        // Only guard's own namespace: `guard/`, the agent directories in it (registered, or made
        // by `launch`), and registered cgroups below them. Cgroups elsewhere (systemd slices)
        // belong to others. With nothing enforcing any more, an empty agent directory is
        // pointless; one still holding a workload is busy and stays.
        let base = cgroup_root.join(paths::AGENT_CGROUP_DIR);
        let subdirs = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        };
        // Agent directories, and session directories a launch left (its daemon died).
        let agent_dirs: Vec<PathBuf> = subdirs(&base);
        let session_dirs: Vec<PathBuf> = agent_dirs.iter().flat_map(|d| subdirs(d)).collect();
        let agent_dirs = agent_dirs.into_iter().chain(session_dirs);
        let mut ours: Vec<PathBuf> = self
            .registrations
            .iter()
            .filter(|r| r.path.starts_with(&format!("/{}/", paths::AGENT_CGROUP_DIR)))
            .map(|r| cgroup_root.join(r.path.trim_start_matches('/')))
            .chain(agent_dirs)
            .chain(std::iter::once(base.clone()))
            .collect();
        // Outermost first, as remove_created expects (it removes innermost first).
        ours.sort_by_key(|p| p.components().count());
        ours.dedup();
        cgroup::remove_created(&ours);
        Ok(())
    }
}

fn open_pinned(g: &Generation, name: &'static str) -> Result<Map, LoadError> {
    let path = g.map(name);
    let data = MapData::from_pin(&path).map_err(|source| LoadError::PinMap { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| LoadError::PinMap { path, source })
}

/// `DROPS` of `g`, per kind, summed over CPUs.
fn drops_of(g: &Generation) -> Result<Vec<(EventKind, u64)>, LoadError> {
    let name = names::DROPS;
    let drops = PerCpuArray::<_, u64>::try_from(open_pinned(g, name)?).map_err(|source| LoadError::Map { name, source })?;
    kinds()
        .map(|kind| {
            let per_cpu = drops.get(&(kind as u32), 0).map_err(|source| LoadError::Map { name, source })?;
            Ok((kind, per_cpu.iter().sum()))
        })
        .collect()
}

/// `DROPS_REPORTED` of `g`, per kind.
fn reported_of(g: &Generation) -> Result<Vec<(EventKind, u64)>, LoadError> {
    let name = names::DROPS_REPORTED;
    let map = Array::<_, u64>::try_from(open_pinned(g, name)?).map_err(|source| LoadError::Map { name, source })?;
    kinds().map(|kind| Ok((kind, map.get(&(kind as u32), 0).map_err(|source| LoadError::Map { name, source })?))).collect()
}

/// Every event kind, in discriminant order.
fn kinds() -> impl Iterator<Item = EventKind> {
    (1..EventKind::COUNT).filter_map(EventKind::from_u32)
}

/// Drops of `g` nobody reported, per kind (kinds with none left out). A generation without
/// `DROPS_REPORTED` (made by an older guard) counts as having reported none.
fn unreported_of(g: &Generation) -> Vec<(EventKind, u64)> {
    let Ok(drops) = drops_of(g) else { return Vec::new() };
    let reported = reported_of(g).unwrap_or_default();
    drops
        .into_iter()
        .map(|(kind, n)| (kind, n.saturating_sub(reported.iter().find(|(k, _)| *k == kind).map_or(0, |(_, r)| *r))))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// What the loader may be told.
#[derive(Debug, Clone)]
pub struct Options {
    pub pin_dir: PathBuf,
    /// Size of the event ring buffer (a power of two, a multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Capacity of each rule map.
    pub map_entries: u32,
    /// Report execs outside agent workloads too.
    pub observe_all_execs: bool,
}

/// Default capacity of each rule map.
pub const DEFAULT_MAP_ENTRIES: u32 = 16384;

/// The rule maps and how many entries `policy` puts in each.
fn rule_maps(policy: &Compiled) -> [(&'static str, usize); 7] {
    [
        (names::EXEC_PATHS, policy.exec_paths.len()),
        (names::EXEC_NAMES, policy.exec_names.len()),
        (names::EXEC_INODES, policy.exec_inodes.len()),
        (names::EXEC_PREFIXES, policy.exec_prefixes.len()),
        (names::EXEC_NAME_PREFIXES, policy.exec_name_prefixes.len()),
        (names::NET_V4, policy.net_v4.len()),
        (names::NET_V6, policy.net_v6.len()),
    ]
}

/// Capacity of the agent cgroup registrations, as declared in guard-ebpf's maps.rs.
const MAX_AGENT_CGROUPS: usize = 4096;

/// Refuses a policy that does not fit the maps, naming the map and the option to raise. During
/// a reload the old policy's entries are still there: the maps need room for both, and a
/// reload that does not fit fails (the old policy stays).
pub fn check_capacity(policy: &Compiled, map_entries: u32) -> Result<(), LoadError> {
    for (name, needed) in rule_maps(policy) {
        if needed > map_entries as usize {
            return Err(LoadError::TooLarge { name, needed, capacity: map_entries });
        }
    }
    let needed = policy.agents.iter().map(|a| a.cgroups.len()).sum();
    if needed > MAX_AGENT_CGROUPS {
        return Err(LoadError::TooLargeFixed { name: names::AGENT_CGROUPS, needed, capacity: MAX_AGENT_CGROUPS });
    }
    Ok(())
}

/// Names the eBPF object and the options: a daemon finding this generation pinned can adopt it
/// (the policy is swapped in place, see `apply`).
fn generation_id(opts: &Options, tier: Tier) -> String {
    let mut h = Sha256::new();
    h.update(OBJECT);
    h.update(tier.name());
    h.update(opts.ring_buffer_bytes.to_le_bytes());
    h.update(opts.map_entries.to_le_bytes());
    h.update([u8::from(opts.observe_all_execs)]);
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Starts enforcing `model`, adopting the pinned generation if it is this object's: its maps
/// (and what they know: holds, tagged processes) carry over, and the policy is swapped in.
pub fn load(cgroup_root: &Path, opts: &Options, model: &Policy) -> Result<(Loaded, Compiled), LoadError> {
    // Everything that can be checked without the kernel is checked before touching it.
    check_capacity(&crate::policy::compile::compile(model, 0).map_err(LoadError::Policy)?, opts.map_entries)?;
    let pin_dir = opts.pin_dir.as_path();
    let probe = probe_tier(opts, false)?;
    let tier = probe.tier;
    let generation = Generation::new(pin_dir, &generation_id(opts, tier));
    let pin_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadError::Pin { path, source }
    };
    let adopted = generation.is_complete(&programs(tier));
    if !adopted {
        if generation.dir.exists() {
            // An incomplete generation (a daemon died while attaching): start it over.
            generation.remove().map_err(pin_err(&generation.dir))?;
        }
        generation.create_dirs().map_err(pin_err(&generation.dir))?;
        if let Err(e) = load_fresh(cgroup_root, &generation, opts, tier) {
            let _ = generation.remove();
            let _ = std::fs::remove_dir(pin_dir);
            return Err(e);
        }
    }
    tier::set_current(tier);
    let mut loaded = Loaded {
        generation,
        tier,
        probe,
        adopted,
        replaced: 0,
        registrations: Vec::new(),
        leftovers: Vec::new(),
        replaced_drops: Vec::new(),
        base: None,
        names: None,
        map_entries: opts.map_entries,
    };
    let compiled = match loaded.apply(cgroup_root, model) {
        Ok(c) => c,
        Err(e) => {
            if !adopted {
                let _ = loaded.generation.remove();
                let _ = std::fs::remove_dir(pin_dir);
            }
            return Err(e);
        }
    };
    // Holds nobody will decide: the daemon that made them is gone. Killed (fail closed) —
    // re-evaluating would need the approvals that died with it.
    let mut generations = vec![loaded.generation.clone()];
    generations.extend(pins::generations(pin_dir).map_err(pin_err(pin_dir))?.into_iter().filter(|g| g.dir != loaded.generation.dir));
    for g in &generations {
        loaded.leftovers.extend(leftover::kill_all(g));
    }
    // Make before break: the old generations go only now that this one enforces. What they
    // dropped and nobody reported is kept for this daemon to report.
    for old in generations.iter().skip(1) {
        for (kind, n) in unreported_of(old) {
            match loaded.replaced_drops.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, sum)) => *sum += n,
                None => loaded.replaced_drops.push((kind, n)),
            }
        }
        old.remove().map_err(pin_err(&old.dir))?;
        loaded.replaced += 1;
    }
    Ok((loaded, compiled))
}

/// The probe `load` runs, with the globals the real load will use (so the probe verifies the
/// very programs that will run).
fn probe_tier(opts: &Options, force: bool) -> Result<tier::Probe, LoadError> {
    let mut globals = program_globals(&paths::tracefs()?, opts, Tier::Lsm)?;
    globals.retain(|(name, _)| *name != globals::LSM_TIER);
    Ok(tier::probe(force, &globals))
}

/// `guard-agent probe`: the probe, with default options, tried even where securityfs does not
/// list `bpf`.
pub fn probe() -> Result<tier::Probe, LoadError> {
    probe_tier(&probe_options(), true)
}

fn probe_options() -> Options {
    Options { pin_dir: PathBuf::from(paths::PIN_DIR), ring_buffer_bytes: 1 << 16, map_entries: 16, observe_all_execs: false }
}

/// `guard-agent probe --programs`: every other program verified on this kernel.
pub fn verify_programs(tier: Tier) -> Result<tier::Verified, LoadError> {
    Ok(tier::verify_all(&program_globals(&paths::tracefs()?, &probe_options(), tier)?))
}

/// The load-time constants: record offsets from tracefs, struct offsets from BTF, options.
fn program_globals(tracefs: &Path, opts: &Options, tier: Tier) -> Result<Vec<(&'static str, u32)>, LoadError> {
    let record = |tracepoint: &'static str, field: &str| {
        let (category, name) = tracepoint.split_once('/').unwrap_or(("", tracepoint));
        tracefs::field_offset(tracefs, category, name, field).map_err(|source| LoadError::Tracefs { tracepoint, source })
    };
    let mut offsets = vec![
        (globals::EXEC_FILENAME_LOC, record("sched/sched_process_exec", "filename")?),
        (globals::SOCKET_FAMILY, record("syscalls/sys_enter_socket", "family")?),
        (globals::SOCKET_TYPE, record("syscalls/sys_enter_socket", "type")?),
        (globals::SOCKET_PROTOCOL, record("syscalls/sys_enter_socket", "protocol")?),
        (globals::OBSERVE_ALL_EXECS, u32::from(opts.observe_all_execs)),
        (globals::LSM_TIER, u32::from(tier == Tier::Lsm)),
        (globals::ATTACH_ROOT, record("cgroup/cgroup_attach_task", "dst_root")?),
        (globals::ATTACH_ID, record("cgroup/cgroup_attach_task", "dst_id")?),
        (globals::ATTACH_PID, record("cgroup/cgroup_attach_task", "pid")?),
        (globals::ATTACH_PATH_LOC, record("cgroup/cgroup_attach_task", "dst_path")?),
        (globals::CGROUP_EV_ROOT, record("cgroup/cgroup_mkdir", "root")?),
        (globals::CGROUP_EV_ID, record("cgroup/cgroup_mkdir", "id")?),
        (globals::CGROUP_EV_PATH_LOC, record("cgroup/cgroup_mkdir", "path")?),
        (globals::OPENAT_DFD, record("syscalls/sys_enter_openat", "dfd")?),
        (globals::OPENAT_FILENAME, record("syscalls/sys_enter_openat", "filename")?),
        (globals::OPENAT_FLAGS, record("syscalls/sys_enter_openat", "flags")?),
        (globals::OPENAT2_DFD, record("syscalls/sys_enter_openat2", "dfd")?),
        (globals::OPENAT2_FILENAME, record("syscalls/sys_enter_openat2", "filename")?),
        (globals::OPEN_FILENAME, record("syscalls/sys_enter_open", "filename")?),
        (globals::OPEN_FLAGS, record("syscalls/sys_enter_open", "flags")?),
        (globals::UNLINK_PATHNAME, record("syscalls/sys_enter_unlink", "pathname")?),
        (globals::UNLINKAT_DFD, record("syscalls/sys_enter_unlinkat", "dfd")?),
        (globals::UNLINKAT_PATHNAME, record("syscalls/sys_enter_unlinkat", "pathname")?),
        (globals::RMDIR_PATHNAME, record("syscalls/sys_enter_rmdir", "pathname")?),
        (globals::SYS_EXIT_RET, record("syscalls/sys_exit_unlinkat", "ret")?),
    ];
    offsets.extend(files::offsets(tracefs)?);
    offsets.extend(offsets::kernel_offsets());
    Ok(offsets)
}

fn load_fresh(cgroup_root: &Path, generation: &Generation, opts: &Options, tier: Tier) -> Result<(), LoadError> {
    let tracefs = paths::tracefs()?;
    let offsets = program_globals(&tracefs, opts, tier)?;
    let mut loader = EbpfLoader::new();
    for (name, value) in &offsets {
        loader.override_global(name, value, true);
    }
    loader.map_max_entries(names::EVENTS, opts.ring_buffer_bytes);
    for name in [
        names::EXEC_PATHS,
        names::EXEC_NAMES,
        names::EXEC_INODES,
        names::EXEC_PREFIXES,
        names::EXEC_NAME_PREFIXES,
        names::NET_V4,
        names::NET_V6,
    ] {
        loader.map_max_entries(name, opts.map_entries);
    }
    let mut ebpf = loader.load(OBJECT).map_err(LoadError::Object)?;
    for (name, map) in ebpf.maps() {
        if name.starts_with('.') {
            continue;
        }
        let path = generation.map(name);
        map.pin(&path).map_err(|e| LoadError::Pin { path, source: std::io::Error::other(e) })?;
    }
    attach(&mut ebpf, cgroup_root, generation, &tracefs, tier)?;
    for (name, prog) in ebpf.programs_mut() {
        if prog.fd().is_err() {
            // Not loaded: the other tier's.
            continue;
        }
        let path = generation.prog(name);
        prog.pin(&path).map_err(|e| LoadError::Pin { path, source: std::io::Error::other(e) })?;
    }
    // Dropping `ebpf` closes our descriptors; the pinned links keep the programs attached and
    // the pinned maps keep the state.
    Ok(())
}

/// The program `name` of the object, as program type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::Missing { kind: "program", name })?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

fn attach(ebpf: &mut Ebpf, root: &Path, generation: &Generation, tracefs: &Path, tier: Tier) -> Result<(), LoadError> {
    let prog_err = |name| move |source| LoadError::Program { name, source };
    // The link leaves our hands for bpffs: the program stays attached while the pin exists.
    let pin = |name: &'static str, link: Result<FdLink, LinkError>| -> Result<(), LoadError> {
        let pin_err = |e: Box<dyn std::error::Error + Send + Sync>| LoadError::PinLink { name, source: e };
        link.map_err(|e| pin_err(Box::new(e)))?.pin(generation.link(name)).map(drop).map_err(|e| pin_err(Box::new(e)))
    };

    // The gate first: nothing may be held before it is there to catch a continued process.
    let name = names::PROG_GATE;
    let gate: &mut RawTracePoint = program(ebpf, name)?;
    gate.load().map_err(prog_err(name))?;
    let id = gate.attach("sys_enter").map_err(prog_err(name))?;
    pin(name, Ok(gate.take_link(id).map_err(prog_err(name))?.into()))?;

    for (name, category, tracepoint) in [
        (names::PROG_EXEC, "sched", "sched_process_exec"),
        (names::PROG_EXIT, "sched", "sched_process_exit"),
        (names::PROG_SOCKET_ENTER, "syscalls", "sys_enter_socket"),
        (names::PROG_OPENAT, "syscalls", "sys_enter_openat"),
        (names::PROG_OPENAT2, "syscalls", "sys_enter_openat2"),
        (names::PROG_OPEN, "syscalls", "sys_enter_open"),
        (names::PROG_UNLINK_ENTER, "syscalls", "sys_enter_unlink"),
        (names::PROG_UNLINKAT_ENTER, "syscalls", "sys_enter_unlinkat"),
        (names::PROG_RMDIR_ENTER, "syscalls", "sys_enter_rmdir"),
        (names::PROG_UNLINK_EXIT, "syscalls", "sys_exit_unlink"),
        (names::PROG_UNLINKAT_EXIT, "syscalls", "sys_exit_unlinkat"),
        (names::PROG_RMDIR_EXIT, "syscalls", "sys_exit_rmdir"),
        (names::PROG_ATTACH, "cgroup", "cgroup_attach_task"),
        (names::PROG_MKDIR, "cgroup", "cgroup_mkdir"),
        (names::PROG_RMDIR, "cgroup", "cgroup_rmdir"),
    ] {
        let prog: &mut TracePoint = program(ebpf, name)?;
        prog.load().map_err(prog_err(name))?;
        let id = prog.attach(category, tracepoint).map_err(prog_err(name))?;
        pin(name, FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?))?;
    }
    files::attach(ebpf, tracefs, generation)?;

    let btf = aya::Btf::from_sys_fs().map_err(LoadError::KernelBtf)?;
    let name = names::PROG_FORK;
    let fork: &mut BtfTracePoint = program(ebpf, name)?;
    fork.load("sched_process_fork", &btf).map_err(prog_err(name))?;
    let id = fork.attach().map_err(prog_err(name))?;
    pin(name, Ok(fork.take_link(id).map_err(prog_err(name))?.into()))?;

    if tier == Tier::Lsm {
        for (name, hook) in tier::LSM_PROGRAMS {
            let prog: &mut Lsm = program(ebpf, name)?;
            prog.load(hook, &btf).map_err(prog_err(name))?;
            let id = prog.attach().map_err(prog_err(name))?;
            pin(name, Ok(prog.take_link(id).map_err(prog_err(name))?.into()))?;
        }
    }

    // aya attaches cgroup programs with a bpf_link, which the kernel always runs beside other
    // programs at the same cgroup (multi-attach) and which takes no attach flags: `Single`
    // passes 0.
    let cgroup_fd = File::open(root).map_err(|source| LoadError::Cgroup { path: root.to_path_buf(), source })?;
    for name in [names::PROG_CONNECT4, names::PROG_CONNECT6, names::PROG_SENDMSG4, names::PROG_SENDMSG6] {
        let prog: &mut CgroupSockAddr = program(ebpf, name)?;
        prog.load().map_err(prog_err(name))?;
        let id = prog.attach(&cgroup_fd, CgroupAttachMode::Single).map_err(prog_err(name))?;
        pin(name, FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?))?;
    }
    let name = names::PROG_SOCK_CREATE;
    let prog: &mut CgroupSock = program(ebpf, name)?;
    prog.load().map_err(prog_err(name))?;
    let id = prog.attach(&cgroup_fd, CgroupAttachMode::Single).map_err(prog_err(name))?;
    pin(name, FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?))?;
    for (name, direction) in [(names::PROG_EGRESS, CgroupSkbAttachType::Egress), (names::PROG_INGRESS, CgroupSkbAttachType::Ingress)] {
        let prog: &mut CgroupSkb = program(ebpf, name)?;
        prog.load().map_err(prog_err(name))?;
        let id = prog.attach(&cgroup_fd, direction, CgroupAttachMode::Single).map_err(prog_err(name))?;
        pin(name, FdLink::try_from(prog.take_link(id).map_err(prog_err(name))?))?;
    }
    Ok(())
}
