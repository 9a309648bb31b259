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

/// Does `cgroup.events` say the cgroup (with its descendants) holds no process?
pub fn is_empty(dir: &Path) -> io::Result<bool> {
    let events = fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l == "populated 0"))
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

    /// The path of cgroup `id`, `depth` levels below the known cgroup `under`, whose own
    /// directory name the kernel reported as `leaf`. A direct child's path is known without
    /// the filesystem (the cgroup may be gone already); deeper ones are searched for, and if
    /// gone, reported as `<under>/…/<leaf>`.
    pub fn resolve(&mut self, id: u64, under: u64, depth: u32, leaf: &str) -> Option<String> {
        if let Some(p) = self.known.get(&id) {
            return Some(p.clone());
        }
        let base = self.known.get(&under)?.clone();
        let valid_leaf = !leaf.is_empty() && !leaf.contains('/');
        let found = match depth {
            0 => base,
            1 if valid_leaf => format!("{base}/{leaf}"),
            _ => match self.find_below(&base, id, leaf) {
                Some(p) => p,
                None if valid_leaf => return Some(format!("{base}/…/{leaf}")),
                None => return None,
            },
        };
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
