//! `guard-agent policy check|explain`.
use std::{ffi::OsString, path::PathBuf};

use serde_json::json;

use crate::policy::{
    self, ExecAction, Mode, Policy, PolicyError,
    compile::{self, Compiled},
    eval::{self, ExecContext},
};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file or directory: exit 0 if it is valid, else print
    /// `file:line:column: message`. Rules that compile but cannot fire (or fire only in part:
    /// a path that does not exist here, a rule an earlier one hides, an IPv6 prefix holding the
    /// IPv4-mapped block) are printed as `file:line:column: warning: ...`; warnings alone exit 0.
    Check {
        /// The policy file, or directory of `*.yaml` files.
        file: PathBuf,
    },
    /// Say which rule decides a command for an agent, and why — as the daemon would.
    Explain {
        /// The policy file or directory; `@default` for the embedded default policy.
        file: PathBuf,
        /// The agent (by its name in the policy); needed when the policy has several.
        #[arg(long)]
        agent: Option<String>,
        /// The working directory the command runs in (default: the current one).
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// The effective uid it runs as (default: yours).
        #[arg(long)]
        uid: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Explain the `files.protect` rules for this path instead of a command: which rule
        /// protects it, what it denies, and by which mechanism.
        #[arg(long, value_name = "PATH")]
        path: Option<PathBuf>,
        /// The command and its arguments, resolved on PATH like a shell would.
        #[arg(last = true, required_unless_present = "path", value_name = "CMD")]
        command: Vec<OsString>,
    },
}

pub fn run(cmd: PolicyCommand) -> Result<(), PolicyError> {
    match cmd {
        PolicyCommand::Check { file } => {
            let model = policy::load(&file)?;
            let compiled = compile::compile(&model, 0)?;
            // Already `file:line:column: warning: ...`; warnings alone still pass (exit 0).
            for w in &compiled.warnings {
                eprintln!("{w}");
            }
            println!(
                "{}: ok ({} agents, {} rules, sha256 {})",
                file.display(),
                compiled.agents.len(),
                compiled.rules.len(),
                compiled.hash
            );
            for a in &compiled.agents {
                if let Some(line) = delete_budget_line(&compiled, a) {
                    println!("{}: {line}", a.name);
                }
            }
            Ok(())
        }
        PolicyCommand::Explain { file, agent, cwd, uid, json, path, command } => {
            let model = if file.as_os_str() == "@default" { policy::default_policy() } else { policy::load(&file)? };
            if let Some(path) = path {
                let compiled = compile::compile(&model, 0)?;
                let entry = pick_agent(&compiled, &model, agent.as_deref())?;
                return explain_path(entry, &path, json);
            }
            explain(&model, agent.as_deref(), cwd, uid, json, &command)
        }
    }
}

fn usage(message: String) -> PolicyError {
    PolicyError { file: "explain".into(), pos: policy::Pos { line: 1, col: 1 }, message }
}

