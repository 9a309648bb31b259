//! `guard-agent verdicts`: work with verdict lines offline.
//!
//! `guard-agent verdicts ecs` reads OCSF JSON lines (a verdict file, `guard-agent tail --json`,
//! the daemon's stdout) on standard input and prints one ECS JSON line per OCSF object on
//! standard output, for Elastic:
//!
//! ```sh
//! guard-agent verdicts ecs < /var/log/guard/verdicts.jsonl > verdicts.ecs.jsonl
//! guard-agent tail --json | guard-agent verdicts ecs
//! ```
//!
//! Empty lines are skipped. A line that is not a JSON object with a known guard `class_uid`
//! (1001, 1007, 4001, 6002, 2004) is reported on standard error with its line number and skipped;
//! the exit status is then 1, after every line was read.

use anyhow::Context as _;
use serde_json::Value;

#[derive(Debug, clap::Subcommand)]
pub enum VerdictsCommand {
    /// Read OCSF verdict lines on stdin, print their ECS projection (one JSON line each).
    Ecs,
}

/// The OCSF classes guard emits.
const CLASSES: [u64; 5] = [1001, 1007, 4001, 6002, 2004];

pub fn run(cmd: &VerdictsCommand) -> anyhow::Result<()> {
    match cmd {
        VerdictsCommand::Ecs => {
            let stdin = std::io::stdin().lock();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let skipped = ecs(stdin, &mut out, &mut std::io::stderr())?;
            if skipped > 0 {
                anyhow::bail!("{skipped} line(s) were not guard verdicts and were skipped");
            }
            Ok(())
        }
    }
}

/// Projects every line of `input` to `out`; says what it skipped on `errors`. Returns how many
/// lines it skipped. A reader that went away (`| head`) ends it quietly.
fn ecs(input: impl std::io::BufRead, out: &mut impl std::io::Write, errors: &mut impl std::io::Write) -> anyhow::Result<usize> {
    let mut skipped = 0;
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line.context("reading standard input")?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let problem = match serde_json::from_str::<Value>(text) {
            Ok(v) => match v.get("class_uid").and_then(Value::as_u64) {
                Some(c) if CLASSES.contains(&c) => {
                    let doc = crate::ecs::project(&v);
                    if writeln!(out, "{doc}").is_err() {
                        return Ok(skipped);
                    }
                    None
                }
                Some(c) => Some(format!("class_uid {c} is not one guard emits")),
                None => Some("not an OCSF object (no numeric class_uid)".to_owned()),
            },
            Err(e) => Some(format!("not JSON: {e}")),
        };
        if let Some(p) = problem {
            skipped += 1;
            let _ = writeln!(errors, "guard-agent verdicts ecs: line {}: {p}", n + 1);
        }
    }
    if out.flush().is_err() {
        return Ok(skipped);
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_good_lines_and_reports_the_rest() {
        let input = concat!(
            r#"{"class_uid":1007,"time":0,"process":{"pid":5,"file":{"path":"/bin/true"}},"unmapped":{"verdict":"allowed","argv":["true"]}}"#,
            "\n\n",
            "not json\n",
            r#"{"class_uid":3002}"#,
            "\n",
            r#"[1,2]"#,
            "\n",
            r#"{"class_uid":4001,"dst_endpoint":{"ip":"::1","port":22},"unmapped":{"verdict":"denied","operation":"connect"}}"#,
            "\n\u{ff}\u{fe}\n",
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let skipped = ecs(input.as_bytes(), &mut out, &mut err).unwrap();
        let out = String::from_utf8(out).unwrap();
        let docs: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(docs.len(), 2, "{out}");
        assert_eq!(docs[0]["event"]["action"], "exec");
        assert_eq!(docs[0]["process"]["executable"], "/bin/true");
        assert_eq!(docs[1]["event"]["action"], "connection_attempted");
        assert_eq!(docs[1]["destination"]["port"], 22);
        let err = String::from_utf8(err).unwrap();
        assert_eq!(skipped, 4, "{err}");
        assert!(err.contains("line 3: not JSON"), "{err}");
        assert!(err.contains("line 4: class_uid 3002 is not one guard emits"), "{err}");
        assert!(err.contains("line 5: not an OCSF object"), "{err}");
        assert!(err.contains("line 7: not JSON"), "{err}");
    }
}
