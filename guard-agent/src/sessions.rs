//! Launch sessions: one per `guard-agent launch`, each its own root-owned cgroup
//! `guard/<agent>/<session>`. The daemon creates the cgroup and moves the caller in, so the
//! workload is policed from its first instruction and, without root, cannot move itself out.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{cgroup, control::Peer, paths};

/// Labels a launch may carry, and their bounds.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY: usize = 64;
pub const MAX_LABEL_VALUE: usize = 256;

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    /// The name given to `launch --agent`.
    pub launch_name: String,
    pub labels: BTreeMap<String, String>,
    pub uid: u32,
    pub user: Option<String>,
    pub loginuid: Option<u32>,
    /// The launcher (`guard-agent launch`) process.
    pub launcher: u32,
    /// Where the launcher was before it was moved in (relative to the cgroup root).
    origin: Option<String>,
    /// Path relative to the cgroup root, with a leading `/`.
    pub cgroup: String,
    pub keep_running: bool,
    pub started_ms: u64,
    pub command: Vec<String>,
    /// [`Session::to_json`], made once for every verdict of the session to share.
    identity: std::sync::OnceLock<std::sync::Arc<crate::verdict::Shared>>,
}

impl Session {
    /// The identity as verdicts carry it ([`Session::to_json`]): one copy for the whole
    /// session.
    pub fn identity(&self) -> std::sync::Arc<crate::verdict::Shared> {
        std::sync::Arc::clone(self.identity.get_or_init(|| crate::verdict::Shared::new(self.to_json())))
    }

    /// The identity verdicts carry.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "launch_name": self.launch_name,
            "labels": self.labels,
            "user": { "uid": self.uid, "name": self.user, "loginuid": self.loginuid },
            "launcher_pid": self.launcher,
            "cgroup": self.cgroup,
            "started": self.started_ms,
        })
    }
}

/// Checks `launch` labels: keys of letters, digits, `_`, `-`, `.`, `/`; values without control
/// characters; bounded.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("at most {MAX_LABELS} labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_KEY || !k.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c)) {
            return Err(format!("label key `{k}`: 1-{MAX_LABEL_KEY} letters, digits, `_`, `-`, `.` or `/`"));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(format!("label `{k}`: the value must be at most {MAX_LABEL_VALUE} bytes, without control characters"));
        }
    }
    Ok(())
}

/// Sessions that ended, waiting for their cgroup to empty so it can be removed.
struct Ending {
    dir: PathBuf,
    /// Killed processes must be gone by then; kept-running ones are waited for indefinitely.
    deadline: Option<Instant>,
}

/// How long an ended session still names the events of its workload: the programs queue
/// routine records for up to a poll interval, so an exec can be read after its session ended.
const REMEMBER_ENDED: Duration = Duration::from_secs(5);

pub struct Sessions {
    root: PathBuf,
    live: HashMap<String, Session>,
    ending: Vec<Ending>,
    /// Ended sessions, kept `REMEMBER_ENDED` for the events read after their end.
    ended: HashMap<String, (Session, Instant)>,
}

impl Sessions {
    pub fn new(root: PathBuf) -> Self {
        Self { root, live: HashMap::new(), ending: Vec::new(), ended: HashMap::new() }
    }

    pub fn live(&self) -> impl Iterator<Item = &Session> {
        self.live.values()
    }

    /// The session a cgroup path (relative, leading `/`) belongs to.
    pub fn of_cgroup(&self, path: &str) -> Option<&Session> {
        let mut parts = path.trim_start_matches('/').splitn(4, '/');
        let (Some(base), Some(_agent), Some(id)) = (parts.next(), parts.next(), parts.next()) else { return None };
        if base != paths::AGENT_CGROUP_DIR {
            return None;
        }
        self.live.get(id).or_else(|| self.ended.get(id).map(|(s, _)| s)).filter(|s| cgroup::is_within(path, &s.cgroup))
    }

