//! The enforcement tier, chosen at start-up by probing, never assumed (see the design brief's
//! tier table): `lsm` when BPF LSM is active and each of the tier's hooks loads and attaches,
//! `tracepoint` otherwise, with the reason. The capability table says, per capability, which
//! mechanism enforces it on the chosen tier.
use std::{
    ffi::CString,
    fs,
    sync::atomic::{AtomicBool, Ordering},
};

use aya::{EbpfLoader, programs::Lsm};
use guard_common::names;
use serde_json::{Value, json};

use super::OBJECT;

/// Where securityfs lists the active LSMs, in order.
const LSM_LIST: &str = "/sys/kernel/security/lsm";
const SECURITYFS: &str = "/sys/kernel/security";

/// The `lsm` tier's programs and the hooks they attach to.
pub const LSM_PROGRAMS: [(&str, &str); 3] = [
    (names::PROG_LSM_EXEC, "bprm_check_security"),
    (names::PROG_LSM_SOCKET, "socket_create"),
    (names::PROG_LSM_OPEN, "file_open"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Lsm,
    Tracepoint,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lsm => "lsm",
            Self::Tracepoint => "tracepoint",
        }
    }
}

/// The tier of the generation this process enforces with (set once it is loaded). Verdicts
/// carry it.
static LSM: AtomicBool = AtomicBool::new(false);

pub fn set_current(tier: Tier) {
    LSM.store(tier == Tier::Lsm, Ordering::Relaxed);
}

pub fn current() -> Tier {
    if LSM.load(Ordering::Relaxed) { Tier::Lsm } else { Tier::Tracepoint }
}

/// One hook's probe: loaded and attached, or the kernel's answer.
#[derive(Debug, Clone)]
pub struct HookProbe {
    pub program: &'static str,
    pub hook: &'static str,
    pub result: Result<(), String>,
    /// The whole error, with the verifier's log, when it failed.
    pub detail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub tier: Tier,
    /// Why this tier (for `tracepoint`: what the `lsm` tier lacked).
    pub reason: String,
    /// The active LSMs, from securityfs (`None`: unreadable).
    pub lsms: Option<Vec<String>>,
    /// Per hook; empty when BPF LSM is not active (nothing was tried).
    pub hooks: Vec<HookProbe>,
}

/// The active LSMs. securityfs is mounted for the read if it is not (and unmounted after).
fn active_lsms() -> Option<Vec<String>> {
    let parse = |t: String| t.trim().split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if let Ok(t) = fs::read_to_string(LSM_LIST) {
        return Some(parse(t));
    }
    let target = CString::new(SECURITYFS).ok()?;
    let fstype = CString::new("securityfs").ok()?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    if unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } != 0 {
        return None;
    }
    let text = fs::read_to_string(LSM_LIST).ok();
    // SAFETY: as above; we mounted it.
    unsafe { libc::umount(target.as_ptr()) };
    text.map(parse)
}

/// Loads the object once more and loads and attaches each `lsm` tier program, then drops it all
/// (detached). `force` tries even when securityfs does not list `bpf` (for `guard-agent probe`,
/// to show the kernel's answer).
pub fn probe(force: bool, globals: &[(&str, u32)]) -> Probe {
    let lsms = active_lsms();
    let listed = lsms.as_ref().is_some_and(|l| l.iter().any(|m| m == "bpf"));
    let mut hooks = Vec::new();
    if listed || force {
        hooks = probe_hooks(globals);
    }
    let failed = hooks.iter().find(|h| h.result.is_err());
    let (tier, reason) = match (&lsms, listed, failed) {
        (None, _, _) => (Tier::Tracepoint, format!("cannot read {LSM_LIST}: the active LSMs are unknown, so BPF LSM is not used")),
        (Some(l), false, _) => (Tier::Tracepoint, format!("BPF LSM is not active (the kernel's LSMs: {}; boot with lsm=...,bpf to enable it)", l.join(","))),
        (Some(_), true, Some(h)) => (
            Tier::Tracepoint,
            format!("BPF LSM is active but {} (lsm/{}) does not load or attach: {}", h.program, h.hook, h.result.clone().unwrap_err()),
        ),
        (Some(_), true, None) => (Tier::Lsm, "BPF LSM is active and every lsm-tier hook loads and attaches".to_owned()),
    };
    Probe { tier, reason, lsms, hooks }
}

fn probe_hooks(globals: &[(&str, u32)]) -> Vec<HookProbe> {
    let fail_all = |e: String| LSM_PROGRAMS.iter().map(|(program, hook)| HookProbe { program, hook, result: Err(e.clone()), detail: None }).collect();
    let btf = match aya::Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => return fail_all(format!("no kernel BTF: {e}")),
    };
    let mut ebpf = match scratch_object(globals) {
        Ok(e) => e,
        Err(e) => return fail_all(e),
    };
    let mut out = Vec::new();
    for (program, hook) in LSM_PROGRAMS {
        let mut detail = None;
        let mut full = |e: &dyn std::error::Error| {
            let text = error_text(e);
            detail = Some(e.to_string());
            text
        };
        let result = (|| -> Result<(), String> {
            let prog: &mut Lsm = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("the object has no program {program}"))?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            prog.load(hook, &btf).map_err(|e| full(&e))?;
            prog.attach().map_err(|e| full(&e))?;
            Ok(())
        })();
        out.push(HookProbe { program, hook, result, detail });
    }
    // Dropping `ebpf` detaches and unloads what was attached.
    drop(ebpf);
    out
}

