//! Is the current task part of an agent workload? Walks its cgroup ancestry from the root.
use aya_ebpf::helpers::generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id};
use guard_common::{CGROUP_MATCH_DESCENDANTS, CGROUP_MATCH_SELF, MAX_CGROUP_DEPTH};

use crate::maps::AGENT_CGROUPS;

/// The policy that covers the current task.
pub struct Workload {
    pub policy_id: u32,
    pub cgroup_id: u64,
    pub matched_cgroup_id: u64,
    pub depth_below_match: u32,
}

/// The deepest registered cgroup that covers the current task wins, so a narrower registration
/// under a broader one takes precedence.
#[inline(always)]
pub fn current() -> Option<Workload> {
    // SAFETY: both helpers only read the current task's cgroup and take no pointers.
    let cur = unsafe { bpf_get_current_cgroup_id() };
    let mut found: Option<Workload> = None;
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
                found = Some(Workload { policy_id: entry.policy_id, cgroup_id: cur, matched_cgroup_id: id, depth_below_match: level });
            }
        }
        if id == cur {
            if let Some(w) = found.as_mut() {
                w.depth_below_match = level - w.depth_below_match;
            }
            return found;
        }
    }
    // Deeper than MAX_CGROUP_DEPTH: the match stands, the distance to it is unknown.
    if let Some(w) = found.as_mut() {
        w.depth_below_match = u32::MAX;
    }
    found
}
