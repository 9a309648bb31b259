//! What install did, kept for uninstall: the directories it created (so uninstall removes those
//! and never a directory that was there before, like an empty /usr/local/bin), and the SHA-256
//! of each configuration file as installed (so a later install can tell an untouched old default,
//! which it may update, from a file the admin changed, which it keeps — as dpkg does).
//!
//! Kept in /var/lib/guard/install-state, one entry a line:
//! `dir /usr/local/bin` or `conffile <sha256> /etc/guard/guard.yaml` (paths in the target root).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use super::fsops;

const HEADER: &str = "# Written by `guard-agent install`, read by `guard-agent uninstall`: the directories install\n\
                      # created and the configuration files as installed. Deleting it only makes uninstall\n\
                      # leave empty parent directories behind.\n";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Directories install created, as paths in the target (e.g. `/usr/local/bin`).
    pub dirs: BTreeSet<PathBuf>,
    /// Configuration file (path in the target) → SHA-256 of the content install wrote.
    pub conffiles: BTreeMap<PathBuf, String>,
}

impl State {
    /// Reads the state file; an absent file is an empty state (nothing recorded).
    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let Some(bytes) = fsops::read_if_exists(file)? else { return Ok(Self::default()) };
        let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{} is not UTF-8", file.display()))?;
        parse(&text).with_context(|| format!("{} is damaged (delete it and run install again)", file.display()))
    }

    /// Writes the state file (0600), atomically.
    pub fn write(&self, file: &Path) -> anyhow::Result<()> {
        fsops::write_atomic(file, self.render().as_bytes(), 0o600)
    }

    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        for d in &self.dirs {
            out.push_str(&format!("dir {}\n", d.display()));
        }
        for (path, sha) in &self.conffiles {
            out.push_str(&format!("conffile {sha} {}\n", path.display()));
        }
        out
    }

    /// The configuration file is as install left it: uninstall may remove it and a later install
    /// may replace it.
    pub fn untouched(&self, path: &Path, content: &[u8]) -> bool {
        self.conffiles.get(path).is_some_and(|sha| *sha == sha256(content))
    }
}

fn parse(text: &str) -> anyhow::Result<State> {
    let mut state = State::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            parse_entry(line, &mut state).with_context(|| format!("line {}: {line}", n + 1))?;
        }
    }
    Ok(state)
}

fn parse_entry(line: &str, state: &mut State) -> anyhow::Result<()> {
    match line.split_once(' ') {
        Some(("dir", path)) => {
            state.dirs.insert(target_path(path)?);
        }
        Some(("conffile", rest)) => {
            let (sha, path) = rest.split_once(' ').context("expected `conffile SHA256 PATH`")?;
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("`{sha}` is not a SHA-256");
            }
            state.conffiles.insert(target_path(path)?, sha.to_ascii_lowercase());
        }
        _ => bail!("expected `dir PATH` or `conffile SHA256 PATH`"),
    }
    Ok(())
}

/// A path recorded in the state must name something inside the target root: absolute, with no
/// `.` or `..`, and not the root itself.
pub fn target_path(s: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(s);
    let normal = p.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
    if !p.is_absolute() || !normal || p.parent().is_none() {
        bail!("`{s}` is not an absolute path below / without `.` or `..`");
    }
    Ok(p.to_path_buf())
}

pub fn sha256(content: &[u8]) -> String {
    Sha256::digest(content).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage_with_the_line() {
        let mut s = State::default();
        s.dirs.insert("/usr/local/bin".into());
        s.dirs.insert("/etc/guard".into());
        s.conffiles.insert("/etc/guard/guard.yaml".into(), sha256(b"x"));
        assert_eq!(parse(&s.render()).unwrap(), s);
        assert!(s.untouched(Path::new("/etc/guard/guard.yaml"), b"x"));
        assert!(!s.untouched(Path::new("/etc/guard/guard.yaml"), b"y"));
        assert!(!s.untouched(Path::new("/etc/other.yaml"), b"x"));

        for (bad, why) in [
            ("dir usr/local", "not an absolute path"),
            ("dir /usr/../etc", "not an absolute path"),
            ("dir /", "not an absolute path"),
            ("conffile abc /etc/x", "not a SHA-256"),
            ("conffile /etc/x", "expected `conffile SHA256 PATH`"),
            ("file /etc/x", "expected `dir PATH`"),
        ] {
            let err = format!("{:#}", parse(&format!("# ok\ndir /etc\n{bad}\n")).unwrap_err());
            assert!(err.contains("line 3") && err.contains(why), "{bad}: {err}");
        }
    }
}
