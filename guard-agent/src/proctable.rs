//! What the daemon knows about processes of agent workloads, learned from their exec events:
//! enough to name a process in a verdict after it is gone. Bounded: the oldest entries are
//! forgotten first.
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub ppid: u32,
    /// The filename of its last exec.
    pub exe: String,
    /// Part of an agent workload. Untagged entries are ancestors outside it (e.g. the
    /// `guard-agent launch` process), cached so they are read from /proc once.
    pub tagged: bool,
}

/// One step of a verdict's ancestry chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub pid: u32,
    pub exe: String,
}

/// Longest ancestry chain a verdict carries.
pub const MAX_ANCESTRY: usize = 16;

pub struct ProcTable {
    cap: usize,
    entries: HashMap<u32, ProcInfo>,
    /// Insertion order, for eviction; may hold pids already replaced (skipped on eviction).
    order: VecDeque<(u32, u64)>,
    generation: HashMap<u32, u64>,
    next_gen: u64,
}

impl ProcTable {
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), entries: HashMap::new(), order: VecDeque::new(), generation: HashMap::new(), next_gen: 0 }
    }

    pub fn insert(&mut self, pid: u32, info: ProcInfo) {
        self.next_gen += 1;
        self.entries.insert(pid, info);
        self.generation.insert(pid, self.next_gen);
        self.order.push_back((pid, self.next_gen));
        while self.entries.len() > self.cap {
            let Some((old, generation)) = self.order.pop_front() else { break };
            if self.generation.get(&old) == Some(&generation) {
                self.entries.remove(&old);
                self.generation.remove(&old);
            }
        }
        // Stale order entries (pids re-inserted since) are dropped as they reach the front;
        // bound them too, so a pid exec'ing in a loop cannot grow the queue forever.
        if self.order.len() > self.cap * 2 {
            let generation = &self.generation;
            self.order.retain(|(pid, g)| generation.get(pid) == Some(g));
        }
    }

    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.entries.get(&pid)
    }

    /// Forgets an exited process (its pid may be reused by an unrelated one).
    pub fn remove(&mut self, pid: u32) {
        self.entries.remove(&pid);
        self.generation.remove(&pid);
    }

    /// `pid` and its ancestors, nearest first, up to and including the first one outside agent
    /// workloads (the launcher). `lookup` names a process the table does not know (from /proc);
    /// what it finds is cached as untagged.
    pub fn ancestry(&mut self, mut pid: u32, lookup: impl Fn(u32) -> Option<ProcInfo>) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        while chain.len() < MAX_ANCESTRY && pid > 1 {
            let info = match self.get(pid) {
                Some(info) => info.clone(),
                None => match lookup(pid) {
                    Some(info) => {
                        self.insert(pid, info.clone());
                        info
                    }
                    None => break,
                },
            };
            chain.push(Ancestor { pid, exe: info.exe.clone() });
            if !info.tagged || chain.iter().any(|a| a.pid == info.ppid) {
                break;
            }
            pid = info.ppid;
        }
        chain
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(exe: &str) -> ProcInfo {
        ProcInfo { ppid: 1, exe: exe.into(), tagged: true }
    }

    #[test]
    fn ancestry_stops_at_the_first_untagged_process() {
        let mut t = ProcTable::new(100);
        t.insert(30, ProcInfo { ppid: 20, exe: "/bin/rm".into(), tagged: true });
        t.insert(20, ProcInfo { ppid: 10, exe: "/bin/sh".into(), tagged: true });
        let lookups = std::cell::Cell::new(0);
        let launcher = |pid: u32| {
            lookups.set(lookups.get() + 1);
            (pid == 10).then(|| ProcInfo { ppid: 5, exe: "/usr/bin/guard-agent".into(), tagged: false })
        };
        let chain = t.ancestry(30, launcher);
        let pids: Vec<u32> = chain.iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![30, 20, 10]);
        assert_eq!(chain[2].exe, "/usr/bin/guard-agent");
        // The launcher is cached: no second /proc read.
        t.ancestry(30, launcher);
        assert_eq!(lookups.get(), 1);
        // A cycle (pid reuse gone wrong) ends the walk.
        t.insert(20, ProcInfo { ppid: 30, exe: "/bin/sh".into(), tagged: true });
        assert_eq!(t.ancestry(30, |_| None).len(), 2);
    }

    #[test]
    fn bounded_oldest_first() {
        let mut t = ProcTable::new(2);
        t.insert(1, info("a"));
        t.insert(2, info("b"));
        t.insert(1, info("a2"));
        t.insert(3, info("c"));
        assert_eq!(t.len(), 2);
        assert!(t.get(2).is_none(), "2 was the oldest");
        assert_eq!(t.get(1).unwrap().exe, "a2");
        assert_eq!(t.get(3).unwrap().exe, "c");
        for i in 0..100 {
            t.insert(7, info(&i.to_string()));
        }
        assert!(t.order.len() <= 4);
        assert_eq!(t.get(7).unwrap().exe, "99");
    }
}
