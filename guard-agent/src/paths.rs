//! Every path guard uses: mounts it needs, where agent cgroups live, default files.
use std::{
    fs,
    path::{Path, PathBuf},
};

/// Where agent workloads started by `guard-agent launch` live, relative to the cgroup v2 root.
pub const AGENT_CGROUP_DIR: &str = "guard";
/// tracefs mount points, in order of preference.
pub const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// Where pinned programs, links and maps live (see `loader::pins`).
pub const PIN_DIR: &str = "/sys/fs/bpf/guard";
/// Held (flock) by the running daemon: one daemon manages the pinned state at a time.
pub const DAEMON_LOCK: &str = "/run/guard/daemon.lock";

/// The running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    #[error("no cgroup v2 (cgroup2) filesystem is mounted; guard needs one")]
    NoCgroup2,
    #[error("tracefs is not mounted (mount it with `mount -t tracefs tracefs /sys/kernel/tracing`)")]
    NoTracefs,
}

/// One line of `/proc/self/mountinfo`, the fields guard cares about.
struct Mount {
    mount_point: PathBuf,
    fs_type: String,
}

fn mounts() -> Result<Vec<Mount>, MountError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// field 5 is the mount point (octal-escaped), the first field after `-` is the type.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let fs_type = fields.skip_while(|f| *f != "-").nth(1)?;
    Some(Mount { mount_point: PathBuf::from(unescape_octal(mount_point)), fs_type: fs_type.to_owned() })
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount point (`/sys/fs/cgroup` on most hosts, `/sys/fs/cgroup/unified` on hybrid
/// ones). The first cgroup2 mount wins.
pub fn cgroup2_root() -> Result<PathBuf, MountError> {
    mounts()?.into_iter().find(|m| m.fs_type == "cgroup2").map(|m| m.mount_point).ok_or(MountError::NoCgroup2)
}

/// The tracefs mount point, if tracefs is mounted at one of the usual places.
pub fn tracefs() -> Result<PathBuf, MountError> {
    TRACEFS.iter().map(Path::new).find(|p| p.join("events").is_dir()).map(Path::to_path_buf).ok_or(MountError::NoTracefs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw").unwrap();
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.fs_type, "cgroup2");
        let m = parse_mountinfo_line("1 2 0:1 / /mnt/a\\040b rw shared:1 master:2 - ext4 /dev/x rw").unwrap();
        assert_eq!(m.mount_point, Path::new("/mnt/a b"));
        assert_eq!(m.fs_type, "ext4");
        assert!(parse_mountinfo_line("garbage").is_none());
    }
}
