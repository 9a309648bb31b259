//! The Ed25519 key that signs checkpoints: made once at install, kept root-only; its public half
//! is printed and written beside it so an auditor can check checkpoints without the secret.
//!
//! Files: the secret is 64 lowercase hex digits and a newline (mode 0600), the public key the
//! same in `<path>.pub` (mode 0644). `load_key` also takes 32 raw bytes. A key is named by its
//! key id: the first 16 hex digits of SHA-256 over the 32 public key bytes.
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::record::{hex, unhex32};

/// The key id of a public key: short enough to print, long enough not to collide by chance.
pub fn key_id(key: &VerifyingKey) -> String {
    hex(&Sha256::digest(key.as_bytes())[..8])
}

/// Makes a new key at `path` (refusing to replace one) and its `.pub` beside it; returns the
/// public key in hex.
pub fn create_key(path: &Path) -> anyhow::Result<String> {
    write_new_key(path, false)
}

/// Like [`create_key`]; with `force`, an existing key at `path` is replaced (every checkpoint it
/// signed can then only be checked with its old public key).
pub fn write_new_key(path: &Path, force: bool) -> anyhow::Result<String> {
    let key = SigningKey::from_bytes(&random_secret()?);
    let public = hex(key.verifying_key().as_bytes());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if force {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {}", path.display())),
            _ => {}
        }
    }
    write_file(path, format!("{}\n", hex(key.as_bytes())).as_bytes(), 0o600).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => anyhow::anyhow!("{} exists; not replacing a key (use --force to)", path.display()),
        _ => anyhow::Error::from(e).context(format!("writing {}", path.display())),
    })?;
    let pub_path = pub_path(path);
    let _ = fs::remove_file(&pub_path);
    write_file(&pub_path, format!("{public}\n").as_bytes(), 0o644).with_context(|| format!("writing {}", pub_path.display()))?;
    Ok(public)
}

/// Where the public half of the key at `path` is written.
pub fn pub_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Creates `path` (never over an existing file, never through a symlink) with `mode`, writes
/// `data` and syncs it, so a key is never half-written or readable by others even briefly.
fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// 32 bytes from the kernel's CSPRNG. `getrandom(2)` blocks until the pool is seeded, which
/// matters when a key is made early at first boot; /dev/urandom is the fallback.
fn random_secret() -> anyhow::Result<[u8; 32]> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into `buf` from `filled` on.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSYS) => {
                io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut buf)?;
                return Ok(buf);
            }
            _ => return Err(e).context("getrandom"),
        }
    }
    Ok(buf)
}

/// Reads a secret key written by [`create_key`] (hex) or 32 raw bytes.
pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let data = fs::read(path).with_context(|| format!("reading the audit key {}", path.display()))?;
    if fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(key = %path.display(), "the audit key is readable by others: anyone who reads it can forge checkpoints");
    }
    let secret = key_bytes(&data).with_context(|| format!("{} is not an audit key (64 hex digits or 32 bytes)", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// A public key given as hex on the command line, or as a file holding it (a `.pub` file).
pub fn parse_public(arg: &str) -> anyhow::Result<VerifyingKey> {
    let bytes = match unhex32(arg.trim().as_bytes()) {
        Some(b) => b,
        None => {
            let data = fs::read(arg).with_context(|| format!("{arg:?} is neither 64 hex digits nor a readable public key file"))?;
            key_bytes(&data).with_context(|| format!("{arg} does not hold a public key (64 hex digits)"))?
        }
    };
    VerifyingKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{arg}: not a valid Ed25519 public key: {e}"))
}

/// 64 hex digits (surrounding whitespace allowed) or exactly 32 raw bytes.
fn key_bytes(data: &[u8]) -> anyhow::Result<[u8; 32]> {
    if let Some(k) = unhex32(data.trim_ascii()) {
        return Ok(k);
    }
    match <[u8; 32]>::try_from(data) {
        Ok(k) => Ok(k),
        Err(_) => bail!("{} bytes", data.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_loads_back_and_is_not_replaced_without_force() {
        let dir = std::env::temp_dir().join(format!("guard-audit-key-{}", std::process::id()));
        let path = dir.join("sub/audit.key");
        let public = create_key(&path).unwrap();
        let key = load_key(&path).unwrap();
        assert_eq!(hex(key.verifying_key().as_bytes()), public);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(parse_public(pub_path(&path).to_str().unwrap()).unwrap(), key.verifying_key());
        assert_eq!(parse_public(&public).unwrap(), key.verifying_key());
        assert!(create_key(&path).unwrap_err().to_string().contains("exists"));
        let again = write_new_key(&path, true).unwrap();
        assert_ne!(again, public);
        fs::write(&path, b"not a key").unwrap();
        assert!(load_key(&path).is_err());
        assert!(parse_public("zz").is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
