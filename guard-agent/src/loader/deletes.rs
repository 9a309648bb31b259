//! The deletion budget's maps: per-policy budgets written with the rest of a policy, and the
//! per-workload windows the daemon resets when a person approves a held deletion.
use aya::maps::{Array, HashMap, Map, MapData};
use guard_common::{DeleteConfig, DeleteWindow, names};

use super::{LoadError, Loaded, open_pinned, pins::Generation};
use crate::policy::compile::Compiled;

fn budgets(g: &Generation) -> Result<Array<MapData, DeleteConfig>, LoadError> {
    let name = names::DELETE_BUDGETS;
    Array::try_from(open_pinned(g, name)?).map_err(|source| LoadError::Map { name, source })
}

fn counts(map: Map) -> Result<HashMap<MapData, u64, DeleteWindow>, LoadError> {
    HashMap::try_from(map).map_err(|source| LoadError::Map { name: names::DELETE_COUNTS, source })
}

/// Each agent's budget into its settings slot (0 for an agent without one).
pub(super) fn write_budgets(g: &Generation, c: &Compiled) -> Result<(), LoadError> {
    let mut map = budgets(g)?;
    for a in &c.agents {
        map.set(guard_common::policy_slot(a.policy_id), a.delete_budget, 0)
            .map_err(|source| LoadError::MapInsert { name: names::DELETE_BUDGETS, source })?;
    }
    Ok(())
}

/// Empties the settings slots of a generation that is gone.
pub(super) fn clear_budgets(g: &Generation, slots: impl Iterator<Item = u32>) -> Result<(), LoadError> {
    let mut map = budgets(g)?;
    for slot in slots {
        map.set(slot, DeleteConfig::default(), 0).map_err(|source| LoadError::MapInsert { name: names::DELETE_BUDGETS, source })?;
    }
    Ok(())
}

impl Loaded {
    /// Starts a fresh window for a workload (a person approved a held deletion).
    pub fn reset_deletions(&self, workload_cgroup_id: u64) -> Result<(), LoadError> {
        let mut map = counts(self.pinned_map(names::DELETE_COUNTS)?)?;
        let _ = map.remove(&workload_cgroup_id);
        Ok(())
    }
}
