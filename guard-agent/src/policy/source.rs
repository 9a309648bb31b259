//! What the daemon accepts as a policy (or settings) file, and how it reads one without being
//! made to hang or exhaust its memory by whatever the path names at the time.
//!
//! A policy path names a regular file, or a directory of `*.yaml` files (each a regular file).
//! Symbolic links are followed: a Kubernetes ConfigMap volume is a chain of them
//! (`policy.yaml -> ..data/policy.yaml`, `..data -> ..2025_01_01_...`), swapped atomically on
//! update. Refused, with the reason in the error: a dangling link, a loop of links, a FIFO, a
//! socket, a device, and a file over [`MAX_FILE_BYTES`] (checked on the open file before reading,
//! and the read itself stops one byte past the limit, so a file that grows meanwhile is refused
//! too). The file is opened `O_NONBLOCK`, so a FIFO swapped in between the check and the open
//! cannot block the daemon's event loop waiting for a writer.
use std::{
    fs::{File, FileType, Metadata, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

use super::{PolicyError, Pos};

/// The largest policy or settings file read: far more than any hand-written policy needs
/// (thousands of rules fit in a few hundred KiB), and small enough to read at once.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads a UTF-8 text file; errors (not a regular file, too large, unreadable, not UTF-8 with the
/// line and column of the first bad byte) are `PolicyError`s naming `what`.
pub fn read_text(path: &Path, what: &str) -> Result<String, PolicyError> {
    let file = path.display().to_string();
    let at_start = |message: String| PolicyError { file: file.clone(), pos: Pos { line: 1, col: 1 }, message };
    let text = read_bytes(path, what).map_err(at_start)?;
    String::from_utf8(text).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
        let col = upto.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        PolicyError { file: file.clone(), pos: Pos { line, col }, message: format!("the {what} is not valid UTF-8") }
    })
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    // stat first: a FIFO or a socket is refused without being opened at all.
    let meta = std::fs::metadata(path).map_err(|e| cannot_open(path, what, &e))?;
    regular(&meta, what)?;
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(|e| cannot_open(path, what, &e))?;
    // The path may have been replaced between the stat and the open: judge what was opened.
    let meta = file.metadata().map_err(|e| format!("cannot read the {what}: {e}"))?;
    regular(&meta, what)?;
    read_limited(file, meta.len(), what)
}

fn read_limited(file: File, len: u64, what: &str) -> Result<Vec<u8>, String> {
    let mut text = Vec::with_capacity(len.min(MAX_FILE_BYTES) as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text).map_err(|e| format!("cannot read the {what}: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(what, text.len() as u64));
    }
    Ok(text)
}

/// A regular file within the size limit.
fn regular(meta: &Metadata, what: &str) -> Result<(), String> {
    if !meta.file_type().is_file() {
        return Err(format!("the {what} is {}, not a regular file; refusing to read it", kind_name(meta.file_type())));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(what, meta.len()));
    }
    Ok(())
}

fn too_large(what: &str, len: u64) -> String {
    format!("the {what} is {len} bytes, over the limit of {MAX_FILE_BYTES} bytes (4 MiB); refusing to read it")
}

/// What a file that is not a regular file is, for messages.
pub fn kind_name(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Why `path` cannot be opened, naming a dangling link's target and a loop of links as such.
pub fn cannot_open(path: &Path, what: &str, e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ELOOP) {
        return format!("cannot read the {what}: its symbolic links form a loop ({e})");
    }
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if e.kind() == io::ErrorKind::NotFound && is_link {
        let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
        return format!("cannot read the {what}: it is a symbolic link to `{target}`, which does not exist (a dangling link)");
    }
    format!("cannot read the {what}: {e}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("guard-policy-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn error(path: &Path) -> String {
        read_text(path, "policy file").unwrap_err().to_string()
    }

    #[test]
    fn links_to_files_are_followed_and_everything_else_is_refused_by_name() {
        let d = scratch("kinds");
        let real = d.join("..2025_01_01/policy.yaml");
        std::fs::create_dir_all(real.parent().unwrap()).unwrap();
        std::fs::write(&real, "mode: audit\n").unwrap();
        // A ConfigMap volume: two levels of links.
        symlink("..2025_01_01", d.join("..data")).unwrap();
        symlink("..data/policy.yaml", d.join("policy.yaml")).unwrap();
        assert_eq!(read_text(&d.join("policy.yaml"), "policy file").unwrap(), "mode: audit\n");

        symlink("missing.yaml", d.join("dangling.yaml")).unwrap();
        let e = error(&d.join("dangling.yaml"));
        assert!(e.ends_with("dangling.yaml:1:1: cannot read the policy file: it is a symbolic link to `missing.yaml`, which does not exist (a dangling link)"), "{e}");
        symlink("loop-b.yaml", d.join("loop-a.yaml")).unwrap();
        symlink("loop-a.yaml", d.join("loop-b.yaml")).unwrap();
        assert!(error(&d.join("loop-a.yaml")).contains("its symbolic links form a loop"));
        assert!(error(&d).contains("the policy file is a directory, not a regular file"));
        let fifo = d.join("fifo.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(error(&fifo).contains("the policy file is a FIFO (named pipe), not a regular file"));
        assert!(error(&d.join("absent.yaml")).contains("cannot read the policy file: No such file or directory"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read() {
        let d = scratch("size");
        let big = d.join("big.yaml");
        // Sparse: 100 MiB that take no disk space, and no memory unless read.
        File::create(&big).unwrap().set_len(100 << 20).unwrap();
        let e = error(&big);
        assert!(e.contains("the policy file is 104857600 bytes, over the limit of 4194304 bytes (4 MiB)"), "{e}");
        File::create(&big).unwrap().set_len(MAX_FILE_BYTES).unwrap();
        // At the limit it is read (NUL bytes are valid UTF-8).
        assert_eq!(read_text(&big, "policy file").unwrap().len() as u64, MAX_FILE_BYTES);
        // A file that grows past the limit while it is read is refused all the same.
        let e = read_limited(File::open("/dev/zero").unwrap(), 0, "policy file").unwrap_err();
        assert!(e.contains(&format!("is {} bytes, over the limit", MAX_FILE_BYTES + 1)), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
