//! The filesystem steps of install and uninstall: each one does nothing when things are already
//! as wanted, so a second install rewrites nothing (and leaves every mtime alone).
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// What a step found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// The permission bits of a mode (no file type bits).
pub fn perm(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Makes `dir` with `mode`, and each missing parent (with 0755) from `top` down. Every directory
/// made is passed to `created`, so uninstall can later remove exactly those. An existing `dir`
/// gets `mode` (it is guard's); existing parents are not touched.
pub fn ensure_dir(top: &Path, dir: &Path, mode: u32, created: &mut dyn FnMut(&Path)) -> anyhow::Result<Change> {
    let rel = dir.strip_prefix(top).with_context(|| format!("{} is not under {}", dir.display(), top.display()))?;
    let mut at = top.to_path_buf();
    for part in rel.components() {
        at.push(part);
        let want = if at == dir { mode } else { 0o755 };
        // Below another root (a staging tree someone else may own), a symbolic link could send
        // root's writes anywhere: refuse them. On `/` itself the parents are root's own.
        let meta = match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() && top != Path::new("/") => {
                bail!("{} is a symbolic link; install does not follow links below --root", at.display())
            }
            Ok(m) if m.file_type().is_symlink() => fs::metadata(&at),
            other => other,
        };
        match meta {
            Ok(meta) if meta.is_dir() => {
                if at == dir && perm(&meta) != mode {
                    set_mode(&at, mode)?;
                    return Ok(Change::Updated);
                }
            }
            Ok(_) => bail!("{} exists and is not a directory", at.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).with_context(|| format!("creating {}", at.display()))?;
                // Set explicitly: the umask of whoever runs install must not decide the modes.
                set_mode(&at, want)?;
                created(&at);
                if at == dir {
                    return Ok(Change::Created);
                }
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", at.display())),
        }
    }
    Ok(Change::Unchanged)
}

pub fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("setting the mode of {}", path.display()))
}

/// The file's content, or None if it does not exist.
pub fn read_if_exists(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Puts `content` at `path` with `mode`, writing only what differs: the same content with
/// another mode is only chmod'ed, the same content and mode is left alone.
pub fn put_file(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<Change> {
    let Some(old) = read_if_exists(path)? else {
        write_atomic(path, content, mode)?;
        return Ok(Change::Created);
    };
    if old != content {
        write_atomic(path, content, mode)?;
        return Ok(Change::Updated);
    }
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if perm(&meta) == mode {
        return Ok(Change::Unchanged);
    }
    set_mode(path, mode)?;
    Ok(Change::Updated)
}

/// Writes a temporary file next to `path` and renames it over `path`: a reader (or a running
/// binary being replaced) sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = temp_name(path)?;
    let written = write_new(&tmp, content, mode).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn temp_name(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".guard-install-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

fn write_new(tmp: &Path, content: &[u8], mode: u32) -> anyhow::Result<()> {
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()
    };
    write().with_context(|| format!("writing {}", tmp.display()))
}

/// Removes a file; false if there was none.
pub fn remove_file(path: &Path) -> anyhow::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// How many entries a directory holds; None if it does not exist.
pub fn entries(dir: &Path) -> anyhow::Result<Option<usize>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Some(rd.count())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("guard-fsops-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn put_file_writes_only_what_differs() {
        let dir = scratch("put");
        let f = dir.join("a");
        assert_eq!(put_file(&f, b"x", 0o640).unwrap(), Change::Created);
        assert_eq!(perm(&fs::metadata(&f).unwrap()), 0o640);
        assert_eq!(put_file(&f, b"x", 0o640).unwrap(), Change::Unchanged);
        assert_eq!(put_file(&f, b"x", 0o644).unwrap(), Change::Updated);
        assert_eq!(put_file(&f, b"y", 0o644).unwrap(), Change::Updated);
        assert_eq!(fs::read(&f).unwrap(), b"y");
        // No temporary file is left next to it.
        assert_eq!(entries(&dir).unwrap(), Some(1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ensure_dir_reports_the_parents_it_made_and_refuses_a_file_in_the_way() {
        let dir = scratch("dirs");
        let mut made = Vec::new();
        let target = dir.join("a/b/c");
        assert_eq!(ensure_dir(&dir, &target, 0o700, &mut |p| made.push(p.to_path_buf())).unwrap(), Change::Created);
        assert_eq!(made, [dir.join("a"), dir.join("a/b"), dir.join("a/b/c")]);
        assert_eq!(perm(&fs::metadata(dir.join("a/b")).unwrap()), 0o755);
        assert_eq!(perm(&fs::metadata(&target).unwrap()), 0o700);
        made.clear();
        assert_eq!(ensure_dir(&dir, &target, 0o700, &mut |p| made.push(p.to_path_buf())).unwrap(), Change::Unchanged);
        assert_eq!(ensure_dir(&dir, &target, 0o750, &mut |p| made.push(p.to_path_buf())).unwrap(), Change::Updated);
        assert!(made.is_empty());
        fs::write(dir.join("file"), b"").unwrap();
        let err = ensure_dir(&dir, &dir.join("file/sub"), 0o755, &mut |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("exists and is not a directory"), "{err:#}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
