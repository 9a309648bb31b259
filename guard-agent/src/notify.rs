//! The systemd notification protocol (`sd_notify`), for `Type=notify` and `WatchdogSec=`:
//! datagrams of `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`.
//!
//! `READY=1` goes out only once programs are attached and the policy is in the maps;
//! `WATCHDOG=1` only from the event loop, so a stalled consumer stops them and systemd restarts
//! the daemon (enforcement stays pinned meanwhile).
use std::{
    os::unix::{
        ffi::OsStrExt as _,
        net::{SocketAddr, UnixDatagram},
    },
    time::{Duration, Instant},
};

pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Half the watchdog timeout systemd asked for, if it asked.
    watchdog_every: Option<Duration>,
    last_ping: Instant,
}

impl Notifier {
    /// From the environment systemd sets; a no-op when not run by systemd. The variables are
    /// removed so nothing the daemon starts inherits them.
    pub fn from_env() -> Self {
        let requested = std::env::var_os("NOTIFY_SOCKET").is_some();
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = address(path.as_encoded_bytes())?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()).is_none_or(|p| p == std::process::id());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        // SAFETY: called once at start, before the runtime starts other threads that could
        // read the environment.
        unsafe {
            for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
                std::env::remove_var(k);
            }
        }
        if socket.is_none() && requested {
            tracing::warn!("NOTIFY_SOCKET is set but unusable; systemd will not hear from the daemon");
        }
        Self { socket, watchdog_every, last_ping: Instant::now() }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_every
    }

    pub fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(error = %e, "cannot notify systemd");
            }
        }
    }

    /// Programs attached, policy in the maps, sockets bound.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()));
    }

    /// Called from the event loop on every tick; pings when half the timeout has passed.
    pub fn tick(&mut self) {
        let Some(every) = self.watchdog_every else { return };
        if self.last_ping.elapsed() >= every {
            self.send("WATCHDOG=1");
            self.last_ping = Instant::now();
        }
    }

    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

/// `/path` or `@abstract`.
fn address(bytes: &[u8]) -> Option<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    match bytes.first()? {
        b'@' => SocketAddr::from_abstract_name(&bytes[1..]).ok(),
        b'/' => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(bytes)).ok(),
        _ => None,
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(address(b"/run/systemd/notify").and_then(|a| a.as_pathname().map(|p| p.to_owned())).is_some());
        assert!(address(b"@abstract").is_some());
        assert!(address(b"relative").is_none());
        assert!(address(b"").is_none());
    }
}
