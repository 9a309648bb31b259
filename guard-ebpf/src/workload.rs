//! Is the current task part of an agent workload? Walks its cgroup ancestry from the root.
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid,
    generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
};
use guard_common::{CGROUP_MATCH_DESCENDANTS, CGROUP_MATCH_SELF, EVENT_FLAG_MOVED_OUT, MAX_CGROUP_DEPTH, Tagged};

use crate::maps::{AGENT_CGROUPS, TAGGED};

/// The policy that covers the current task.
pub struct Workload {
    pub policy_id: u32,
    pub cgroup_id: u64,
    pub matched_cgroup_id: u64,
    pub parent_cgroup_id: u64,
    pub depth_below_match: u32,
    /// `EVENT_FLAG_*` bits every event of this task carries (`EVENT_FLAG_MOVED_OUT`).
    pub flags: u32,
}

impl Workload {
    /// The current task, outside every agent workload (policy 0: no rules, nothing enforced).
    #[inline(always)]
    pub fn untagged() -> Self {
        // SAFETY: reads the current task's cgroup id; no pointers.
        let cur = unsafe { bpf_get_current_cgroup_id() };
        Self { policy_id: 0, cgroup_id: cur, matched_cgroup_id: 0, parent_cgroup_id: 0, depth_below_match: u32::MAX, flags: 0 }
    }

    /// Remembers the current process (or its new child) as part of this workload.
    #[inline(always)]
    pub fn tag(&self, tgid: u32) {
        let t = Tagged { policy_id: self.policy_id, _pad: 0, matched_cgroup_id: self.matched_cgroup_id };
        // A full map leaves the process covered by its cgroup alone: it is still enforced
        // where it is, only a later move out of the cgroup would not be followed.
        let _ = TAGGED.insert(&tgid, &t, 0);
    }
}

/// The deepest registered cgroup that covers the current task wins, so a narrower registration
/// under a broader one takes precedence.
#[inline(always)]
pub fn current() -> Option<Workload> {
    // SAFETY: both helpers only read the current task's cgroup and take no pointers.
    let cur = unsafe { bpf_get_current_cgroup_id() };
    // Every field stays initialised on every path (policy_id 0 = no match): the verifier rejects
    // reads of registers LLVM would leave unset for an `Option`'s absent payload.
    let mut w = Workload { policy_id: 0, cgroup_id: cur, matched_cgroup_id: 0, parent_cgroup_id: 0, depth_below_match: u32::MAX, flags: 0 };
    let mut matched_level = 0;
    let mut parent = 0;
    for level in 0..MAX_CGROUP_DEPTH {
        // SAFETY: as above; a level past the task's own returns 0.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            break;
        }
        // SAFETY: the value is copied out at once; entries are only replaced by userspace with
        // whole-value updates.
        if let Some(entry) = unsafe { AGENT_CGROUPS.get(&id) } {
            let wanted = if id == cur { CGROUP_MATCH_SELF } else { CGROUP_MATCH_DESCENDANTS };
            if entry.flags & wanted != 0 {
                w.policy_id = entry.policy_id;
                w.matched_cgroup_id = id;
                matched_level = level;
            }
        }
        if id == cur {
            // Below the root the task's own level is known: how far below the match it is.
            w.depth_below_match = level - matched_level;
            w.parent_cgroup_id = parent;
            break;
        }
        parent = id;
    }
    // A task deeper than MAX_CGROUP_DEPTH keeps depth_below_match = u32::MAX (unknown).
    if w.policy_id != 0 {
        return Some(w);
    }
    // Not in an agent's cgroups: a process that was (and was moved out) keeps its policy.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: the value is copied out at once.
    let t = unsafe { TAGGED.get(&tgid) }?;
    w.policy_id = t.policy_id;
    w.matched_cgroup_id = t.matched_cgroup_id;
    w.flags = EVENT_FLAG_MOVED_OUT;
    Some(w)
}
