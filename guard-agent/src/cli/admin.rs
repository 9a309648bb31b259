//! `guard-agent status | approve ID | deny ID | reload`: requests to the running daemon over its
//! admin socket (root only).
use std::path::PathBuf;

use serde_json::Value;

use crate::control::{self, Request};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the daemon's JSON answer.
    #[arg(long)]
    pub json: bool,
    /// The daemon's admin socket.
    #[arg(long, value_name = "PATH", default_value = control::ADMIN_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Print the probe as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also load (verify, not attach) every other program, to see which this kernel accepts.
    #[arg(long)]
    pub programs: bool,
}

#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    /// The hold's id (from the `held` verdict or `guard-agent status`).
    pub id: u64,
    #[arg(long, value_name = "PATH", default_value = control::ADMIN_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    #[arg(long, value_name = "PATH", default_value = control::ADMIN_SOCKET)]
    pub socket: PathBuf,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let v = control::admin(&args.socket)?.call(&Request::Status {})?;
    if args.json {
        println!("{v}");
        return Ok(());
    }
    print!("{}", render_status(&v));
    Ok(())
}

/// `guard-agent probe`: what the loader would choose here, from the same probe it runs at start.
/// Each BPF LSM hook is loaded and attached even if securityfs does not list `bpf`, to show the
/// kernel's answer. Needs root (CAP_BPF, CAP_SYS_ADMIN for BPF LSM).
pub fn probe(args: &ProbeArgs) -> anyhow::Result<()> {
    let p = crate::loader::probe()?;
    let mut v = crate::loader::tier::to_json(&p);
    v["kernel"] = Value::from(std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim());
    v["btf"] = Value::from(std::path::Path::new(crate::paths::VMLINUX_BTF).exists());
    if args.programs {
        let all = crate::loader::verify_programs(p.tier)?;
        v["programs"] = all.iter().map(|(name, r)| serde_json::json!({ "program": name, "ok": r.is_ok(), "error": r.as_ref().err() })).collect();
    }
    let text = if args.json { format!("{v}\n") } else { render_probe(&v) };
    // Written at once; a closed pipe (`| head`) ends it quietly.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(())
}

fn render_probe(v: &Value) -> String {
    let mut out = vec![format!("kernel:      {} (BTF {})", s(&v["kernel"]), if v["btf"] == true { "present" } else { "missing" })];
    let lsms: Vec<String> = v["lsms"].as_array().into_iter().flatten().map(s).collect();
    out.push(format!("active LSMs: {}", if lsms.is_empty() { "unknown".to_owned() } else { lsms.join(",") }));
    for h in v["hooks"].as_array().into_iter().flatten() {
        let result = if h["ok"] == true { "loads and attaches".to_owned() } else { format!("fails: {}", s(&h["error"])) };
        out.push(format!("  {:<26} {result}", s(&h["hook"])));
    }
    out.push(format!("tier:        {} ({})", s(&v["tier"]), s(&v["reason"])));
    for p in v["programs"].as_array().into_iter().flatten() {
        out.push(format!("  program {:<24} {}", s(&p["program"]), if p["ok"] == true { "verified".to_owned() } else { format!("REFUSED: {}", s(&p["error"])) }));
    }
    for c in v["capabilities"].as_array().into_iter().flatten() {
        out.push(format!("  {:<36} {}", s(&c["capability"]), s(&c["mechanism"])));
    }
    out.join("\n") + "\n"
}