/// The object loaded once more for a probe, with `globals` and the smallest ring buffer (nothing
/// runs long enough to use it); dropped, it takes everything attached from it along.
fn scratch_object(globals: &[(&str, u32)]) -> Result<aya::Ebpf, String> {
    let mut loader = EbpfLoader::new();
    for (name, value) in globals {
        loader.override_global(name, value, true);
    }
    loader.map_max_entries(names::EVENTS, 4096 * 16);
    loader.load(OBJECT).map_err(|e| format!("cannot load the eBPF object: {e}"))
}

/// Per program: verified, or the verifier's reason.
pub type Verified = Vec<(String, Result<(), String>)>;

/// Loads (verifies) every program of the other kinds once, with `globals`, attaching none: which
/// of them this kernel's verifier accepts (`guard-agent probe --programs`).
pub fn verify_all(globals: &[(&str, u32)]) -> Verified {
    use aya::programs::Program;
    let mut ebpf = match scratch_object(globals) {
        Ok(e) => e,
        Err(e) => return vec![("object".to_owned(), Err(e))],
    };
    let btf = aya::Btf::from_sys_fs().ok();
    let mut out = Vec::new();
    for (name, prog) in ebpf.programs_mut() {
        let result = match prog {
            Program::TracePoint(p) => p.load().map_err(|e| error_text(&e)),
            Program::RawTracePoint(p) => p.load().map_err(|e| error_text(&e)),
            Program::CgroupSockAddr(p) => p.load().map_err(|e| error_text(&e)),
            Program::CgroupSock(p) => p.load().map_err(|e| error_text(&e)),
            Program::CgroupSkb(p) => p.load().map_err(|e| error_text(&e)),
            Program::BtfTracePoint(p) => match &btf {
                Some(btf) => p.load("sched_process_fork", btf).map_err(|e| error_text(&e)),
                None => Err("no kernel BTF".to_owned()),
            },
            // The lsm tier's, probed (and attached) by `probe`.
            Program::Lsm(_) => continue,
            _ => Err("a program type guard does not load".to_owned()),
        };
        out.push((name.to_owned(), result));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The error and its causes, on one line; a verifier log is cut to its last line (the reason).
fn error_text(e: &dyn std::error::Error) -> String {
    let text = e.to_string();
    if let Some(i) = text.find("Verifier output:") {
        let head = text[..i].trim_end().to_owned();
        let log = &text[i + "Verifier output:".len()..];
        // The last line that says why (the verifier ends with its statistics).
        let stats = ["processed ", "verification time", "stack depth", "BPF program is too large"];
        let why = log.lines().rev().map(str::trim).find(|l| !l.is_empty() && !stats.iter().any(|s| l.starts_with(s)));
        let why = if log.contains("BPF program is too large") { Some("too many instructions to verify (over 1,000,000)") } else { why };
        return match why {
            Some(last) => format!("{head} (verifier: {last})"),
            None => head,
        };
    }
    let mut text = text;
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Per capability, the mechanism that enforces it on `tier` (for `status`, `probe` and the
/// start-up log).
pub fn capabilities(tier: Tier) -> Value {
    let lsm = tier == Tier::Lsm;
    json!([
        { "capability": "exec deny", "mechanism": if lsm {
            "lsm/bprm_check_security: execve fails with EPERM, the caller lives (sched_process_exec still kills a denied name only comm shows)"
        } else {
            "sched_process_exec + bpf_send_signal(SIGKILL): the new image is killed before its first instruction"
        } },
        { "capability": "exec hold", "mechanism": "sched_process_exec + SIGSTOP, and the raw_tracepoint/sys_enter gate (both tiers)" },
        { "capability": "connect/sendmsg deny", "mechanism": "cgroup/connect4|6, sendmsg4|6 at the cgroup v2 root: EPERM (both tiers)" },
        { "capability": "raw and packet sockets", "mechanism": if lsm {
            "lsm/socket_create: EPERM, the caller lives"
        } else {
            "cgroup/sock_create: EPERM for raw inet sockets; sys_enter_socket + SIGKILL for AF_PACKET"
        } },
        { "capability": "sensitive reads", "mechanism": "sys_enter_open* taint, then egress rules (both tiers)" },
        { "capability": "sensitive paths with action: deny", "mechanism": if lsm {
            "lsm/file_open: open fails with EPERM, the caller lives (judged on the opened file's dentry)"
        } else {
            "sys_enter_open* + bpf_send_signal(SIGKILL): the caller dies before it can use the descriptor (judged on the path the call names)"
        } },
        { "capability": "files.protect", "mechanism": "Landlock ruleset applied by `guard-agent launch` (both tiers)" },
        { "capability": "files.delete_budget", "mechanism": "sys_exit_unlink*/rmdir count + SIGKILL or SIGSTOP (both tiers)" },
        { "capability": "exfiltration (byte budgets, taint)", "mechanism": "cgroup_skb egress/ingress drop + SIGKILL (both tiers)" },
    ])
}

/// `probe` as JSON, for `guard-agent probe` and `status`.
pub fn to_json(p: &Probe) -> Value {
    json!({
        "tier": p.tier.name(),
        "reason": p.reason,
        "lsms": p.lsms,
        "hooks": p.hooks.iter().map(|h| json!({
            "program": h.program,
            "hook": format!("lsm/{}", h.hook),
            "ok": h.result.is_ok(),
            "error": h.result.as_ref().err(),
            "detail": h.detail,
        })).collect::<Vec<_>>(),
        "capabilities": capabilities(p.tier),
    })
}
