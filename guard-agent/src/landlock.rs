//! Protected paths (`files.protect`) as a Landlock ruleset, applied by `guard-agent launch` to
//! the workload before CMD runs (raw system calls: the ruleset is prepared before the fork, and
//! the child only calls `landlock_restrict_self`, and `prctl(PR_SET_NO_NEW_PRIVS)` when it has
//! to, both async-signal-safe).
//!
//! Landlock is an allow list: a ruleset *handles* some access rights, and a handled right is
//! refused everywhere except beneath the files and directories a rule grants it on. So the
//! ruleset handles the rights the denied operations need, and grants them on everything that
//! is not protected: for each protected root, the entries of each directory above it (listed
//! at launch) other than the way down to the root. What follows, and is documented (README,
//! `policy check` warnings):
//! - the directories above a protected root get no grant of their own: the workload cannot
//!   remove, rename or (with `write`) create entries directly in them, and an entry created
//!   there after the launch gets none of the handled rights;
//! - Landlock has one right for "remove an entry from this directory": a rename is refused
//!   where a delete is and the other way round;
//! - wildcards are expanded at launch; roots that do not exist then are not protected (they
//!   are new entries of a directory above: they get no rights);
//! - a protected file also reachable by another path (a hard link made before the launch, a
//!   bind mount) is protected only under the protected path.
use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::policy::files::{OP_DELETE, OP_RENAME, OP_TRUNCATE, OP_WRITE};

pub const WRITE_FILE: u64 = 1 << 1;
pub const REMOVE_DIR: u64 = 1 << 4;
pub const REMOVE_FILE: u64 = 1 << 5;
pub const MAKE_CHAR: u64 = 1 << 6;
pub const MAKE_DIR: u64 = 1 << 7;
pub const MAKE_REG: u64 = 1 << 8;
pub const MAKE_SOCK: u64 = 1 << 9;
pub const MAKE_FIFO: u64 = 1 << 10;
pub const MAKE_BLOCK: u64 = 1 << 11;
pub const MAKE_SYM: u64 = 1 << 12;
/// ABI 2: link or rename into another directory.
pub const REFER: u64 = 1 << 13;
/// ABI 3: truncate(2), ftruncate(2), open(O_TRUNC).
pub const TRUNCATE: u64 = 1 << 14;
const MAKE_ANY: u64 = MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM;
/// Rights a rule on a non-directory may carry (EXECUTE, WRITE_FILE, READ_FILE, TRUNCATE,
/// IOCTL_DEV).
const FILE_RIGHTS: u64 = 1 | WRITE_FILE | (1 << 2) | TRUNCATE | (1 << 15);

const SYS_CREATE_RULESET: libc::c_long = 444;
const SYS_ADD_RULE: libc::c_long = 445;
const SYS_RESTRICT_SELF: libc::c_long = 446;
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;

#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of the running kernel, or why there is none.
pub fn abi() -> Result<u32, String> {
    // SAFETY: the version query takes no attribute pointer.
    let v = unsafe { libc::syscall(SYS_CREATE_RULESET, std::ptr::null::<u8>(), 0usize, CREATE_RULESET_VERSION) };
    if v < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no Landlock (built without CONFIG_SECURITY_LANDLOCK)".into(),
            Some(libc::EOPNOTSUPP) => "Landlock is not enabled (add `landlock` to the kernel's `lsm=` boot parameter)".into(),
            _ => format!("Landlock is unavailable: {e}"),
        });
    }
    Ok(v as u32)
}

/// The rights an ABI version knows.
fn known(abi: u32) -> u64 {
    let mut r = (1u64 << 13) - 1;
    if abi >= 2 {
        r |= REFER;
    }
    if abi >= 3 {
        r |= TRUNCATE;
    }
    if abi >= 5 {
        r |= 1 << 15;
    }
    r
}

/// The Landlock rights `deny` operations withhold (before masking by ABI).
pub fn rights_of(ops: u8) -> u64 {
    let mut r = 0;
    if ops & OP_WRITE != 0 {
        r |= WRITE_FILE | TRUNCATE | MAKE_ANY;
    }
    if ops & OP_TRUNCATE != 0 {
        r |= TRUNCATE;
    }
    if ops & OP_DELETE != 0 {
        r |= REMOVE_FILE | REMOVE_DIR;
    }
    if ops & OP_RENAME != 0 {
        r |= REMOVE_FILE | REMOVE_DIR | REFER;
    }
    r
}

