//! Writing a compiled policy into the pinned maps of a running generation, and swapping it in
//! without a moment of no policy or half a policy.
//!
//! Every load or reload is a new policy generation with its own range of policy ids
//! (`generation * POLICY_GENERATION_IDS + 1 ..`), so the id a kernel record carries names the
//! generation that decided it, even after later reloads (the daemon maps it back to that
//! generation's hash and rules). The per-policy settings arrays are indexed by the id's slot,
//! and slots alternate between two halves (`1..512` and `513..1024`) from one generation to the
//! next. A new policy is written beside the old one — rules first, then per-policy settings —
//! while the old one keeps deciding; then each registered cgroup is pointed at its new policy
//! id (one atomic map update per cgroup: any exec sees the whole old or the whole new policy);
//! only then are the old generation's entries removed. A failure before the swap removes what
//! was written and leaves the old policy in force.
use std::{
    collections::HashSet,
    ops::RangeInclusive,
    path::Path,
};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use guard_common::{
    CGROUP_MATCH_DESCENDANTS, CGROUP_MATCH_SELF, CgroupPolicy, ExecInodeKey, ExecNameKey,
    ExecNamePrefixKey, ExecPathKey, ExecPrefixKey, ExecRule, HELD_RELEASED, Held, NetKeyV4, NetKeyV6, NetRule,
    POLICY_GENERATION_IDS, PolicyConfig, Tagged, names, ExfilConfig, SensKey, SensRule, policy_generation,
    policy_slot,
};

use super::{LoadError, Loaded, Registration, pins::Generation};
use crate::{
    cgroup,
    policy::{
        Policy,
        compile::{Compiled, compile},
    },
};

const IDS: u32 = POLICY_GENERATION_IDS;

/// Most cgroup directories visited when looking for glob matches.
const SCAN_LIMIT: usize = 100_000;

fn open(generation: &Generation, name: &'static str) -> Result<Map, LoadError> {
    let path = generation.map(name);
    let data = MapData::from_pin(&path).map_err(|source| LoadError::PinMap { path: path.clone(), source })?;
    Map::from_map_data(data).map_err(|source| LoadError::PinMap { path, source })
}

pub(super) fn hash<K: aya::Pod, V: aya::Pod>(g: &Generation, name: &'static str) -> Result<HashMap<MapData, K, V>, LoadError> {
    HashMap::try_from(open(g, name)?).map_err(|source| LoadError::Map { name, source })
}

pub(super) fn trie<K: aya::Pod, V: aya::Pod>(g: &Generation, name: &'static str) -> Result<LpmTrie<MapData, K, V>, LoadError> {
    LpmTrie::try_from(open(g, name)?).map_err(|source| LoadError::Map { name, source })
}

fn policies(g: &Generation) -> Result<Array<MapData, PolicyConfig>, LoadError> {
    Array::try_from(open(g, names::POLICIES)?).map_err(|source| LoadError::Map { name: names::POLICIES, source })
}

fn exfil_configs(g: &Generation) -> Result<Array<MapData, ExfilConfig>, LoadError> {
    Array::try_from(open(g, names::EXFIL)?).map_err(|source| LoadError::Map { name: names::EXFIL, source })
}

/// The policy ids of the generation whose ids start after `base`.
fn ids_of(base: u32) -> RangeInclusive<u32> {
    base + 1..=base + (IDS - 1)
}

/// The base of the generation after the one at `base`. After about eight million reloads the
/// ids wrap around to the start, still alternating the halves of the settings slots.
fn next_base(base: u32) -> u32 {
    match base.checked_add(IDS) {
        Some(next) if next.checked_add(IDS - 1).is_some() => next,
        _ if policy_generation(base).is_multiple_of(2) => IDS,
        _ => 0,
    }
}

fn insert_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::MapInsert { name, source }
}

impl Loaded {
    /// Where the next generation's ids start: after the one in force, or, at a daemon's first
    /// apply, after the newest one the pinned maps hold (an adopted generation's).
    fn next_base(&self) -> Result<u32, LoadError> {
        if let Some(base) = self.base {
            return Ok(next_base(base));
        }
        let cgroups: HashMap<_, u64, CgroupPolicy> = hash(&self.generation, names::AGENT_CGROUPS)?;
        let newest = cgroups.iter().flatten().map(|(_, p)| policy_generation(p.policy_id)).max();
        Ok(newest.map_or(0, |g| next_base(g * IDS)))
    }

