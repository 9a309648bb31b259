//! The pinned state under bpffs: enforcement that outlives the daemon.
//!
//! Layout: `<pin dir>/gen-<id>/links/<program>`, `.../progs/<program>` (for statistics only) and
//! `<pin dir>/gen-<id>/maps/<map>`, where
//! `<id>` names the eBPF object and the policy together. A daemon that finds its own generation
//! pinned adopts it (nothing is detached or re-attached); one that finds another generation
//! attaches its own first and then removes the old one, so there is never a moment without
//! enforcement. Removing a link's pin (with no process holding it) detaches the program.
use std::{
    fs, io,
    path::{Path, PathBuf},
};

const GEN_PREFIX: &str = "gen-";

/// One generation's directory.
#[derive(Debug, Clone)]
pub struct Generation {
    pub dir: PathBuf,
}

impl Generation {
    pub fn new(pin_dir: &Path, id: &str) -> Self {
        Self { dir: pin_dir.join(format!("{GEN_PREFIX}{id}")) }
    }

    pub fn links(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn maps(&self) -> PathBuf {
        self.dir.join("maps")
    }

    /// Programs are pinned too (not needed for enforcement: the links hold them) so that
    /// their run-time statistics can be read without CAP_SYS_ADMIN.
    pub fn progs(&self) -> PathBuf {
        self.dir.join("progs")
    }

    pub fn prog(&self, program: &str) -> PathBuf {
        self.progs().join(program)
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.links().join(program)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Every program in `programs` has a pinned link: the generation is complete and enforcing.
    pub fn is_complete(&self, programs: &[&str]) -> bool {
        programs.iter().all(|p| self.link(p).exists())
    }

    pub fn create_dirs(&self) -> io::Result<()> {
        fs::create_dir_all(self.links())?;
        fs::create_dir_all(self.progs())?;
        fs::create_dir_all(self.maps())
    }

    /// Unpins every link (detaching its program) and map, then removes the directories.
    /// Links go first, so programs stop before their maps disappear.
    pub fn remove(&self) -> io::Result<()> {
        for sub in [self.links(), self.progs(), self.maps()] {
            match fs::read_dir(&sub) {
                Ok(entries) => {
                    for entry in entries {
                        fs::remove_file(entry?.path())?;
                    }
                    fs::remove_dir(&sub)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match fs::remove_dir(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Every generation pinned under `pin_dir`.
pub fn generations(pin_dir: &Path) -> io::Result<Vec<Generation>> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(GEN_PREFIX) && entry.file_type()?.is_dir() {
            out.push(Generation { dir: entry.path() });
        }
    }
    Ok(out)
}

/// Removes every generation and then `pin_dir` itself if empty. Returns how many were removed.
pub fn remove_all(pin_dir: &Path) -> io::Result<usize> {
    let gens = generations(pin_dir)?;
    for g in &gens {
        g.remove()?;
    }
    match fs::remove_dir(pin_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
        Err(e) => return Err(e),
    }
    Ok(gens.len())
}

/// Detaches everything: removes every pinned generation (and `pin_dir` if then empty), refusing
/// while a daemon holds the lock (it would go on believing it enforces). Returns how many
/// generations were removed. For `guard-agent detach` and `uninstall`.
pub fn detach_all(pin_dir: &Path) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    let _lock = crate::lock::acquire().context("a guard-agent daemon is running; stop it first")?;
    remove_all(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_found_and_removed() {
        // A plain directory stands in for bpffs: the layout logic is the same.
        let dir = std::env::temp_dir().join(format!("guard-pins-{}", std::process::id()));
        let g = Generation::new(&dir, "abc");
        g.create_dirs().unwrap();
        fs::write(g.link("guard_exec"), b"").unwrap();
        fs::write(g.map("EVENTS"), b"").unwrap();
        fs::create_dir_all(dir.join("unrelated")).unwrap();
        assert!(g.is_complete(&["guard_exec"]));
        assert!(!g.is_complete(&["guard_exec", "guard_fork"]));
        assert_eq!(generations(&dir).unwrap().len(), 1);
        assert_eq!(remove_all(&dir).unwrap(), 1);
        assert!(!g.dir.exists());
        assert!(dir.exists(), "a directory holding something else stays");
        fs::remove_dir(dir.join("unrelated")).unwrap();
        assert_eq!(remove_all(&dir).unwrap(), 0);
        assert!(!dir.exists());
    }
}