    /// Creates the session cgroup and moves `peer.pid` into it. `covered` says whether the
    /// policy in force covers a cgroup path; a launch nothing would police is refused.
    pub fn launch(
        &mut self,
        peer: Peer,
        name: &str,
        labels: BTreeMap<String, String>,
        command: Vec<String>,
        keep_running: bool,
        covered: impl Fn(&str) -> bool,
    ) -> Result<&Session, String> {
        if !crate::policy::valid_agent_name(name) {
            return Err(format!("agent name `{name}` may only use letters, digits, `-`, `_` and `.`"));
        }
        check_labels(&labels)?;
        if peer.pid == 0 {
            return Err("cannot identify the calling process".into());
        }
        // The pid must still be the caller: same uid as the socket peer.
        let status = procfs::process::Process::new(peer.pid as i32).and_then(|p| p.status()).map_err(|e| format!("reading the caller: {e}"))?;
        if status.euid != peer.uid {
            return Err("the calling process changed identity".into());
        }
        let id = session_id()?;
        let rel = format!("/{}/{name}/{id}", paths::AGENT_CGROUP_DIR);
        if !covered(&rel) {
            return Err(format!(
                "no agent of the policy in force covers cgroup {rel}: add an agent named `{name}` (or one matching `{}/*`) to the policy",
                paths::AGENT_CGROUP_DIR
            ));
        }
        let parent = format!("{}/{name}", paths::AGENT_CGROUP_DIR);
        cgroup::create_all(&self.root, &parent).map_err(|e| format!("creating cgroup {parent}: {e}"))?;
        let dir = self.root.join(rel.trim_start_matches('/'));
        fs::create_dir(&dir).map_err(|e| format!("creating cgroup {}: {e}", dir.display()))?;
        let origin = own_cgroup(peer.pid);
        if let Err(e) = fs::write(dir.join("cgroup.procs"), peer.pid.to_string()) {
            let _ = fs::remove_dir(&dir);
            return Err(format!("moving the caller into {}: {e}", dir.display()));
        }
        let session = Session {
            id: id.clone(),
            launch_name: name.to_owned(),
            labels,
            uid: peer.uid,
            user: user_name(peer.uid),
            loginuid: fs::read_to_string(format!("/proc/{}/loginuid", peer.pid))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|u| *u != u32::MAX),
            launcher: peer.pid,
            origin,
            cgroup: rel,
            keep_running,
            started_ms: now_ms(),
            command,
            identity: std::sync::OnceLock::new(),
        };
        tracing::info!(session = %id, agent = name, uid = peer.uid, cgroup = %session.cgroup, "session started");
        Ok(self.live.entry(id).or_insert(session))
    }

    /// Ends a session: the launcher goes back where it came from, what the workload left
    /// behind is killed (unless `keep_running`), and the cgroup is removed once empty.
    pub fn end(&mut self, id: &str) -> Option<Session> {
        let s = self.live.remove(id)?;
        let dir = self.root.join(s.cgroup.trim_start_matches('/'));
        if let Some(origin) = &s.origin {
            // Only the launcher, which is ours; it leaves before the kill so it can report the
            // workload's exit. If it is already gone this fails harmlessly.
            let _ = fs::write(self.root.join(origin.trim_start_matches('/')).join("cgroup.procs"), s.launcher.to_string());
        }
        if !s.keep_running {
            if let Err(e) = fs::write(dir.join("cgroup.kill"), "1") {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(session = %id, error = %e, "cannot kill the session's leftover processes");
                }
            }
        }
        let deadline = (!s.keep_running).then(|| Instant::now() + Duration::from_secs(10));
        self.ending.push(Ending { dir, deadline });
        // Killed processes die within milliseconds: wait a little, so the launcher returns
        // with its session gone; anything slower is reaped later.
        let until = Instant::now() + Duration::from_millis(if s.keep_running { 0 } else { 500 });
        loop {
            self.reap();
            if self.ending.is_empty() || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::info!(session = %id, "session ended");
        self.ended.insert(id.to_owned(), (s.clone(), Instant::now()));
        Some(s)
    }

    /// Removes ended sessions' cgroups that are empty now. Called periodically.
    pub fn reap(&mut self) {
        self.ended.retain(|_, (_, at)| at.elapsed() < REMEMBER_ENDED);
        self.ending.retain(|e| match cgroup::is_empty(&e.dir) {
            Ok(true) => !remove_tree(&e.dir),
            Ok(false) => {
                if e.deadline.is_some_and(|d| Instant::now() > d) {
                    tracing::warn!(dir = %e.dir.display(), "processes remain after the kill; cgroup left in place");
                    return false;
                }
                true
            }
            Err(_) => false,
        });
    }

    /// Waits (bounded) for ended sessions' cgroups to go, at daemon stop.
    pub fn drain(&mut self, within: Duration) {
        let ids: Vec<String> = self.live.keys().cloned().collect();
        for id in ids {
            self.end(&id);
        }
        let deadline = Instant::now() + within;
        while !self.ending.is_empty() && Instant::now() < deadline {
            self.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes `dir` and cgroups below it, deepest first. True when gone.
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    matches!(fs::remove_dir(dir), Ok(()))
        || fs::metadata(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// A process's cgroup v2 path (relative, leading `/`).
pub fn own_cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

fn session_id() -> Result<String, String> {
    let mut buf = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| format!("reading /dev/urandom for a session id: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The user name of `uid`, from the password database.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf` (of the given length) only, and sets `out`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_clean() {
        let ok: BTreeMap<String, String> = [("principal".into(), "alice@example.com".into()), ("ticket".into(), "OPS-12".into())].into();
        assert!(check_labels(&ok).is_ok());
        let bad_key: BTreeMap<String, String> = [("a b".into(), "x".into())].into();
        assert!(check_labels(&bad_key).is_err());
        let bad_value: BTreeMap<String, String> = [("k".into(), "line\nbreak".into())].into();
        assert!(check_labels(&bad_value).is_err());
        let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_labels(&many).is_err());
    }

    #[test]
    fn session_of_cgroup() {
        let mut s = Sessions::new(PathBuf::from("/nonexistent"));
        s.live.insert("ab12".into(), Session {
            id: "ab12".into(),
            launch_name: "claude".into(),
            labels: BTreeMap::new(),
            uid: 0,
            user: None,
            loginuid: None,
            launcher: 1,
            origin: None,
            cgroup: "/guard/claude/ab12".into(),
            keep_running: false,
            started_ms: 0,
            command: Vec::new(),
            identity: std::sync::OnceLock::new(),
        });
        assert!(s.of_cgroup("/guard/claude/ab12").is_some());
        assert!(s.of_cgroup("/guard/claude/ab12/sub").is_some());
        assert!(s.of_cgroup("/guard/claude/ab123").is_none());
        assert!(s.of_cgroup("/other/claude/ab12").is_none());
        // Events read after the end (queued in the ring buffer) still name the session.
        assert!(s.end("ab12").is_some());
        assert!(s.live().next().is_none());
        assert!(s.of_cgroup("/guard/claude/ab12").is_some());
        s.ended.values_mut().for_each(|(_, at)| *at -= REMEMBER_ENDED);
        s.reap();
        assert!(s.of_cgroup("/guard/claude/ab12").is_none());
    }
}