/// What the kernel's ABI cannot enforce of `ops`, said for people.
pub fn missing(ops: u8, abi: u32) -> Option<String> {
    let mut out = Vec::new();
    if ops & (OP_TRUNCATE | OP_WRITE) != 0 && abi < 3 {
        out.push("truncate(2)/ftruncate(2) (Landlock ABI 3 and later) are not stopped");
    }
    if ops & OP_RENAME != 0 && abi < 2 {
        out.push("renames into the protected path from another directory are refused only by Landlock ABI 1's blanket EXDEV");
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// One protected root found at launch, with the rights withheld beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub path: PathBuf,
    pub withheld: u64,
}

/// The concrete roots of a protect path: wildcards expanded, each resolved to its real path
/// (symbolic links followed); wildcard matches that do not exist are left out.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let root = pattern.strip_suffix("/**").unwrap_or(pattern).trim_end_matches('/');
    let mut found = vec![PathBuf::from("/")];
    for part in root.split('/').filter(|c| !c.is_empty()) {
        let wild = part.contains(['*', '?', '[', '{']);
        let matcher = wild.then(|| crate::policy::compile::glob(part, true).ok()).flatten();
        let mut next = Vec::new();
        for dir in &found {
            match &matcher {
                None if !wild => next.push(dir.join(part)),
                None => {}
                Some(m) => {
                    let Ok(entries) = std::fs::read_dir(dir) else { continue };
                    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).filter(|n| m.is_match(Path::new(n))).collect();
                    names.sort();
                    next.extend(names.into_iter().map(|n| dir.join(n)));
                }
            }
        }
        found = next;
    }
    // A literal path that does not exist (yet) stays a root as written: created later, it is
    // a new entry of a directory above a root and gets none of the handled rights.
    let literal = !root.contains(['*', '?', '[', '{']);
    let mut out: Vec<PathBuf> = found.into_iter().filter_map(|p| std::fs::canonicalize(&p).ok().or_else(|| literal.then_some(p))).collect();
    out.sort();
    out.dedup();
    out
}

/// One grant: `rights` on `path` and beneath it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub path: PathBuf,
    pub rights: u64,
}

/// The grants that give every handled right everywhere except beneath the roots (where only
/// what they do not withhold is granted). Directories above a root are listed now; `notes`
/// says what could not be listed.
pub fn plan(roots: &[Root], handled: u64, notes: &mut Vec<String>) -> Vec<Grant> {
    let mut grants = Vec::new();
    walk(Path::new("/"), roots, 0, handled, &mut grants, notes);
    grants
}

fn walk(dir: &Path, roots: &[Root], inherited: u64, handled: u64, grants: &mut Vec<Grant>, notes: &mut Vec<String>) {
    let withheld = inherited | roots.iter().filter(|r| r.path == dir).fold(0, |a, r| a | r.withheld);
    // Roots strictly below `dir`.
    let below: Vec<&Root> = roots.iter().filter(|r| r.path != dir && r.path.starts_with(dir)).collect();
    let grant = handled & !withheld;
    if below.is_empty() {
        push(grants, dir, grant);
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            notes.push(format!("cannot list {} ({e}): its entries get none of the protected rights", dir.display()));
            return;
        }
    };
    let mut names: Vec<_> = entries.flatten().collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let path = dir.join(e.file_name());
        if below.iter().any(|r| r.path.starts_with(&path)) {
            walk(&path, roots, withheld, handled, grants, notes);
            continue;
        }
        // A symbolic link is never granted: the grant would land on its target, which may be
        // protected. What it points to is reached by its own real path.
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        push(grants, &path, grant);
    }
}

fn push(grants: &mut Vec<Grant>, path: &Path, rights: u64) {
    if rights != 0 {
        grants.push(Grant { path: path.to_path_buf(), rights });
    }
}

/// A Landlock ruleset, ready to be applied to a child before it runs CMD.
#[derive(Debug)]
pub struct Ruleset {
    fd: i32,
    pub abi: u32,
    pub grants: usize,
}

impl Drop for Ruleset {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl Ruleset {
    /// Builds the ruleset for `roots` (rights withheld per root, by operation bits).
    pub fn build(roots: &[(PathBuf, u8)], notes: &mut Vec<String>) -> Result<Self, String> {
        let abi = abi()?;
        let known = known(abi);
        let mut handled = roots.iter().fold(0, |a, (_, ops)| a | rights_of(*ops)) & known;
        // REFER is refused by every ruleset unless granted: handle it so it can be granted
        // everywhere else, or renames across directories would fail in the whole workload.
        handled |= REFER & known;
        let roots: Vec<Root> = roots.iter().map(|(p, ops)| Root { path: p.clone(), withheld: rights_of(*ops) & known }).collect();
        let grants = plan(&roots, handled, notes);
        let attr: u64 = handled;
        // SAFETY: the attribute is one u64 (handled_access_fs), its size given; the kernel
        // returns a new close-on-exec descriptor.
        let fd = unsafe { libc::syscall(SYS_CREATE_RULESET, &raw const attr, std::mem::size_of::<u64>(), 0u32) };
        if fd < 0 {
            return Err(format!("landlock_create_ruleset: {}", io::Error::last_os_error()));
        }
        let mut rs = Ruleset { fd: fd as i32, abi, grants: 0 };
        for g in &grants {
            rs.grant(g, notes);
        }
        Ok(rs)
    }

