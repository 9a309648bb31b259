//! Everything the bench runs besides guard: auditd with execve/connect rules (E), a bpftrace
//! exec one-liner (F), rsyslogd and a Splunk HEC stand-in for the D sinks; installing the
//! Debian packages they come from; `kernel.bpf_stats_enabled`; the lock shared with the tests.
//! Each is stopped or restored on drop, so an error midway leaves nothing behind.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::agent::{free_port, interrupt_and_wait};

/// Installs the Debian packages that are missing (services are not started while installing:
/// the bench starts its own, with its own configuration). Says what it installs.
pub fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    let installed = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "install ok installed")
    };
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("bench: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    super::check_interrupt()?;
    let _policy = NoServiceStarts::new()?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Debian's hook telling maintainer scripts not to start services (exit 101), written only
/// if the machine has none, and removed on drop: after an error, a panic or Ctrl-C too.
struct NoServiceStarts(bool);

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl NoServiceStarts {
    fn new() -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // create_new: never replaces a policy the machine has (also one written meanwhile).
        let file = fs::OpenOptions::new().write(true).create_new(true).mode(0o755).open(POLICY_RC_D);
        match file {
            Ok(mut f) => {
                let guard = Self(true);
                f.write_all(b"#!/bin/sh\n# written by cargo xtask bench while it installs packages\nexit 101\n")
                    .with_context(|| format!("writing {POLICY_RC_D}"))?;
                Ok(guard)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Self(false)),
            Err(e) => Err(e).with_context(|| format!("creating {POLICY_RC_D}")),
        }
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::remove_file(POLICY_RC_D);
        }
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kernel audit state before the bench touched it, restored by [`AuditRestore`]'s drop.
pub struct AuditRestore {
    enabled: Option<String>,
}

impl AuditRestore {
    pub fn save() -> Self {
        let enabled = audit_status("enabled");
        Self { enabled }
    }
}

impl Drop for AuditRestore {
    fn drop(&mut self) {
        if let Some(e) = &self.enabled
            && audit_status("enabled").as_ref() != Some(e)
        {
            let _ = Command::new("auditctl").args(["-e", e]).stdout(Stdio::null()).status();
        }
    }
}

fn audit_status(key: &str) -> Option<String> {
    let out = Command::new("auditctl").arg("-s").output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(|v| v.trim().to_owned()))
}

/// The audit rules of configuration E: every execve/execveat and connect, 64-bit ABI.
const AUDIT_RULES: [&[&str]; 2] = [
    &["always,exit", "-F", "arch=b64", "-S", "execve,execveat", "-k", "guard-bench"],
    &["always,exit", "-F", "arch=b64", "-S", "connect", "-k", "guard-bench"],
];

/// auditd (our own instance with its log in the scratch directory, unless one is already
/// running: then that one) with the E rules loaded.
pub struct Auditd {
    child: Option<Child>,
    pub pid: u32,
    rules: usize,
    /// The kernel's audit `enabled` flag before our own auditd set it, restored when it stops.
    enabled_before: Option<String>,
}

impl Auditd {
    pub fn start(scratch: &Path) -> anyhow::Result<Self> {
        let running = audit_status("pid").and_then(|p| p.parse::<u32>().ok()).filter(|p| *p != 0 && Path::new(&format!("/proc/{p}")).exists());
        let mut a = match running {
            Some(pid) => Self { child: None, pid, rules: 0, enabled_before: None },
            None => {
                let enabled_before = audit_status("enabled");
                let dir = scratch.join("auditd");
                fs::create_dir_all(dir.join("plugins.d"))?;
                let base = fs::read_to_string("/etc/audit/auditd.conf").context("reading /etc/audit/auditd.conf")?;
                let conf: String = base
                    .lines()
                    .map(|l| match l.split('=').next().map(str::trim) {
                        Some("log_file") => format!("log_file = {}/audit.log", dir.display()),
                        Some("plugin_dir") => format!("plugin_dir = {}/plugins.d", dir.display()),
                        Some("log_group") => "log_group = root".to_owned(),
                        Some("space_left") => "space_left = 2".to_owned(),
                        Some("admin_space_left") => "admin_space_left = 1".to_owned(),
                        _ => l.to_owned(),
                    })
                    .map(|l| l + "\n")
                    .collect();
                let conf_path = dir.join("auditd.conf");
                fs::write(&conf_path, conf)?;
                fs::set_permissions(&conf_path, std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
                let child = own_child(Command::new("auditd").arg("-n").arg("-c").arg(&dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()), libc::SIGTERM)
                    .spawn()
                    .context("starting auditd")?;
                let pid = child.id();
                let mut a = Self { child: Some(child), pid, rules: 0, enabled_before };
                let deadline = Instant::now() + Duration::from_secs(15);
                while audit_status("pid").as_deref() != Some(&pid.to_string()) {
                    if let Some(status) = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                        bail!("auditd exited at start ({status})");
                    }
                    if Instant::now() > deadline {
                        bail!("auditd (pid {pid}) did not register with the kernel within 15 s");
                    }
                    thread::sleep(Duration::from_millis(20));
                }
                a
            }
        };
        for rule in AUDIT_RULES {
            output(Command::new("auditctl").arg("-a").args(rule))?;
            a.rules += 1;
        }
        Ok(a)
    }

