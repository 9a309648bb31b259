//! Requests from the control sockets, answered by the event loop: status, reload, approve and
//! deny, launch and end of sessions, and metrics scrapes.
use serde_json::{Value, json};

use super::{Engine, Outcome};
use crate::{
    cgroup,
    control::{self, Call, ControlMsg, Peer, Request},
    sessions,
};

impl Engine {
    pub(super) fn control(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Closed { session } => {
                self.end_session(&session);
            }
            ControlMsg::Call(Call { request, peer, session, reply }) => {
                let response = self.request(request, peer, session);
                let _ = reply.send(response);
            }
            ControlMsg::Metrics(reply) => {
                self.refresh_counters();
                let _ = reply.send(self.metrics());
            }
        }
    }

    /// The writer threads count as they write: their counters, brought up to date.
    fn refresh_counters(&mut self) {
        self.sinks.refresh();
        if let Some(log) = &mut self.audit {
            log.refresh();
        }
    }

    fn end_session(&mut self, id: &str) -> bool {
        // The launcher leaves the session's cgroup as part of ending it: untagged first, so
        // that move is not reported as a workload escaping.
        if let Some(launcher) = self.sessions.live().find(|s| s.id == id).map(|s| s.launcher) {
            let _ = self.loaded.untag(launcher);
        }
        self.sessions.end(id).is_some()
    }

    fn request(&mut self, request: Request, peer: Peer, session: Option<String>) -> Value {
        match request {
            Request::Status {} => {
                self.refresh_counters();
                self.status()
            }
            // Served by the socket task itself; never reaches the loop.
            Request::Tail { .. } => control::error("`tail` is a stream, served by the socket"),
            Request::Reload {} => {
                let before = self.counters.reload_failures;
                self.reload("control socket");
                if self.counters.reload_failures > before {
                    control::error("the reload failed; the previous policy stays in force (see the error verdict)")
                } else {
                    json!({ "ok": true, "policy_hash": self.correlator.policies.current.hash })
                }
            }
            Request::Approve { id } | Request::Deny { id } => {
                let approve = matches!(request, Request::Approve { .. });
                let Some(p) = self.holds.take(id) else {
                    return control::error(format!("no pending hold {id}"));
                };
                let (pid, argv) = (p.pid, p.argv.clone());
                let by = json!({ "uid": peer.uid, "name": sessions::user_name(peer.uid), "pid": peer.pid });
                let (outcome, word) = if approve { (Outcome::Release, "approved") } else { (Outcome::Kill, "denied") };
                let reason = format!("{word} by uid {}", peer.uid);
                if approve {
                    self.deletion_approved(&p);
                }
                self.finish_hold(p, outcome, json!({ "decision": word, "by": by }), Some(reason));
                json!({ "ok": true, "id": id, "pid": pid, "argv": self.masked_argv(&argv), "decision": word })
            }
            Request::Launch { agent, labels, command, keep_running } => {
                let registrations = &self.loaded.registrations;
                let covered = |rel: &str| registrations.iter().any(|r| cgroup::is_below(rel, &r.path));
                let policies = &self.correlator.policies;
                match self.sessions.launch(peer, &agent, labels, command, keep_running, covered) {
                    Ok(s) => {
                        let entry = registrations
                            .iter()
                            .filter(|r| cgroup::is_below(&s.cgroup, &r.path))
                            .max_by_key(|r| r.path.len())
                            .and_then(|r| policies.agent(r.policy_id));
                        let policy_agent = entry.map(|a| a.name.clone());
                        // The launcher turns these into a Landlock ruleset for the workload
                        // (enforce mode only: audit mode stops nothing).
                        let protect = entry.filter(|a| a.mode == crate::policy::Mode::Enforce).map(super::files::launch_rules).unwrap_or_default();
                        json!({ "ok": true, "session": s.id, "cgroup": s.cgroup, "agent": policy_agent, "files_protect": protect })
                    }
                    Err(e) => control::error(e),
                }
            }
            Request::End {} => match session {
                Some(id) if self.end_session(&id) => json!({ "ok": true }),
                _ => control::error("no live session on this connection"),
            },
            #[cfg(debug_assertions)]
            Request::Stall { ms } => {
                std::thread::sleep(std::time::Duration::from_millis(ms.min(10_000)));
                json!({ "ok": true })
            }
        }
    }
}
