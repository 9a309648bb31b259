//! `guard-agent tail`: live verdicts from the running daemon, one readable line each.
use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    control::{self, Request},
    time::utc,
    verdict::VERDICT_NAMES,
};

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only this agent's verdicts.
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only these verdicts (comma-separated: allowed, denied, killed, held, audited, would-deny,
    /// would-kill, would-hold, evaluated).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = verdict_name)]
    pub verdict: Vec<String>,
    /// Print each verdict's JSON as the daemon emits it.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "PATH", default_value = control::ADMIN_SOCKET)]
    pub socket: PathBuf,
}

fn verdict_name(s: &str) -> Result<String, String> {
    VERDICT_NAMES.contains(&s).then(|| s.to_owned()).ok_or_else(|| format!("unknown verdict `{s}`; known: {}", VERDICT_NAMES.join(", ")))
}

pub fn run(args: &TailArgs) -> anyhow::Result<()> {
    let mut client = control::admin(&args.socket)?;
    client.call(&Request::Tail { agent: args.agent.clone(), verdicts: args.verdict.clone() })?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = std::io::stdout().lock();
    while let Some(line) = client.next_line().context("reading from the daemon")? {
        let v: Value = serde_json::from_str(&line).with_context(|| format!("the daemon sent something that is not JSON: {line}"))?;
        if let Some(n) = v.get("lagged") {
            eprintln!("guard-agent tail: fell behind; {n} verdicts skipped");
            continue;
        }
        // A Detection Finding restates the verdict line before it: raw output has both, the
        // readable one shows each event once.
        if !args.json && v["class_uid"] == 2004 {
            continue;
        }
        let text = if args.json { line } else { render(&v, colour) };
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            // The reader went away (`| head`): done.
            return Ok(());
        }
    }
    anyhow::bail!("the daemon closed the stream (stopped?)")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// One line: time, verdict, agent, pid, what happened, the rule and the reason.
pub fn render(v: &Value, colour: bool) -> String {
    let verdict = str_at(v, "/unmapped/verdict").unwrap_or("?");
    let time = v["time"].as_u64().map_or_else(|| "?".into(), utc);
    let agent = str_at(v, "/unmapped/agent").unwrap_or("-");
    let what = match v["class_uid"].as_u64() {
        Some(1007) => {
            let argv: Vec<&str> = v.pointer("/unmapped/argv").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            let file = str_at(v, "/process/file/path").unwrap_or("?");
            match str_at(v, "/unmapped/operation") {
                Some("moved_out") => format!("moved out to {}", str_at(v, "/unmapped/moved/to").unwrap_or("?")),
                _ if argv.is_empty() => format!("exec {file}"),
                _ => format!("exec {file}: {}", argv.join(" ")),
            }
        }
        Some(4001) => match str_at(v, "/unmapped/operation") {
            Some("socket") => format!("socket {} {}", str_at(v, "/unmapped/socket/family").unwrap_or("?"), str_at(v, "/unmapped/socket/type").unwrap_or("?")),
            op => format!(
                "{} {}:{} {}",
                op.unwrap_or("connect"),
                str_at(v, "/dst_endpoint/ip").unwrap_or("?"),
                v.pointer("/dst_endpoint/port").unwrap_or(&Value::Null),
                str_at(v, "/connection_info/protocol_name").unwrap_or("")
            ),
        },
        Some(6002) => format!("policy {}", str_at(v, "/unmapped/policy/source").unwrap_or("?")),
        Some(1001) => format!("{} {}", str_at(v, "/unmapped/file_op/op").unwrap_or("file"), str_at(v, "/file/path").unwrap_or("?")),
        _ => str_at(v, "/class_name").unwrap_or("?").to_owned(),
    };
    // Everything here may come from the workload (file names, argv, cgroup names): control
    // characters are shown escaped, never sent to the terminal.
    let (what, agent) = (shown(&what), shown(agent));
    let pid = v.pointer("/process/pid").or(v.pointer("/actor/process/pid")).map_or_else(|| "-".to_owned(), Value::to_string);
    let mut line = format!("{time} {:<10} {agent:<14} pid {pid:<7} {what}", paint(verdict, colour));
    if let Some(rule) = str_at(v, "/unmapped/rule/matcher") {
        line.push_str(&format!("  [rule {}]", shown(&clipped(rule, 60))));
    }
    if let Some(reason) = str_at(v, "/unmapped/reason").or(str_at(v, "/unmapped/rule/message")) {
        line.push_str(&format!("  {}", shown(reason)));
    }
    line
}

/// Control characters (a hostile argv's newlines, escapes) are shown, never sent to the terminal.
fn shown(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

/// At most `max` characters, with `…` when cut (the verdict's JSON has the whole text).
fn clipped(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn paint(verdict: &str, colour: bool) -> String {
    let code = match verdict {
        "killed" | "denied" => "1;31",
        "held" | "would-kill" | "would-deny" | "would-hold" => "1;33",
        "audited" => "36",
        _ => "32",
    };
    // Padded before colouring, so columns line up either way.
    let padded = format!("{verdict:<10}");
    if colour { format!("\x1b[{code}m{padded}\x1b[0m") } else { padded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_show_what_happened_and_escape_control_characters() {
        let v = json!({
            "class_uid": 1007, "time": 1_795_255_200_123u64,
            "process": { "pid": 42, "file": { "path": "/usr/bin/shred" } },
            "unmapped": { "verdict": "killed", "agent": "claude", "argv": ["shred", "a\nb"],
                          "rule": { "matcher": "basename shred", "message": "overwrites files" } },
        });
        let line = render(&v, false);
        assert!(line.starts_with("2026-11-21T10:00:00.123Z killed     claude         pid 42      exec /usr/bin/shred: shred a\\nb"), "{line}");
        assert!(line.ends_with("[rule basename shred]  overwrites files"), "{line}");
        assert!(render(&v, true).contains("\x1b[1;31mkilled    \x1b[0m"));
        assert_eq!(clipped("abcdef", 3), "abc…");
        let hostile = json!({ "class_uid": 1007, "time": 0, "process": { "pid": 1, "file": { "path": "/tmp/\u{1b}[2Jx" } },
                              "unmapped": { "verdict": "allowed", "agent": "a\u{7}" } });
        let line = render(&hostile, false);
        assert!(!line.contains('\u{1b}') && !line.contains('\u{7}') && line.contains("/tmp/\\u{1b}[2Jx"), "{line}");
        assert_eq!(clipped("abc", 3), "abc");
        let c = json!({ "class_uid": 4001, "time": 0, "actor": { "process": { "pid": 7 } },
                        "dst_endpoint": { "ip": "10.0.0.1", "port": 443 }, "connection_info": { "protocol_name": "tcp" },
                        "unmapped": { "verdict": "denied", "operation": "connect" } });
        assert!(render(&c, false).contains("pid 7       connect 10.0.0.1:443 tcp"), "{}", render(&c, false));
    }
}
