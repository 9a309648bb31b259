//! `guard-agent launch --agent NAME -- CMD ARGS...`: runs CMD as a tagged agent workload in its
//! own cgroup `<cgroup2>/guard/NAME/<session>`, and removes that cgroup when the workload is gone.
use std::{
    ffi::OsString,
    fs::{self, OpenOptions},
    os::{
        fd::AsRawFd as _,
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::Path,
    process::{Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cgroup, paths};

#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// The agent name: the workload runs in the cgroup guard/NAME/<session>.
    #[arg(long, value_name = "NAME")]
    pub agent: String,
    /// When CMD exits, wait for processes it left behind instead of killing them.
    #[arg(long)]
    pub keep_running: bool,
    /// Run even if no guard enforcement is attached (the workload is then not guarded).
    #[arg(long)]
    pub allow_unguarded: bool,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The child's pid, for the signal forwarder.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs the workload and returns its exit status (the caller mirrors it).
pub fn run(args: LaunchArgs) -> anyhow::Result<ExitStatus> {
    let name = &args.agent;
    if !crate::policy::valid_agent_name(name) {
        bail!("agent name `{name}` may only use letters, digits, `-`, `_` and `.`");
    }
    if !args.allow_unguarded && !enforcement_attached() {
        bail!(
            "no guard enforcement is attached (nothing pinned in {}): start `guard-agent daemon` first, \
             or pass --allow-unguarded to run `{}` unguarded",
            paths::PIN_DIR,
            args.command[0].to_string_lossy()
        );
    }
    let root = paths::cgroup2_root()?;
    let parent = format!("{}/{name}", paths::AGENT_CGROUP_DIR);
    // The agent's directory is never removed by `launch`: a running daemon registered its id,
    // and a new directory would have a new id.
    cgroup::create_all(&root, &parent).with_context(|| format!("creating cgroup {}", root.join(&parent).display()))?;
    let session = session_id()?;
    let dir = root.join(&parent).join(&session);
    fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    let result = run_in(&dir, name, &session, &args);
    let cleanup = finish(&dir, args.keep_running);
    let status = result?;
    cleanup?;
    Ok(status)
}

/// Is a complete generation of programs pinned (by a running or an earlier daemon)?
fn enforcement_attached() -> bool {
    crate::loader::pins::generations(Path::new(paths::PIN_DIR))
        .is_ok_and(|gens| gens.iter().any(|g| g.is_complete(&crate::loader::PROGRAMS)))
}

fn run_in(dir: &Path, name: &str, session: &str, args: &LaunchArgs) -> anyhow::Result<ExitStatus> {
    let procs = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .with_context(|| format!("opening {}/cgroup.procs", dir.display()))?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]).env("GUARD_AGENT", name).env("GUARD_SESSION", session);
    // SAFETY: the closure runs in the child between fork and exec and only calls write(2), which
    // is async-signal-safe. Writing "0" to cgroup.procs moves the writing process; if it fails
    // the exec does not happen (spawn returns the error): a workload never runs untagged.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("running {}", args.command[0].to_string_lossy()))?;
    drop(procs);
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    // SAFETY: installs handlers that only call kill(2) (forward), or ignores signals. SIGINT and
    // SIGQUIT from a terminal already reach the child (same process group), so the launcher
    // ignores them rather than deliver them twice.
    unsafe {
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait().context("waiting for the workload")?;
    CHILD.store(0, Ordering::Relaxed);
    Ok(status)
}

/// Ends what the workload left behind (or waits for it) and removes the session cgroup.
fn finish(dir: &Path, keep_running: bool) -> anyhow::Result<()> {
    if !keep_running {
        // cgroup.kill (Linux 5.14+) SIGKILLs every process in the cgroup and below.
        if let Err(e) = fs::write(dir.join("cgroup.kill"), "1") {
            tracing::warn!(error = %e, "cannot kill leftover workload processes");
        }
    }
    let deadline = (!keep_running).then(|| Instant::now() + Duration::from_secs(10));
    loop {
        match cgroup::is_empty(dir) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}/cgroup.events", dir.display())),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            bail!("workload processes remain in {} after the kill; cgroup left in place", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_dir_retrying(dir)
}

/// Removes the session cgroup and any cgroups the workload made below it, deepest first. A
/// cgroup can report `populated 0` a moment before rmdir stops returning EBUSY.
fn remove_dir_retrying(dir: &Path) -> anyhow::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_dir_retrying(&entry.path())?;
            }
        }
    }
    let mut last = None;
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(last.map_or_else(|| anyhow::anyhow!("unknown error"), anyhow::Error::from))
        .with_context(|| format!("removing cgroup {}", dir.display()))
}

fn session_id() -> anyhow::Result<String> {
    let mut buf = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("reading /dev/urandom for a session id")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Exits the way the workload did: the same code, or death by the same signal.
pub fn mirror(status: ExitStatus) -> ! {
    if let Some(sig) = status.signal() {
        // SAFETY: restores the default action for `sig`, unblocks it and raises it on ourselves.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(status.code().unwrap_or(1));
}