fn explain(model: &Policy, agent: Option<&str>, cwd: Option<PathBuf>, uid: Option<u32>, as_json: bool, command: &[OsString]) -> Result<(), PolicyError> {
    let compiled: Compiled = compile::compile(model, 0)?;
    let entry = pick_agent(&compiled, model, agent)?;
    let cwd = cwd.or_else(|| std::env::current_dir().ok()).map(|p| p.display().to_string());
    let ctx = context(command, cwd, uid.unwrap_or_else(|| {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    }));
    let mut ctx = ctx;
    // A database client's statements, as far as its command line and files tell (its stdin
    // is known only once it runs).
    if let Some(client) = eval::sql_client(entry, &ctx) {
        ctx.sql = Some(crate::sql::inspect(&client, &ctx.argv, crate::sql::Proc { pid: None, cwd: ctx.cwd.as_deref() }, true));
    }
    let j = eval::evaluate(entry, &ctx);
    let audit = entry.mode == Mode::Audit;
    let verdict = match (j.action, audit) {
        (Some(ExecAction::Kill), false) => "killed",
        (Some(ExecAction::Kill), true) => "would-kill",
        (Some(ExecAction::Hold), false) => "held",
        (Some(ExecAction::Hold), true) => "would-hold",
        (Some(ExecAction::Audit), _) => "audited",
        _ => "allowed",
    };
    // The kernel stops the exec for the daemon when any rule naming this binary needs argv,
    // cwd or uid, or a person; otherwise it decides alone.
    let held = entry.exec.iter().any(|r| eval::binary_matches(r, &ctx) && r.rule.needs_daemon());
    let by = match (j.action, held) {
        (Some(ExecAction::Kill), _) if j.rule.is_some_and(|r| !r.rule.needs_daemon()) => "the kernel, at exec",
        (_, true) => "the daemon, while the process is stopped at exec",
        _ => "the kernel, at exec",
    };
    let rule = compiled.rule(j.rule_id);
    if as_json {
        let out = json!({
            "agent": entry.name,
            "mode": format!("{:?}", entry.mode).to_lowercase(),
            "filename": ctx.filename,
            "argv": ctx.argv,
            "cwd": ctx.cwd,
            "uid": ctx.euid,
            "action": j.action.map(ExecAction::name),
            "verdict": verdict,
            "decided_by": by,
            "rule": rule.map(|r| json!({ "id": r.id, "section": r.section, "matcher": r.matcher, "message": r.message, "location": r.location })),
            "delete_budget": entry.delete_eval.as_ref().map(|b| json!({
                "count": b.count,
                "per_s": b.per.as_secs_f64(),
                "action": b.action.name(),
                "location": compiled.rule(entry.delete_budget.rule_id).map(|r| r.location.clone()),
            })),
            "sql": ctx.sql.as_ref().map(crate::sql::Report::to_json),
            "also_matched": j.matched.iter().filter(|m| m.id != j.rule_id).map(|m| compiled.rule(m.id).map(|r| r.location.clone())).collect::<Vec<_>>(),
        });
        println!("{out}");
        return Ok(());
    }
    println!("agent:    {} ({} mode, {})", entry.name, format!("{:?}", entry.mode).to_lowercase(), model.source);
    println!("command:  {}", ctx.argv.join(" "));
    println!("executes: {}{}", ctx.filename, ctx.exe.as_ref().filter(|e| **e != ctx.filename).map(|e| format!(" (-> {e})")).unwrap_or_default());
    println!("verdict:  {verdict}");
    match rule {
        Some(r) => {
            println!("rule:     {} {} [{}] {}", r.location, r.section, r.action, r.matcher);
            if let Some(m) = &r.message {
                println!("reason:   {m}");
            }
        }
        None => println!("rule:     none matches{}", if entry.allowlist_rule.is_some() { "" } else { " (the agent has no allow list: allowed)" }),
    }
    println!("decided:  by {by}");
    if let Some(line) = delete_budget_line(&compiled, entry) {
        println!("deletes:  {line}");
    }
    if let Some(r) = &ctx.sql {
        println!("sql:      {}", r.summary());
    }
    for m in j.matched.iter().filter(|m| m.id != j.rule_id) {
        if let Some(r) = compiled.rule(m.id) {
            println!("also:     {} {} [{}] {} (outranked)", r.location, r.section, r.action, r.matcher);
        }
    }
    Ok(())
}

fn pick_agent<'c>(compiled: &'c Compiled, model: &Policy, agent: Option<&str>) -> Result<&'c compile::AgentEntry, PolicyError> {
    match agent {
        Some(name) => compiled.agent_named(name).ok_or_else(|| usage(format!("no agent `{name}` in {}; agents: {}", model.source, names(compiled)))),
        None if compiled.agents.len() == 1 => Ok(&compiled.agents[0]),
        None => Err(usage(format!("the policy has several agents; pick one with --agent ({})", names(compiled)))),
    }
}