    /// Compiles `model` as the next generation and swaps it in. On error the previous policy
    /// stays in force, whole.
    pub fn apply(&mut self, root: &Path, model: &Policy) -> Result<Compiled, LoadError> {
        let base = self.next_base()?;
        let compiled = compile(model, base).map_err(LoadError::Policy)?;
        super::check_capacity(&compiled, self.map_entries)?;
        let registrations = match self.write(root, &compiled) {
            Ok(r) => r,
            Err(e) => {
                // Nothing points at the new generation yet: removing it restores the state before.
                let ours = ids_of(base);
                if let Err(cleanup) = self.remove_where(|id| ours.contains(&id), policy_slot(base), &[]) {
                    tracing::error!(error = %cleanup, "removing a half-written policy");
                }
                return Err(e);
            }
        };
        // Moved-out processes keep their agent's policy under its new id.
        let renames: Vec<(u32, u32)> = match &self.names {
            Some(names) => names
                .iter()
                .filter_map(|(id, name)| compiled.agent_named(name).map(|a| (*id, a.policy_id)))
                .collect(),
            None => Vec::new(),
        };
        // Everything not of the new generation goes: the previous one, and at a first apply
        // whatever an earlier daemon left. Its settings slots are the other half's.
        let ours = ids_of(base);
        self.remove_where(|id| !ours.contains(&id), policy_slot(base) ^ IDS, &renames)?;
        self.base = Some(base);
        self.names = Some(compiled.agents.iter().map(|a| (a.policy_id, a.name.clone())).collect());
        self.registrations = registrations;
        self.tag_existing(&compiled)?;
        Ok(compiled)
    }

    /// Rules, settings, then registrations.
    fn write(&self, root: &Path, c: &Compiled) -> Result<Vec<Registration>, LoadError> {
        let g = &self.generation;
        fill(&mut hash::<ExecPathKey, ExecRule>(g, names::EXEC_PATHS)?, &c.exec_paths, names::EXEC_PATHS)?;
        fill(&mut hash::<ExecNameKey, ExecRule>(g, names::EXEC_NAMES)?, &c.exec_names, names::EXEC_NAMES)?;
        fill(&mut hash::<ExecInodeKey, ExecRule>(g, names::EXEC_INODES)?, &c.exec_inodes, names::EXEC_INODES)?;
        fill_trie(&mut trie(g, names::EXEC_PREFIXES)?, &c.exec_prefixes, names::EXEC_PREFIXES)?;
        fill_trie(&mut trie(g, names::EXEC_NAME_PREFIXES)?, &c.exec_name_prefixes, names::EXEC_NAME_PREFIXES)?;
        fill_trie(&mut trie(g, names::NET_V4)?, &c.net_v4, names::NET_V4)?;
        fill_trie(&mut trie(g, names::NET_V6)?, &c.net_v6, names::NET_V6)?;
        fill_trie(&mut trie(g, names::SENSITIVE)?, &c.sensitive, names::SENSITIVE)?;
        fill_trie(&mut trie(g, names::BUDGET_EXEMPT_V4)?, &c.exempt_v4, names::BUDGET_EXEMPT_V4)?;
        fill_trie(&mut trie(g, names::BUDGET_EXEMPT_V6)?, &c.exempt_v6, names::BUDGET_EXEMPT_V6)?;
        let mut exfil = exfil_configs(g)?;
        for a in &c.agents {
            exfil.set(policy_slot(a.policy_id), a.exfil_config, 0).map_err(insert_err(names::EXFIL))?;
        }
        super::deletes::write_budgets(g, c)?;
        let mut configs = policies(g)?;
        for a in &c.agents {
            configs.set(policy_slot(a.policy_id), a.config, 0).map_err(insert_err(names::POLICIES))?;
        }
        let mut cgroups: HashMap<_, u64, CgroupPolicy> = hash(g, names::AGENT_CGROUPS)?;
        let mut out = Vec::new();
        for a in &c.agents {
            for m in a.cgroups.iter().filter(|m| m.glob.is_none()) {
                let abs = root.join(&m.dir);
                cgroup::create_all(root, &m.dir).map_err(|source| LoadError::Cgroup { path: abs.clone(), source })?;
                let id = cgroup::id_of(&abs).map_err(|source| LoadError::Cgroup { path: abs.clone(), source })?;
                let flags = (if m.this { CGROUP_MATCH_SELF } else { 0 }) | (if m.below { CGROUP_MATCH_DESCENDANTS } else { 0 });
                cgroups.insert(id, CgroupPolicy { policy_id: a.policy_id, flags }, 0).map_err(insert_err(names::AGENT_CGROUPS))?;
                out.push(Registration { id, path: format!("/{}", m.dir), policy_id: a.policy_id });
            }
        }
        let mut matched = glob_matches(root, c);
        container_matches(root, c, &mut matched);
        for (id, path, policy_id) in matched {
            cgroups
                .insert(id, CgroupPolicy { policy_id, flags: CGROUP_MATCH_SELF | CGROUP_MATCH_DESCENDANTS }, 0)
                .map_err(insert_err(names::AGENT_CGROUPS))?;
            out.push(Registration { id, path, policy_id });
        }
        Ok(out)
    }

