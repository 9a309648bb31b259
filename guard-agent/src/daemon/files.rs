//! The daemon's half of protected paths (`files.protect`): the rules a launch gets for its
//! Landlock ruleset, and the `denied` verdicts of the calls that failed.
use guard_common::{
    CWD_PART_LEN, Decision, FILE_DIR_IN_MOUNT, FILE_DIR_NONE, FILE_DIR_TRUNCATED, FILE_OP_CREATE, FILE_OP_DELETE,
    FILE_OP_OPEN, FILE_OP_RENAME, FILE_OP_TRUNCATE, FileEvent,
};

use super::Engine;
use crate::{
    correlate::nul_terminated,
    policy::files::{OP_DELETE, OP_RENAME, OP_TRUNCATE, OP_WRITE, ProtectEntry, rule_above, rule_for},
    policy::{compile::AgentEntry, files::op_names},
    verdict::Subject,
};
use serde_json::{Value, json};

/// The protect rules of `agent` as the launcher takes them.
pub(super) fn launch_rules(agent: &AgentEntry) -> Vec<Value> {
    agent
        .files
        .iter()
        .map(|f| json!({ "id": f.rule_id, "path": f.rule.path, "deny": op_names(f.rule.deny), "location": f.location }))
        .collect()
}

/// What protects each of `agent`'s protect rules, for `status`.
pub(super) fn status_rules(agent: &AgentEntry) -> Vec<Value> {
    let landlock = match (agent.mode, crate::landlock::abi()) {
        (crate::policy::Mode::Audit, _) => "not applied: audit mode".to_owned(),
        (_, Ok(abi)) => format!("landlock, applied by `guard-agent launch` to each workload it starts (Landlock ABI {abi} on this kernel)"),
        (_, Err(e)) => format!("NOT ENFORCED: {e}; `guard-agent launch` refuses to start this agent's workloads"),
    };
    let others: Vec<&str> = agent
        .cgroups
        .iter()
        .filter(|c| c.glob.is_some() || !c.dir.starts_with(&format!("{}/", crate::paths::AGENT_CGROUP_DIR)))
        .map(|c| c.text.as_str())
        .chain(agent.containers.iter().map(|c| c.text.as_str()))
        .collect();
    agent
        .files
        .iter()
        .map(|f| {
            json!({
                "rule": f.rule.shown(),
                "location": f.location,
                "landlock": landlock,
                "lsm": "not active (the tracepoint tier loads no BPF LSM path_unlink/path_rename/file_open programs)",
                "unprotected": (!others.is_empty()).then(|| format!("workloads matched by {} that `guard-agent launch` did not start get no Landlock ruleset", others.join(", "))),
            })
        })
        .collect()
}

const AT_FDCWD: i32 = -100;
const O_ACCMODE: u32 = 3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

/// The directory the kernel walked for a relative path (innermost component first), as an
/// absolute path, when the walk is complete and within the task's root mount.
fn kernel_dir(e: &FileEvent) -> Option<String> {
    if e.dir_flags & (FILE_DIR_NONE | FILE_DIR_TRUNCATED | FILE_DIR_IN_MOUNT) != 0 {
        return None;
    }
    let depth = (e.dir_depth as usize).min(e.dir.len());
    let parts: Vec<String> = e.dir[..depth].iter().rev().map(|c| nul_terminated(&c[..CWD_PART_LEN])).collect();
    Some(format!("/{}", parts.join("/")))
}