    /// The machine's own auditd (running before E), not one the bench started.
    pub fn is_system(&self) -> bool {
        self.child.is_none()
    }

    /// auditd and the kernel's audit thread (which formats and queues every record).
    pub fn cpu_secs(&self) -> f64 {
        super::agent::cpu_secs(self.pid) + kthread("kauditd").map_or(0.0, super::agent::cpu_secs)
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        for rule in AUDIT_RULES.iter().take(self.rules) {
            let _ = Command::new("auditctl").arg("-d").args(*rule).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        if let Some(child) = self.child.take() {
            interrupt_and_wait(child, libc::SIGTERM, Duration::from_secs(15));
            // auditd leaves auditing enabled; without an auditd and rules it only costs every
            // system call of every process a check, but restore it all the same.
            if let Some(e) = &self.enabled_before
                && audit_status("enabled").as_ref() != Some(e)
            {
                let _ = Command::new("auditctl").args(["-e", e]).stdout(Stdio::null()).status();
            }
        }
    }
}

/// A child the bench owns: in its own process group (Ctrl-C reaches only the bench, which
/// stops it in order), and sent `on_parent_death` should the bench die without stopping it
/// (SIGKILL), so nothing is left running even then.
pub fn own_child(cmd: &mut Command, on_parent_death: libc::c_int) -> &mut Command {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the child only calls prctl and getppid (async-signal-safe) and allocates nothing.
    unsafe {
        cmd.process_group(0).pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, on_parent_death as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The bench died between fork and prctl: do not start.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

/// The pid of a kernel thread by name.
fn kthread(name: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (fs::read_to_string(e.path().join("comm")).ok()?.trim() == name).then_some(pid)
    })
}

/// The one-liner of configuration F.
pub const BPFTRACE_PROGRAM: &str = r#"tracepoint:sched:sched_process_exec { printf("%d %s\n", pid, str(args->filename)); }"#;

/// bpftrace printing every exec to a file, attached and seen working.
pub struct Bpftrace {
    child: Option<Child>,
    pub pid: u32,
}

impl Bpftrace {
    /// Starts it and waits until an exec of `marker` shows in its output.
    pub fn start(scratch: &Path, marker: &Path) -> anyhow::Result<Self> {
        let out = scratch.join("bpftrace.out");
        // Unbuffered (as on a terminal, a line per exec as it happens); with `-o` bpftrace
        // buffers its file output whatever -B says.
        let child = own_child(
            Command::new("bpftrace")
                .args(["-B", "none", "-e", BPFTRACE_PROGRAM])
                .stdin(Stdio::null())
                // Truncated: a previous run's output holds the marker already.
                .stdout(fs::File::create(&out)?)
                .stderr(Stdio::null()),
            libc::SIGINT,
        )
        .spawn()
        .context("starting bpftrace")?;
        let mut b = Self { pid: child.id(), child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let needle = marker.display().to_string();
        loop {
            let _ = Command::new(marker).status();
            if fs::read_to_string(&out).is_ok_and(|t| t.contains(&needle)) {
                return Ok(b);
            }
            if let Some(status) = b.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("bpftrace exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("bpftrace did not report an exec within 60 s");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// (run time ns, runs) summed over bpftrace's programs, from /proc/PID/fdinfo (kept while
    /// `kernel.bpf_stats_enabled` is 1).
    pub fn program_stats(&self) -> (f64, f64) {
        let mut total = (0.0, 0.0);
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fdinfo", self.pid)) else { return total };
        for fd in fds.flatten() {
            let Ok(info) = fs::read_to_string(fd.path()) else { continue };
            if !info.contains("prog_id:") {
                continue;
            }
            let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
            total.0 += field("run_time_ns:");
            total.1 += field("run_cnt:");
        }
        total
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            interrupt_and_wait(child, libc::SIGINT, Duration::from_secs(15));
        }
    }
}

/// rsyslogd on a loopback TCP port, writing what it receives to a file (as the tests run it).
pub struct Rsyslog {
    child: Option<Child>,
    pub port: u16,
    pub out: PathBuf,
}

impl Rsyslog {
    pub fn start(scratch: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let work = scratch.join("rsyslog");
        fs::create_dir_all(&work)?;
        let out = work.join("received.log");
        let conf = format!(
            "global(workDirectory=\"{w}\" maxMessageSize=\"256k\")\nmodule(load=\"imtcp\")\n\
             ruleset(name=\"guard\") {{ action(type=\"omfile\" file=\"{o}\") }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"guard\")\n",
            w = work.display(),
            o = out.display()
        );
        let conf_path = work.join("rsyslog.conf");
        fs::write(&conf_path, conf)?;
        let child = own_child(
            Command::new("rsyslogd")
                .args(["-n", "-f"])
                .arg(&conf_path)
                .arg("-i")
                .arg(work.join("rsyslogd.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            libc::SIGTERM,
        )
        .spawn()
        .context("starting rsyslogd")?;
        let mut r = Self { child: Some(child), port, out };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("rsyslogd exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("rsyslogd did not listen on 127.0.0.1:{port} within 15 s");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    pub fn lines(&self) -> usize {
        fs::read(&self.out).map(|b| b.iter().filter(|c| **c == b'\n').count()).unwrap_or(0)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            interrupt_and_wait(child, libc::SIGTERM, Duration::from_secs(15));
        }
    }
}

/// A Splunk HEC stand-in: HTTP/1.1 keep-alive on 127.0.0.1, answers every POST with HEC's
/// success reply, and counts requests and body bytes (bodies are not decoded).
pub struct Hec {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Hec {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (stop, requests, bytes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, r, b) = (Arc::clone(&stop), Arc::clone(&requests), Arc::clone(&bytes));
        let acceptor = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, r, b) = (Arc::clone(&s), Arc::clone(&r), Arc::clone(&b));
                        thread::spawn(move || {
                            let _ = serve(conn, &s, &r, &b);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { port, stop, requests, bytes, acceptor: Some(acceptor) })
    }
}

fn serve(conn: TcpStream, stop: &AtomicBool, requests: &AtomicU64, bytes: &AtomicU64) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers (a read timeout while idle just checks for stop).
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        requests.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(length as u64, Ordering::Relaxed);
        let reply = r#"{"text":"Success","code":0}"#;
        write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}", reply.len())?;
    }
}

impl Drop for Hec {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// `kernel.bpf_stats_enabled` set to 1 while this lives, then restored.
pub struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> anyhow::Result<Self> {
        let before = fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?.trim().to_owned();
        fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled")?;
        Ok(Self { before })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.before);
    }
}

/// The lock the privileged tests and the bench share, so they never overlap. Held (flock(2))
/// until dropped; if an ancestor already holds it (`flock /tmp/guard-e2e.lock cargo xtask
/// bench`), that is our lock and the bench goes on under it.
pub struct Lock {
    _file: fs::File,
    /// The command line of the ancestor holding the lock for us, if any.
    pub wrapper: Option<String>,
}

pub const LOCK_PATH: &str = "/tmp/guard-e2e.lock";

impl Lock {
    pub fn take() -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK_PATH).with_context(|| format!("opening {LOCK_PATH}"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Self { _file: file, wrapper: None });
        }
        if let Some(holder) = ancestor_holding(&file) {
            let cmdline = fs::read(format!("/proc/{holder}/cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline.split(|b| *b == 0).filter(|w| !w.is_empty()).map(|w| String::from_utf8_lossy(w).into_owned()).collect();
            return Ok(Self { _file: file, wrapper: Some(words.join(" ")) });
        }
        println!("bench: waiting for {LOCK_PATH} (privileged tests are running)");
        // Polled rather than blocking, so Ctrl-C still ends the wait.
        loop {
            super::check_interrupt()?;
            thread::sleep(Duration::from_millis(200));
            // SAFETY: as above.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: file, wrapper: None });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                bail!("flock {LOCK_PATH}: {e}");
            }
        }
    }
}

/// The pid of one of our ancestors holding a flock on `file`, from /proc/locks.
fn ancestor_holding(file: &fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = file.metadata().ok()?.ino();
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let holders: Vec<u32> = locks
        .lines()
        .filter(|l| l.contains("FLOCK"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END
            let pid = f.get(4)?.parse().ok()?;
            let inode: u64 = f.get(5)?.rsplit(':').next()?.parse().ok()?;
            (inode == ino).then_some(pid)
        })
        .collect();
    let mut pid = std::process::id();
    while pid > 1 {
        if holders.contains(&pid) {
            return Some(pid);
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        pid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
    }
    None
}
