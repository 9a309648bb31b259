//! cgroup v2 directories: ids, creation, removal, lookups by id.
use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// A cgroup's id is the inode number of its directory in the cgroup v2 filesystem.
pub fn id_of(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// Creates `root/rel` and any missing parents; returns the directories it created, outermost
/// first, so they can be removed in reverse.
pub fn create_all(root: &Path, rel: &str) -> io::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    let mut dir = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Removes directories created by [`create_all`] (innermost first). A cgroup still in use
/// (`EBUSY`: processes or children) is left alone.
pub fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if let Err(e) = fs::remove_dir(dir) {
            if e.raw_os_error() != Some(libc::EBUSY) && e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove cgroup");
            }
        }
    }
}

/// Is the cgroup path `path` the cgroup `dir` or below it (both relative, leading `/`)?
pub fn is_within(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Strictly below `dir`.
pub fn is_below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// Does `cgroup.events` say the cgroup (with its descendants) holds no process?
pub fn is_empty(dir: &Path) -> io::Result<bool> {
    let events = fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l == "populated 0"))
}

/// What the kernel says about a task's cgroup.
pub struct CgroupRef<'a> {
    pub id: u64,
    /// The registered ancestor that matched, whose path is known.
    pub under: u64,
    pub depth: u32,
    pub parent: u64,
    pub leaf: &'a str,
}

/// Resolves cgroup ids to paths (relative to the cgroup v2 root, with a leading `/`), caching
/// what it found. Bounded: the cache is cleared when it grows past `CAP` entries.
pub struct PathCache {
    root: PathBuf,
    known: HashMap<u64, String>,
}

impl PathCache {
    const CAP: usize = 8192;
    /// Most directories scanned for one lookup, so a huge cgroup tree cannot stall the daemon.
    const SCAN_LIMIT: usize = 4096;

    pub fn new(root: PathBuf) -> Self {
        Self { root, known: HashMap::new() }
    }

    /// Remembers a path whose id is known (e.g. a registered agent cgroup).
    pub fn insert(&mut self, id: u64, rel: String) {
        if self.known.len() >= Self::CAP {
            self.known.clear();
        }
        self.known.insert(id, rel);
    }

    /// The path of cgroup `c.id`, `c.depth` levels below the known cgroup `c.under`. The
    /// cgroup itself may be gone already (a short-lived session), so its path is built from its
    /// parent's (long-lived, found on the filesystem) and the leaf name the kernel reported;
    /// failing that it is searched for, and reported as `<under>/…/<leaf>` if gone.
    pub fn resolve(&mut self, c: &CgroupRef<'_>) -> Option<String> {
        if let Some(p) = self.known.get(&c.id) {
            return Some(p.clone());
        }
        let base = self.known.get(&c.under)?.clone();
        let valid_leaf = !c.leaf.is_empty() && !c.leaf.contains('/');
        let parent = match c.depth {
            0 => return Some(base),
            1 => Some(base.clone()),
            _ => self.known.get(&c.parent).cloned().or_else(|| self.find_below(&base, c.parent, "")),
        };
        let found = match parent {
            Some(parent) if valid_leaf => format!("{parent}/{}", c.leaf),
            _ => match self.find_below(&base, c.id, c.leaf) {
                Some(p) => p,
                None if valid_leaf => return Some(format!("{base}/…/{}", c.leaf)),
                None => return None,
            },
        };
        self.insert(c.id, found.clone());
        Some(found)
    }

    /// The path of cgroup `id` anywhere in the hierarchy (a process that left its agent's
    /// cgroups), searched from the root.
    pub fn resolve_anywhere(&mut self, id: u64, leaf: &str) -> Option<String> {
        if let Some(p) = self.known.get(&id) {
            return Some(p.clone());
        }
        if id_of(&self.root).ok() == Some(id) {
            return Some("/".to_owned());
        }
        let found = self.find_below("", id, leaf)?;
        self.insert(id, found.clone());
        Some(found)
    }

    fn find_below(&self, base: &str, id: u64, leaf: &str) -> Option<String> {
        let abs = |rel: &str| self.root.join(rel.trim_start_matches('/'));
        if !leaf.is_empty() && !leaf.contains('/') {
            let candidate = format!("{base}/{leaf}");
            if id_of(&abs(&candidate)).ok() == Some(id) {
                return Some(candidate);
            }
        }
        let mut stack = vec![base.to_owned()];
        let mut scanned = 0;
        while let Some(rel) = stack.pop() {
            let Ok(entries) = fs::read_dir(abs(&rel)) else { continue };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_dir() {
                    continue;
                }
                let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
                if meta.ino() == id {
                    return Some(child);
                }
                scanned += 1;
                if scanned >= Self::SCAN_LIMIT {
                    return None;
                }
                stack.push(child);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_and_below_compare_whole_components() {
        assert!(is_within("/guard/a", "/guard/a"));
        assert!(is_within("/guard/a/s1", "/guard/a"));
        assert!(!is_within("/guard/ab", "/guard/a"));
        assert!(!is_below("/guard/a", "/guard/a"));
        assert!(is_below("/guard/a/s1", "/guard/a"));
    }
}