/// `path` with `.` and `..` resolved lexically, made absolute against `dir`.
fn normalize(dir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') { path.to_owned() } else { format!("{dir}/{path}") };
    let mut out: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// A path argument of the call as written, and where the daemon found it: `absolute`,
/// `kernel` (the directory the kernel walked at the call), `proc` (the live process's cwd or
/// descriptor, read now: best effort) or `unresolved` (the process is gone).
fn resolve(e: &FileEvent, raw: &str, dirfd: i32, same_dir: bool) -> (String, &'static str) {
    if raw.starts_with('/') {
        return (normalize("/", raw), "absolute");
    }
    if same_dir && let Some(dir) = kernel_dir(e) {
        return (normalize(&dir, raw), "kernel");
    }
    let base = if dirfd == AT_FDCWD {
        std::fs::read_link(format!("/proc/{}/task/{}/cwd", e.header.tgid, e.header.pid)).or_else(|_| std::fs::read_link(format!("/proc/{}/cwd", e.header.tgid)))
    } else {
        std::fs::read_link(format!("/proc/{}/fd/{dirfd}", e.header.tgid))
    };
    match base {
        Ok(b) => (normalize(&b.to_string_lossy(), raw), "proc"),
        Err(_) => (raw.to_owned(), "unresolved"),
    }
}

/// The call's paths as the daemon reads them (also what the fuzz target exercises).
pub fn files_path_text(e: &FileEvent) -> (String, String) {
    (nul_terminated(&e.path), nul_terminated(&e.path2))
}

fn syscall_name(nr: u32) -> &'static str {
    let nr = i64::from(nr);
    [
        (libc::SYS_unlink, "unlink"),
        (libc::SYS_unlinkat, "unlinkat"),
        (libc::SYS_rmdir, "rmdir"),
        (libc::SYS_rename, "rename"),
        (libc::SYS_renameat, "renameat"),
        (libc::SYS_renameat2, "renameat2"),
        (libc::SYS_truncate, "truncate"),
        (libc::SYS_ftruncate, "ftruncate"),
        (libc::SYS_open, "open"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_openat2, "openat2"),
        (libc::SYS_creat, "creat"),
        (libc::SYS_mkdir, "mkdir"),
        (libc::SYS_mkdirat, "mkdirat"),
        (libc::SYS_mknod, "mknod"),
        (libc::SYS_mknodat, "mknodat"),
        (libc::SYS_symlink, "symlink"),
        (libc::SYS_symlinkat, "symlinkat"),
        (libc::SYS_link, "link"),
        (libc::SYS_linkat, "linkat"),
    ]
    .iter()
    .find(|(n, _)| *n == nr)
    .map_or("?", |(_, s)| *s)
}

/// Which `deny` operations can refuse this call, and the name of the operation.
fn ops_of(e: &FileEvent) -> (u8, &'static str) {
    match e.op {
        FILE_OP_OPEN => {
            let writes = e.flags & O_ACCMODE != 0 || e.flags & O_CREAT != 0;
            let truncates = e.flags & O_TRUNC != 0;
            ((if writes { OP_WRITE } else { 0 }) | (if truncates { OP_TRUNCATE } else { 0 }), if writes { "write" } else { "truncate" })
        }
        FILE_OP_DELETE => (OP_DELETE | OP_RENAME, "delete"),
        FILE_OP_RENAME => (OP_RENAME | OP_DELETE | OP_WRITE, "rename"),
        FILE_OP_TRUNCATE => (OP_TRUNCATE | OP_WRITE, "truncate"),
        FILE_OP_CREATE => (OP_WRITE, "create"),
        _ => (0, "?"),
    }
}

/// The directory a path is directly in.
fn parent(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    }
}