pub fn decide(args: &HoldArgs, approve: bool) -> anyhow::Result<()> {
    let request = if approve { Request::Approve { id: args.id } } else { Request::Deny { id: args.id } };
    let v = control::admin(&args.socket)?.call(&request)?;
    let argv: Vec<&str> = v["argv"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    println!("hold {}: {} (pid {}: {})", args.id, v["decision"].as_str().unwrap_or("?"), v["pid"], argv.join(" "));
    Ok(())
}

pub fn reload(args: &ReloadArgs) -> anyhow::Result<()> {
    let v = control::admin(&args.socket)?.call(&Request::Reload {})?;
    println!("reloaded: policy {}", v["policy_hash"].as_str().unwrap_or("?"));
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The human-readable status.
pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("enforcement: {} tier ({})", s(&v["tier"]), s(&v["tier_reason"])));
    for c in v["capabilities"].as_array().into_iter().flatten() {
        line(format!("  {:<36} {}", s(&c["capability"]), s(&c["mechanism"])));
    }
    let programs: Vec<String> = v["programs"].as_array().into_iter().flatten().map(s).collect();
    line(format!("programs:    {} attached, pinned at {}", programs.len(), s(&v["pinned"])));
    line(format!("             {}", programs.join(" ")));
    let p = &v["policy"];
    line(format!("policy:      {} (sha256 {}), {} reloads, {} failed", s(&p["source"]), s(&p["hash"]), p["reloads"], p["reload_failures"]));
    for a in p["agents"].as_array().into_iter().flatten() {
        let m: Vec<String> = a["match"].as_array().into_iter().flatten().map(s).collect();
        line(format!("  agent {} [{}]: {} exec rules; matches {}", s(&a["name"]), s(&a["mode"]), a["exec_rules"], m.join(", ")));
        for r in a["files_protect"].as_array().into_iter().flatten() {
            line(format!("    files.protect {} ({}): {}; BPF LSM: {}", s(&r["rule"]), s(&r["location"]), s(&r["landlock"]), s(&r["lsm"])));
            if !r["unprotected"].is_null() {
                line(format!("      unprotected: {}", s(&r["unprotected"])));
            }
        }
    }
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    line(format!("sessions:    {}", sessions.len()));
    for x in &sessions {
        let labels: Vec<String> = x["labels"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", s(v))).collect();
        line(format!("  {} agent {} user {} (uid {}) {} {}", s(&x["id"]), s(&x["agent"]), s(&x["user"]), x["uid"], s(&x["cgroup"]), labels.join(" ")));
    }
    let holds = v["holds"].as_array().cloned().unwrap_or_default();
    line(format!("holds:       {} pending", holds.len()));
    for h in &holds {
        let argv: Vec<String> = h["argv"].as_array().into_iter().flatten().map(s).collect();
        line(format!(
            "  #{} pid {} agent {}: {} (rule {}; waiting {}s, denied in {}s) -> guard-agent approve {} | deny {}",
            h["id"], h["pid"], s(&h["agent"]), argv.join(" "), s(&h["rule"]), h["waiting_s"], h["expires_in_s"], h["id"], h["id"]
        ));
    }
    let c = &v["counters"];
    let pairs = |m: &Value| -> String {
        let items: Vec<String> = m.as_object().into_iter().flatten().map(|(k, n)| format!("{k} {n}")).collect();
        if items.is_empty() { "none".into() } else { items.join(", ") }
    };
    line(format!("events:      {}", pairs(&c["events"])));
    line(format!("verdicts:    {}", pairs(&c["verdicts"])));
    let drops: Vec<String> = c["ring_buffer_drops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| match d["dropped"].as_u64() {
            Some(n) if n > 0 => format!("{} {n} ({} reported)", s(&d["kind"]), d["reported"]),
            _ => format!("{} {}", s(&d["kind"]), d["dropped"]),
        })
        .collect();
    line(format!("drops:       {}; undecodable {}; process table {}", drops.join(", "), c["undecodable_events"], c["process_table"]));
    for k in v["sinks"].as_array().into_iter().flatten() {
        let health = if k["healthy"] == Value::Bool(true) { "ok" } else { "FAILING" };
        let error = k["error"].as_str().map(|e| format!("; {} failed writes, now: {e}", k["write_errors"])).unwrap_or_default();
        let queue = match k["queue_dropped"].as_u64() {
            Some(n) if n > 0 => format!(", {n} dropped by a writer too far behind"),
            _ => String::new(),
        };
        line(format!("sink:        {} {health}: {} sent, {} failed, backlog {}, dropped {}{queue}{error}", s(&k["name"]), k["sent"], k["failed"], k["backlog"], k["dropped"]));
    }
    let a = &v["audit_log"];
    if a.is_object() {
        let health = if a["healthy"] == Value::Bool(true) { "ok" } else { "FAILING" };
        let error = a["error"].as_str().map(|e| format!(", now: {e}")).unwrap_or_default();
        line(format!(
            "audit log:   {} {health}: next seq {}, {} verdicts not written ({} not yet in a gap record), {} gap records, {} failed writes{error}",
            s(&a["dir"]), a["next_seq"], a["lost"], a["unrecorded"], a["gaps"], a["write_failures"]
        ));
    }
    let d = &v["daemon"];
    let watchdog = d["watchdog_s"].as_f64().map_or("off".to_owned(), |w| format!("{w}s"));
    line(format!(
        "daemon:      pid {} v{}, config {}, metrics {}, systemd notify {}, watchdog {watchdog}, {} tail(s)",
        d["pid"], s(&d["version"]), s(&d["config"]), s(&d["metrics"]), d["systemd_notify"], d["tails"]
    ));
    out
}
