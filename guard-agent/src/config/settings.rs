//! What the daemon runs with once flags, the settings file and defaults are combined, and the
//! checks and defaults of single values that both the command line and the settings file use.
//! Here, below `cli/` and `sinks/`, so those import from `config` and never the other way.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::SinkConfig;

/// What the daemon runs with: flags, then the settings file, then defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub admin_socket: PathBuf,
    pub launch_socket: PathBuf,
    pub launch_group: Option<String>,
    pub detach_on_exit: bool,
    pub pin_dir: PathBuf,
    pub ring_buffer_kib: u32,
    pub map_entries: u32,
    pub observe_all_execs: bool,
    /// Where verdicts go; standard output unless the settings file says otherwise.
    pub sinks: Vec<SinkConfig>,
    pub metrics: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub mask_patterns: Vec<String>,
    pub audit_log: Option<crate::config::AuditLogConfig>,
    /// Where container runtimes keep their data (container identity).
    pub containers: crate::container::Roots,
}

impl Settings {
    pub fn load_options(&self) -> crate::loader::Options {
        crate::loader::Options {
            pin_dir: self.pin_dir.clone(),
            ring_buffer_bytes: self.ring_buffer_kib * 1024,
            map_entries: self.map_entries,
            observe_all_execs: self.observe_all_execs,
        }
    }
}

/// The event ring buffer's size when neither the flag nor the settings file gives one.
pub const DEFAULT_RING_BUFFER_KIB: u32 = 1024;

pub fn ring_buffer_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!("{kib} is not a power of two between 4 and {}", 1 << 20));
    }
    Ok(kib)
}

pub fn map_entries(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if n == 0 || n > 1 << 24 {
        return Err(format!("{n} is not between 1 and {}", 1 << 24));
    }
    Ok(n)
}

/// When a file sink starts a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size (0: never by size).
    pub max_bytes: u64,
    /// Rotate a file this old (by its first write; `None`: never by age).
    pub max_age: Option<Duration>,
    /// Rotated files kept (`PATH.1` .. `PATH.keep`).
    pub keep: u32,
}

impl Default for Rotation {
    /// 64 MiB files, 10 kept, no age limit.
    fn default() -> Self {
        Self { max_bytes: 64 << 20, max_age: None, keep: 10 }
    }
}

/// Syslog facilities by name (RFC 5424 §6.2.1).
pub fn facility(name: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp", "ntp",
        "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u8)
}
