//! `guard-agent launch --agent NAME [--label k=v]... -- CMD ARGS...`: runs CMD as a tagged agent
//! workload. The daemon (over its launch socket) creates the session cgroup
//! `<cgroup2>/guard/NAME/<session>`, root-owned, and moves this process into it before CMD is
//! started, so there is no moment the workload runs unpoliced, and a non-root workload cannot
//! move itself out. When CMD exits, the daemon moves the launcher back out, kills what the
//! workload left behind (unless --keep-running) and removes the cgroup.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::{Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
};

use anyhow::{Context as _, bail};

use crate::control::{self, Request};

#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// The agent name: the workload runs in the cgroup guard/NAME/<session>.
    #[arg(long, value_name = "NAME")]
    pub agent: String,
    /// A label carried by every verdict of the session (e.g. principal=alice@example.com);
    /// repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
    /// When CMD exits, leave processes it left behind running instead of killing them (the
    /// session's cgroup is removed once they are gone).
    #[arg(long)]
    pub keep_running: bool,
    /// If the daemon is not running, run CMD anyway, unguarded (not tagged, not policed).
    #[arg(long)]
    pub allow_unguarded: bool,
    /// The daemon's launch socket.
    #[arg(long, value_name = "PATH", default_value = control::LAUNCH_SOCKET)]
    pub socket: PathBuf,
    /// The command to run, and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

fn label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
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
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    crate::sessions::check_labels(&labels).map_err(anyhow::Error::msg)?;
    let mut client = match control::Client::connect(&args.socket) {
        Ok(c) => c,
        Err(e) if args.allow_unguarded => {
            eprintln!(
                "guard-agent: warning: cannot reach the guard daemon ({}: {e}); running `{}` UNGUARDED as asked",
                args.socket.display(),
                args.command[0].to_string_lossy()
            );
            return spawn_and_wait(&args, None, None);
        }
        Err(e) => bail!(
            "cannot reach the guard daemon at {}: {e}. Start `guard-agent daemon` first, or pass \
             --allow-unguarded to run `{}` unguarded",
            args.socket.display(),
            args.command[0].to_string_lossy()
        ),
    };
    let request = Request::Launch {
        agent: name.clone(),
        labels,
        command: args.command.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        keep_running: args.keep_running,
    };
    let response = client.call(&request).context("the daemon refused the launch")?;
    let session = response.get("session").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
    let cgroup = response.get("cgroup").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
    // Belt and braces: never start the workload unless we really are in the session cgroup.
    let mine = crate::sessions::own_cgroup(std::process::id()).unwrap_or_default();
    if mine != cgroup {
        bail!("the daemon answered but this process is in cgroup {mine}, not {cgroup}; not starting the workload");
    }
    // Protected paths: a Landlock ruleset made here, applied to the child before CMD runs. A
    // policy that protects paths the kernel cannot protect stops the launch (fail closed).
    let ruleset = match protect_ruleset(&response) {
        Ok(r) => r,
        Err(e) => {
            let _ = client.call(&Request::End {});
            bail!("{e}; not starting the workload");
        }
    };
    let status = spawn_and_wait(&args, Some(&session), ruleset.as_ref());
    // Ending the session moves us out first, then kills leftovers: we live to report.
    if let Err(e) = client.call(&Request::End {}) {
        eprintln!("guard-agent: warning: ending session {session}: {e:#}");
    }
    status
}

/// The Landlock ruleset for the agent's `files.protect` rules the daemon sent, if it has any.
fn protect_ruleset(response: &serde_json::Value) -> anyhow::Result<Option<crate::landlock::Ruleset>> {
    let Some(rules) = response.get("files_protect").and_then(|r| r.as_array()).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let mut roots = Vec::new();
    let mut notes = Vec::new();
    for r in rules {
        let path = r.get("path").and_then(|p| p.as_str()).unwrap_or_default();
        let location = r.get("location").and_then(|p| p.as_str()).unwrap_or_default();
        let ops = r.get("deny").and_then(|d| d.as_array()).into_iter().flatten().filter_map(|o| o.as_str()).fold(0u8, |a, name| {
            a | crate::policy::files::OPS.iter().find(|(_, n)| *n == name).map_or(0, |(b, _)| *b)
        });
        let found = crate::landlock::expand(path);
        if found.is_empty() {
            notes.push(format!("protected path {path} ({location}) matches nothing now: its wildcards are expanded at launch, so nothing is protected for it"));
        }
        roots.extend(found.into_iter().map(|p| (p, ops)));
    }
    let ruleset = crate::landlock::Ruleset::build(&roots, &mut notes)
        .map_err(|e| anyhow::anyhow!("the agent's files.protect rules cannot be enforced: {e}"))?;
    for (_, ops) in &roots {
        if let Some(m) = crate::landlock::missing(*ops, ruleset.abi) {
            notes.push(format!("Landlock ABI {} of this kernel: {m}", ruleset.abi));
        }
    }
    notes.sort();
    notes.dedup();
    for n in notes {
        eprintln!("guard-agent: note: {n}");
    }
    Ok(Some(ruleset))
}

fn spawn_and_wait(args: &LaunchArgs, session: Option<&str>, ruleset: Option<&crate::landlock::Ruleset>) -> anyhow::Result<ExitStatus> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]).env("GUARD_AGENT", &args.agent);
    if let Some(s) = session {
        cmd.env("GUARD_SESSION", s);
    }
    if let Some(fd) = ruleset.map(crate::landlock::Ruleset::fd) {
        // SAFETY: runs in the child between fork and exec, and only makes async-signal-safe
        // system calls (landlock_restrict_self, prctl) on a descriptor the parent keeps open.
        unsafe { cmd.pre_exec(move || crate::landlock::restrict_self(fd)) };
    }
    let mut child = cmd.spawn().with_context(|| format!("running {}", args.command[0].to_string_lossy()))?;
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
