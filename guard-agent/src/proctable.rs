//! What the daemon knows about processes of agent workloads, learned from their exec events:
//! enough to name a process in a verdict after it is gone. Bounded: the oldest entries are
//! forgotten first.
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub ppid: u32,
    /// The filename of its last exec.
    pub exe: String,
}

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

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(exe: &str) -> ProcInfo {
        ProcInfo { ppid: 1, exe: exe.into() }
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