    /// Registers a cgroup created after the policy was applied, if an agent's glob matches its
    /// path (relative to the cgroup root, with a leading `/`).
    pub fn register_new(&mut self, c: &Compiled, id: u64, path: &str) -> Result<Option<u32>, LoadError> {
        let rel = path.trim_start_matches('/');
        let container = container_of(c, rel);
        let Some(policy_id) = c.agent_for_cgroup(rel, container.as_ref().map(|(ids, info)| (ids, info))) else {
            return Ok(None);
        };
        let mut cgroups: HashMap<_, u64, CgroupPolicy> = hash(&self.generation, names::AGENT_CGROUPS)?;
        cgroups
            .insert(id, CgroupPolicy { policy_id, flags: CGROUP_MATCH_SELF | CGROUP_MATCH_DESCENDANTS }, 0)
            .map_err(insert_err(names::AGENT_CGROUPS))?;
        self.registrations.push(Registration { id, path: path.to_owned(), policy_id });
        Ok(Some(policy_id))
    }

    /// Forgets a removed cgroup (the kernel already dropped its registration).
    pub fn forget(&mut self, id: u64) {
        self.registrations.retain(|r| r.id != id);
    }

    /// Removes every entry whose policy id is `stale`, and empties the settings slots after
    /// `slot_base`; moved-out processes tagged with a stale id are re-tagged by `renames` (old
    /// id, new id), or untagged if their agent is gone.
    fn remove_where(&self, stale: impl Fn(u32) -> bool, slot_base: u32, renames: &[(u32, u32)]) -> Result<(), LoadError> {
        let g = &self.generation;
        let mut cgroups: HashMap<_, u64, CgroupPolicy> = hash(g, names::AGENT_CGROUPS)?;
        let gone: Vec<u64> = cgroups.iter().flatten().filter(|(_, p)| stale(p.policy_id)).map(|(k, _)| k).collect();
        for k in gone {
            let _ = cgroups.remove(&k);
        }
        let mut tagged: HashMap<_, u32, Tagged> = hash(g, names::TAGGED)?;
        let tags: Vec<(u32, Tagged)> = tagged.iter().flatten().filter(|(_, t)| stale(t.policy_id)).collect();
        for (pid, mut t) in tags {
            match renames.iter().find(|(old, _)| *old == t.policy_id) {
                Some((_, new)) => {
                    t.policy_id = *new;
                    let _ = tagged.insert(pid, t, 0);
                }
                None => {
                    let _ = tagged.remove(&pid);
                }
            }
        }
        drop_where(&mut hash::<ExecPathKey, ExecRule>(g, names::EXEC_PATHS)?, |k| stale(k.policy_id));
        drop_where(&mut hash::<ExecNameKey, ExecRule>(g, names::EXEC_NAMES)?, |k| stale(k.policy_id));
        drop_where(&mut hash::<ExecInodeKey, ExecRule>(g, names::EXEC_INODES)?, |k| stale(k.policy_id));
        drop_trie_where(&mut trie::<ExecPrefixKey, ExecRule>(g, names::EXEC_PREFIXES)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        drop_trie_where(&mut trie::<ExecNamePrefixKey, ExecRule>(g, names::EXEC_NAME_PREFIXES)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        drop_trie_where(&mut trie::<NetKeyV4, NetRule>(g, names::NET_V4)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        drop_trie_where(&mut trie::<NetKeyV6, NetRule>(g, names::NET_V6)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        drop_trie_where(&mut trie::<SensKey, SensRule>(g, names::SENSITIVE)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        drop_trie_where(&mut trie::<NetKeyV4, u32>(g, names::BUDGET_EXEMPT_V4)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        drop_trie_where(&mut trie::<NetKeyV6, u32>(g, names::BUDGET_EXEMPT_V6)?, |k| stale(u32::from_be_bytes(k.policy_id_be)));
        let mut configs = policies(g)?;
        let mut exfil = exfil_configs(g)?;
        let empty = PolicyConfig { flags: 0, net_default: 0, exec_default_rule: 0, _pad: 0 };
        for slot in ids_of(slot_base) {
            configs.set(slot, empty, 0).map_err(insert_err(names::POLICIES))?;
            exfil.set(slot, ExfilConfig::default(), 0).map_err(insert_err(names::EXFIL))?;
        }
        super::deletes::clear_budgets(g, ids_of(slot_base))?;
        Ok(())
    }

    /// Processes already in agent cgroups are tagged, so moving them out is followed too.
    fn tag_existing(&self, c: &Compiled) -> Result<(), LoadError> {
        let mut tagged: HashMap<_, u32, Tagged> = hash(&self.generation, names::TAGGED)?;
        let Ok(all) = procfs::process::all_processes() else { return Ok(()) };
        for p in all.flatten() {
            let Ok(cgroups) = p.cgroups() else { continue };
            let Some(path) = cgroups.0.iter().find(|c| c.hierarchy == 0).map(|c| c.pathname.clone()) else { continue };
            // The deepest registration covering the path, as the kernel picks it.
            let Some(r) = self
                .registrations
                .iter()
                .filter(|r| cgroup::is_within(&path, &r.path))
                .max_by_key(|r| r.path.len())
            else {
                continue;
            };
            if c.owns(r.policy_id) && tagged.get(&(p.pid as u32), 0).is_err() {
                let _ = tagged.insert(p.pid as u32, Tagged { policy_id: r.policy_id, _pad: 0, matched_cgroup_id: r.id }, 0);
            }
        }
        Ok(())
    }

    /// Forgets a process as part of a workload (a launcher leaving its session's cgroup).
    pub fn untag(&self, pid: u32) -> Result<(), LoadError> {
        let mut tagged: HashMap<_, u32, Tagged> = hash(&self.generation, names::TAGGED)?;
        let _ = tagged.remove(&pid);
        Ok(())
    }

    /// Ends a hold: marks its `HELD` entry released (so the gate lets the process run) and
    /// returns whether it was there. The entry itself goes at the process's next system call
    /// or its exit, in the kernel, which keeps the count the gate checks before looking.
    pub fn release(&self, tgid: u32) -> Result<bool, LoadError> {
        let mut map: HashMap<_, u32, Held> = hash(&self.generation, names::HELD)?;
        let Ok(held) = map.get(&tgid, 0) else { return Ok(false) };
        // BPF_EXIST: a process that exited meanwhile is not added back.
        Ok(map.insert(tgid, Held { boot_ns: HELD_RELEASED, ..held }, BPF_EXIST).is_ok())
    }
}

const BPF_EXIST: u64 = 2;

/// Processes still held (not released) in a generation's `HELD`.
pub(super) fn held_in(g: &Generation) -> Result<Vec<(u32, Held)>, LoadError> {
    let map: HashMap<_, u32, Held> = hash(g, names::HELD)?;
    Ok(map.iter().flatten().filter(|(_, h)| h.boot_ns != HELD_RELEASED).collect())
}

fn fill<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>, entries: &[(K, V)], name: &'static str) -> Result<(), LoadError> {
    for (k, v) in entries {
        map.insert(k, v, 0).map_err(insert_err(name))?;
    }
    Ok(())
}

fn fill_trie<K: aya::Pod, V: aya::Pod>(map: &mut LpmTrie<MapData, K, V>, entries: &[(u32, K, V)], name: &'static str) -> Result<(), LoadError> {
    for (len, k, v) in entries {
        map.insert(&Key::new(*len, *k), v, 0).map_err(insert_err(name))?;
    }
    Ok(())
}

fn drop_where<K: aya::Pod, V: aya::Pod>(map: &mut HashMap<MapData, K, V>, pred: impl Fn(&K) -> bool) {
    let keys: Vec<K> = map.keys().flatten().filter(|k| pred(k)).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

fn drop_trie_where<K: aya::Pod, V: aya::Pod>(map: &mut LpmTrie<MapData, K, V>, pred: impl Fn(&K) -> bool) {
    let keys: Vec<Key<K>> = map.keys().flatten().filter(|k| pred(&k.data())).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// Existing cgroups an agent's glob matches: (id, path with a leading `/`, policy id). The
/// first agent (in policy order) whose glob matches a cgroup gets it.
fn glob_matches(root: &Path, c: &Compiled) -> Vec<(u64, String, u32)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for a in &c.agents {
        for (i, g) in &a.cgroup_globs {
            let start = root.join(&a.cgroups[*i].dir);
            let mut stack = vec![start];
            let mut visited = 0;
            while let Some(dir) = stack.pop() {
                visited += 1;
                if visited > SCAN_LIMIT {
                    tracing::warn!(glob = %a.cgroups[*i].text, "cgroup tree too large to scan fully for glob matches");
                    break;
                }
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for e in entries.flatten() {
                    if !e.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    let path = e.path();
                    let Ok(rel) = path.strip_prefix(root) else { continue };
                    let rel = rel.to_string_lossy().into_owned();
                    if g.is_match(&rel) {
                        if let Ok(id) = cgroup::id_of(&path) {
                            if seen.insert(id) {
                                out.push((id, format!("/{rel}"), a.policy_id));
                            }
                        }
                        // Everything below is covered by the registration.
                        continue;
                    }
                    stack.push(path);
                }
            }
        }
    }
    out
}

/// The container cgroup `rel` is (its own cgroup, not one below it), with what its runtime
/// keeps on disk, when some agent matches containers.
pub(super) fn container_of(c: &Compiled, rel: &str) -> Option<(crate::container::CgroupIds, crate::container::Info)> {
    if !c.matches_containers() {
        return None;
    }
    let ids = crate::container::from_cgroup(rel).filter(|i| i.leaf_is_container)?;
    let info = crate::container::lookup(crate::container::roots(), &ids);
    Some((ids, info))
}

/// Is `path` a container cgroup some agent could match once its runtime's data is on disk?
pub fn awaits_container_data(c: &Compiled, path: &str) -> bool {
    container_of(c, path.trim_start_matches('/')).is_some_and(|(_, info)| !info.has_metadata())
}

/// Running containers an agent's `match.container` / `match.pod` covers, found by walking the
/// cgroup tree (bounded), added to `out` unless a glob already registered them; the first
/// agent in policy order that matches gets each.
fn container_matches(root: &Path, c: &Compiled, out: &mut Vec<(u64, String, u32)>) {
    if !c.matches_containers() {
        return;
    }
    let mut stack = vec![root.to_path_buf()];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > SCAN_LIMIT {
            tracing::warn!("cgroup tree too large to scan fully for containers");
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            let Ok(rel) = path.strip_prefix(root) else { continue };
            let rel = rel.to_string_lossy().into_owned();
            let Some((ids, info)) = container_of(c, &rel) else {
                stack.push(path);
                continue;
            };
            let policy_id = c.agents.iter().find(|a| a.containers.iter().any(|m| m.matches(&ids, &info))).map(|a| a.policy_id);
            if let (Some(policy_id), Ok(id)) = (policy_id, cgroup::id_of(&path))
                && !out.iter().any(|(seen, ..)| *seen == id)
            {
                out.push((id, format!("/{rel}"), policy_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_have_their_own_ids_and_alternate_slots() {
        let mut base = 0;
        let mut seen = HashSet::new();
        for _ in 0..6 {
            let next = next_base(base);
            assert_eq!(policy_generation(next), policy_generation(base) + 1);
            // The settings slots of consecutive generations are in different halves.
            assert_ne!(policy_slot(next + 1) / IDS, policy_slot(base + 1) / IDS);
            for id in ids_of(next) {
                assert!(seen.insert(id), "id {id} reused");
                assert_eq!(policy_generation(id), policy_generation(next));
            }
            base = next;
        }
    }

    #[test]
    fn ids_wrap_around_keeping_the_halves_alternating() {
        let last = (u32::MAX / IDS) * IDS;
        assert!(ids_of(last).end() <= &u32::MAX);
        let wrapped = next_base(last);
        assert!(wrapped == 0 || wrapped == IDS);
        assert_ne!(policy_slot(wrapped + 1) / IDS, policy_slot(last + 1) / IDS);
    }
}