/// `policy explain F --path P`: the protect rules that cover P (or a directory above a
/// protected path that P is directly in), what they deny, and how.
fn explain_path(entry: &compile::AgentEntry, path: &std::path::Path, as_json: bool) -> Result<(), PolicyError> {
    use crate::policy::files::{OP_DELETE, OP_RENAME, OP_TRUNCATE, OP_WRITE, op_names, rule_above};
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
    let all = OP_DELETE | OP_RENAME | OP_TRUNCATE | OP_WRITE;
    let covering: Vec<_> = entry.files.iter().filter(|r| r.matcher.is_match(&shown)).collect();
    let denied = covering.iter().fold(0, |a, r| a | r.rule.deny);
    // Landlock's own coupling: one right removes an entry, for deletes and renames alike.
    let effective = if denied & (OP_DELETE | OP_RENAME) != 0 { denied | OP_DELETE | OP_RENAME } else { denied };
    let parent = std::path::Path::new(&shown).parent().map_or("/".to_owned(), |p| p.display().to_string());
    let above = if covering.is_empty() { rule_above(&entry.files, &parent, all) } else { None };
    let mechanism = if entry.mode == Mode::Audit {
        "none: audit mode applies no Landlock ruleset".to_owned()
    } else {
        "Landlock, applied by `guard-agent launch` (workloads it did not start are not protected; BPF LSM is not active)".to_owned()
    };
    if as_json {
        let out = json!({
            "agent": entry.name,
            "path": shown,
            "rules": covering.iter().map(|r| json!({ "id": r.rule_id, "matcher": r.rule.shown(), "location": r.location, "deny": op_names(r.rule.deny) })).collect::<Vec<_>>(),
            "denied": op_names(effective),
            "above_protected": above.map(|r| json!({ "directory": parent, "rule": r.rule.shown(), "location": r.location })),
            "mechanism": mechanism,
        });
        println!("{out}");
        return Ok(());
    }
    println!("agent:    {} ({} mode)", entry.name, format!("{:?}", entry.mode).to_lowercase());
    println!("path:     {shown}");
    if covering.is_empty() && above.is_none() {
        println!("rule:     none protects it: every file call on it is left to the file's own permissions");
        return Ok(());
    }
    for r in &covering {
        println!("rule:     {} files.protect {}", r.location, r.rule.shown());
    }
    if let Some(r) = above {
        println!("rule:     none covers it, but it is directly in {parent}, a directory above `{}` ({}):", r.rule.path, r.location);
        println!("          Landlock cannot grant rights on that directory's own entries, so the workload cannot remove, rename or create them there");
    } else {
        println!("denied:   {}", op_names(effective).join(", "));
        if effective != denied {
            println!("          ({} too: Landlock refuses deletes and renames with one right)", op_names(effective & !denied).join(", "));
        }
        if denied & OP_WRITE != 0 {
            println!("          (write also stops truncating and creating entries below it)");
        }
    }
    println!("how:      {mechanism}");
    Ok(())
}

/// What an agent's deletion budget does to any of its commands, or `None` without one.
fn delete_budget_line(c: &Compiled, a: &compile::AgentEntry) -> Option<String> {
    let b = a.delete_eval.as_ref()?;
    let then = match (b.action, a.mode) {
        (_, Mode::Audit) => "reported (audit mode: nothing is stopped)",
        (policy::delete_budget::DeleteAction::Kill, _) => "the deleting process is killed by the kernel, the rest of the workload by the daemon",
        (policy::delete_budget::DeleteAction::Hold, _) => "the deleting process is stopped by the kernel until a person approves",
    };
    let at = c.rule(a.delete_budget.rule_id).map(|r| format!(" ({})", r.location)).unwrap_or_default();
    Some(format!(
        "at most {} unlink/unlinkat/rmdir per {}s per workload, files.delete_budget{at}; past it {then}",
        b.count,
        b.per.as_secs_f64()
    ))
}

fn names(c: &Compiled) -> String {
    c.agents.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The exec as the kernel would see it: the filename the shell would pass to execve (PATH
/// lookup), the file it resolves to, its identity.
fn context(command: &[OsString], cwd: Option<String>, euid: u32) -> ExecContext {
    let argv: Vec<String> = command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let first = argv.first().cloned().unwrap_or_default();
    let filename = if first.contains('/') {
        first.clone()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(&first)).find(|c| c.is_file()))
            .and_then(|c| c.map(|c| c.display().to_string()))
            .unwrap_or_else(|| first.clone())
    };
    let exe = std::fs::canonicalize(&filename).ok().map(|p| p.display().to_string());
    ExecContext { identity: compile::identity(&filename).map(|(d, i, _)| (d, i)), filename, exe, argv, cwd, euid, sql: None }
}
