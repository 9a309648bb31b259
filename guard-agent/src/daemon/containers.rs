//! New container cgroups whose runtime data was not on disk yet when they appeared: looked at
//! again each tick, for a while, so a `match.container` / `match.pod` that needs the image, names
//! or labels still registers them once the runtime has written its files.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::Engine;
use crate::policy::compile::Compiled;

/// How long a new container cgroup is looked at again while its runtime data is missing.
const PENDING_CONTAINER: Duration = Duration::from_secs(10);

impl Engine {
    /// A new cgroup no agent matched: if it is a container whose runtime has not written its
    /// data yet, look again later.
    pub(super) fn container_data_pending(&mut self, current: &Compiled, id: u64, path: String) {
        if crate::loader::apply::awaits_container_data(current, &path) {
            self.pending_containers.push((id, path, Instant::now() + PENDING_CONTAINER));
        }
    }

    /// Tries again to register the new container cgroups whose runtime data was missing.
    pub(super) fn retry_containers(&mut self) {
        if self.pending_containers.is_empty() {
            return;
        }
        let current = Arc::clone(&self.correlator.policies.current);
        let now = Instant::now();
        let pending = std::mem::take(&mut self.pending_containers);
        for (id, path, deadline) in pending {
            match self.loaded.register_new(&current, id, &path) {
                Ok(Some(_)) => tracing::info!(cgroup = %path, "container matches an agent (its runtime data appeared): registered"),
                Ok(None) if now < deadline && crate::loader::apply::awaits_container_data(&current, &path) => {
                    self.pending_containers.push((id, path, deadline));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(cgroup = %path, error = %e, "cannot register a new agent cgroup"),
            }
        }
    }
}