    fn grant(&mut self, g: &Grant, notes: &mut Vec<String>) {
        let Ok(c) = CString::new(g.path.as_os_str().as_bytes()) else { return };
        // SAFETY: a NUL-terminated path; O_PATH opens nothing for reading or writing.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            // Gone since it was listed: nothing to grant.
            return;
        }
        let mut rights = g.rights;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes one stat into memory we own.
        if unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            rights &= FILE_RIGHTS;
        }
        if rights != 0 {
            let attr = PathBeneath { allowed_access: rights, parent_fd: fd };
            // SAFETY: a packed path-beneath attribute with an open O_PATH descriptor.
            let r = unsafe { libc::syscall(SYS_ADD_RULE, self.fd, RULE_PATH_BENEATH, &raw const attr, 0u32) };
            if r < 0 {
                notes.push(format!("cannot grant on {}: {}", g.path.display(), io::Error::last_os_error()));
            } else {
                self.grants += 1;
            }
        }
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }

    /// The descriptor the child passes to [`restrict_self`].
    pub fn fd(&self) -> i32 {
        self.fd
    }
}

/// Applies the ruleset to the calling thread (in the child, between fork and exec). Only
/// async-signal-safe system calls. Landlock needs `no_new_privs` unless the caller has
/// CAP_SYS_ADMIN: it is set only when the first attempt is refused for that.
pub fn restrict_self(fd: i32) -> io::Result<()> {
    // SAFETY: raw system calls on a descriptor we own; no memory is touched.
    unsafe {
        if libc::syscall(SYS_RESTRICT_SELF, fd, 0u32) == 0 {
            return Ok(());
        }
        if *libc::__errno_location() != libc::EPERM {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(SYS_RESTRICT_SELF, fd, 0u32) == 0 {
            return Ok(());
        }
    }
    Err(io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("guard-landlock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("protected/sub")).unwrap();
        std::fs::create_dir_all(d.join("scratch")).unwrap();
        std::fs::write(d.join("top-file"), "x").unwrap();
        std::os::unix::fs::symlink(d.join("protected"), d.join("link")).unwrap();
        std::fs::canonicalize(d).unwrap()
    }

    #[test]
    fn plan_grants_siblings_along_the_way_down_and_never_the_root_or_links() {
        let d = tmp("plan");
        let root = Root { path: d.join("protected"), withheld: REMOVE_FILE | REMOVE_DIR };
        let handled = REMOVE_FILE | REMOVE_DIR | REFER;
        let mut notes = Vec::new();
        let grants = plan(std::slice::from_ref(&root), handled, &mut notes);
        let at = |p: &Path| grants.iter().find(|g| g.path == p).map(|g| g.rights);
        assert_eq!(at(&d.join("scratch")), Some(handled));
        assert_eq!(at(&d.join("top-file")), Some(handled), "files get file rights when added, not here");
        assert_eq!(at(&d.join("protected")), Some(REFER), "the root keeps what it does not withhold");
        assert_eq!(at(&d.join("link")), None, "a symlink to the root is never granted");
        assert_eq!(at(&d), None, "an ancestor gets no grant of its own");
        assert!(grants.iter().all(|g| !g.path.starts_with(d.join("protected/sub"))));
        assert!(grants.iter().any(|g| g.path == Path::new("/usr")), "siblings of every ancestor, up to /");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn nested_roots_withhold_their_own_rights_too() {
        let d = tmp("nested");
        std::fs::write(d.join("protected/a"), "a").unwrap();
        let roots = [Root { path: d.join("protected"), withheld: WRITE_FILE }, Root { path: d.join("protected/sub"), withheld: REMOVE_FILE }];
        let handled = WRITE_FILE | REMOVE_FILE | REFER;
        let grants = plan(&roots, handled, &mut Vec::new());
        let at = |p: &Path| grants.iter().find(|g| g.path == p).map(|g| g.rights);
        assert_eq!(at(&d.join("protected/a")), Some(REMOVE_FILE | REFER));
        assert_eq!(at(&d.join("protected/sub")), Some(REFER));
        assert_eq!(at(&d.join("protected")), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn expand_resolves_wildcards_and_links_now() {
        let d = tmp("expand");
        let pattern = format!("{}/prot*/**", d.display());
        assert_eq!(expand(&pattern), vec![d.join("protected")]);
        assert_eq!(expand(&format!("{}/link", d.display())), vec![d.join("protected")], "a link protects its target");
        assert!(expand(&format!("{}/nothing-*", d.display())).is_empty());
        assert_eq!(expand(&format!("{}/not-yet/**", d.display())), vec![d.join("not-yet")], "a literal root that does not exist stays");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn rights_per_operation() {
        assert_eq!(rights_of(OP_DELETE), REMOVE_FILE | REMOVE_DIR);
        assert_eq!(rights_of(OP_TRUNCATE), TRUNCATE);
        assert_ne!(rights_of(OP_WRITE) & MAKE_REG, 0);
        assert_ne!(rights_of(OP_RENAME) & REFER, 0);
        assert!(missing(OP_TRUNCATE, 2).is_some() && missing(OP_TRUNCATE, 3).is_none());
        assert!(abi().is_ok_and(|v| v >= 1) || abi().is_err());
    }
}