impl Engine {
    /// A watched file call of a workload with protect rules failed with EACCES or EPERM: a
    /// `denied` verdict naming the rule, when a protect rule covers the path (or the path is
    /// directly in a directory above a protected one). Other refusals (file permissions, another
    /// LSM) are not guard's and are only counted.
    pub(super) fn file_denied(&mut self, e: &FileEvent) {
        let h = e.header;
        let Some(agent) = self.correlator.policies.agent(h.policy_id) else { return };
        let rules: Vec<ProtectEntry> = agent.files.clone();
        let agent_name = agent.name.clone();
        if rules.is_empty() {
            return;
        }
        let (raw, raw2) = files_path_text(e);
        let (candidates, mut op) = ops_of(e);
        let (path, how) = if e.op == FILE_OP_TRUNCATE && raw.is_empty() {
            // ftruncate: the descriptor's file, walked by the kernel (its name included).
            match kernel_dir(e) {
                Some(p) => (p, "kernel"),
                None => match std::fs::read_link(format!("/proc/{}/fd/{}", h.tgid, e.dirfd)) {
                    Ok(p) => (p.to_string_lossy().into_owned(), "proc"),
                    Err(_) => (format!("(file descriptor {})", e.dirfd), "unresolved"),
                },
            }
        } else {
            resolve(e, &raw, e.dirfd, true)
        };
        let to = (e.op == FILE_OP_RENAME || (e.op == FILE_OP_CREATE && !raw2.is_empty()))
            .then(|| resolve(e, &raw2, e.dirfd2, e.dirfd2 == e.dirfd).0);
        // A rename is refused for its old name (removing it) or its new one (making it).
        let mut tried = vec![path.clone()];
        if e.op == FILE_OP_RENAME && let Some(t) = &to {
            tried.push(t.clone());
        }
        let found = tried.iter().find_map(|p| rule_for(&rules, p, candidates).map(|r| (p.clone(), r, None)));
        let found = found.or_else(|| {
            tried.iter().find_map(|p| rule_above(&rules, parent(p), candidates).map(|r| (p.clone(), r, Some(parent(p).to_owned()))))
        });
        let Some((denied_path, rule, above)) = found else {
            self.counters.files_unattributed += 1;
            return;
        };
        if e.op == FILE_OP_OPEN && rule.rule.deny & OP_WRITE == 0 {
            op = "truncate";
        }
        let errno = if e.ret == -13 { "EACCES" } else { "EPERM" };
        let mut reason = match &above {
            None => format!("{op} of {denied_path} refused ({errno} from {}): protected by `{}`", syscall_name(e.syscall_nr), rule.rule.shown()),
            Some(dir) => format!(
                "{op} of {denied_path} refused ({errno} from {}): it is directly in {dir}, a directory above the protected path `{}`, and Landlock cannot grant rights on such entries without granting them on the protected path",
                syscall_name(e.syscall_nr),
                rule.rule.path
            ),
        };
        let denies = |o: u8| rule.rule.deny & o != 0;
        if above.is_none() && ((op == "delete" && !denies(OP_DELETE)) || (op == "rename" && !denies(OP_RENAME))) {
            reason.push_str("; Landlock refuses deletes and renames alike (both remove an entry from its directory)");
        }
        if how == "unresolved" {
            reason.push_str("; the process ended before its directory could be read, so the path is as the call gave it");
        }
        let detail = json!({
            "syscall": syscall_name(e.syscall_nr),
            "errno": errno,
            "raw_path": raw,
            "resolved_by": how,
            "scope": if above.is_some() { "above_protected" } else { "protected" },
            "mechanism": "landlock",
        });
        let (ppid, exe) = self.correlator.identify(h.tgid);
        let subject = Subject::File { op, path: denied_path, to, exe, detail };
        let mut v = self.correlator.verdict(&h, subject, if h.ppid != 0 { h.ppid } else { ppid });
        v.decision = Decision::Denied;
        v.rule = self.correlator.policies.of(h.policy_id).and_then(|c| c.rule(rule.rule_id)).cloned();
        v.reason = Some(reason);
        if let Some(p) = &v.cgroup_path {
            v.session = self.sessions.of_cgroup(p).map(crate::sessions::Session::identity);
        }
        tracing::debug!(agent = %agent_name, "file call refused under a protected path");
        self.counters.files_denied += 1;
        self.emit(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> FileEvent {
        // SAFETY: FileEvent is Pod: all zero bytes is a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn the_kernel_walk_gives_the_directory_innermost_first() {
        let mut e = event();
        for (i, c) in ["deeper", "sub", "data", "srv"].iter().enumerate() {
            e.dir[i][..c.len()].copy_from_slice(c.as_bytes());
        }
        e.dir_depth = 4;
        assert_eq!(kernel_dir(&e).as_deref(), Some("/srv/data/sub/deeper"));
        e.path[..5].copy_from_slice(b"a.txt");
        assert_eq!(resolve(&e, "a.txt", 7, true), ("/srv/data/sub/deeper/a.txt".to_owned(), "kernel"));
        e.dir_flags = FILE_DIR_IN_MOUNT;
        assert_eq!(kernel_dir(&e), None, "a walk that ended at another mount's root is not a full path");
        e.dir_flags = 0;
        e.dir_depth = 0;
        assert_eq!(kernel_dir(&e).as_deref(), Some("/"));
    }

    #[test]
    fn operations_follow_the_call_and_its_flags() {
        let mut e = event();
        e.op = FILE_OP_OPEN;
        e.flags = (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32;
        assert_eq!(ops_of(&e), (OP_WRITE | OP_TRUNCATE, "write"));
        e.op = FILE_OP_DELETE;
        assert_eq!(ops_of(&e).1, "delete");
        e.op = FILE_OP_TRUNCATE;
        assert_eq!(ops_of(&e), (OP_TRUNCATE | OP_WRITE, "truncate"));
    }

    #[test]
    fn paths_are_normalized_against_their_directory() {
        assert_eq!(normalize("/srv/data", "a/../b/./c"), "/srv/data/b/c");
        assert_eq!(normalize("/x", "/etc//passwd"), "/etc/passwd");
        assert_eq!(normalize("/", "../.."), "/");
        assert_eq!(parent("/srv/data"), "/srv");
        assert_eq!(parent("/srv"), "/");
    }
}
