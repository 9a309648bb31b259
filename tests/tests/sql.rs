//! Destructive SQL whatever the channel, with the real `sqlite3` on a real database file: the
//! statements come on argv, from a file `.read` names, from a here-document, from a pipe, and
//! from a pipe still being written. The client is held at exec, what it would read is read
//! without being consumed, and a destructive statement kills it before it runs: the database
//! is intact afterwards and the verdict shows the statement, masked.
use std::{path::Path, process::Command};

use guard_tests::{Daemon, TempDir, agent_cmd, field, launch, spawn_launch, unique};
use serde_json::Value;

const SQLITE: &str = "/usr/bin/sqlite3";

fn policy(agent: &str) -> String {
    format!(
        "agents:\n  - name: {agent}\n    exec:\n      deny:\n        - basename: sqlite3\n          sql: destructive\n      hold:\n        - basename: sqlite3\n          sql: uninspectable\n          approve_timeout: 30s\n"
    )
}

/// A database with two rows in `accounts`.
fn database(dir: &TempDir, name: &str) -> String {
    let db = dir.path(name);
    let out = Command::new(SQLITE).arg(&db).arg("CREATE TABLE accounts(id INTEGER, name TEXT); INSERT INTO accounts VALUES (1, 'a'), (2, 'b');").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.to_str().unwrap().to_owned()
}

/// `SELECT count(*) FROM accounts`, run outside any agent.
fn rows(db: &str) -> String {
    let out = Command::new(SQLITE)
        .arg(db)
        .arg("SELECT count(*) FROM accounts;")
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

fn sqlite_exec(v: &Value, db: &str) -> bool {
    v["class_uid"] == 1007
        && field(v, "/process/file/path") == SQLITE
        && field(v, "/process/cmd_line").contains(db)
}

/// Runs `script` with bash as an agent workload; returns what it printed.
fn bash(agent: &str, script: &str) -> String {
    let (_, out) = launch(agent, &["/bin/bash", "-c", script], &[]);
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn destructive_sql_from_argv_files_here_documents_and_pipes_is_killed_before_it_runs() {
    let dir = TempDir::new("sql");
    let agent = unique("sql");
    let daemon = Daemon::start(&dir, &policy(&agent));
    let drop_file = dir.path("drop.sql");
    std::fs::write(&drop_file, "SELECT 1;\nDROP TABLE accounts;\n").unwrap();
    let drop_file = drop_file.to_str().unwrap();

    // (how, script template with DB, the kind found, where from)
    let cases = [
        (
            "argv",
            "sqlite3 DB 'DROP TABLE accounts'",
            "DROP TABLE",
            "argv",
        ),
        (
            ".read",
            &format!("sqlite3 DB '.read {drop_file}'") as &str,
            "DROP TABLE",
            "file ",
        ),
        (
            "-init",
            &format!("sqlite3 -init {drop_file} DB </dev/null"),
            "DROP TABLE",
            "file ",
        ),
        (
            "here-document",
            "sqlite3 DB <<'EOF'\nSELECT 1;\nDELETE FROM accounts;\nEOF",
            "DELETE without WHERE",
            "stdin",
        ),
        (
            "pipe",
            "echo 'DROP TABLE accounts;' | sqlite3 DB",
            "DROP TABLE",
            "stdin (pipe)",
        ),
        (
            "file on stdin",
            &format!("sqlite3 DB < {drop_file}"),
            "DROP TABLE",
            "stdin (file)",
        ),
    ];
    for (i, (how, script, kind, from)) in cases.iter().enumerate() {
        let db = database(&dir, &format!("{i}.db"));
        let out = bash(
            &agent,
            &format!("{}\necho rc=$?", script.replace("DB", &db)),
        );
        assert!(
            out.contains("rc=137"),
            "{how}: sqlite3 was not killed: {out}"
        );
        assert_eq!(rows(&db), "2", "{how}: the database was changed");
        let v = daemon.await_verdict(how, 10, |v| {
            sqlite_exec(v, &db) && field(v, "/unmapped/verdict") == "killed"
        });
        assert_eq!(
            field(&v, "/unmapped/sql/destructive/kind"),
            *kind,
            "{how}: {v:#}"
        );
        assert!(
            field(&v, "/unmapped/sql/destructive/from").starts_with(from),
            "{how}: {v:#}"
        );
        assert!(
            field(&v, "/unmapped/sql/destructive/statement").contains(if *kind == "DROP TABLE" {
                "DROP TABLE accounts"
            } else {
                "DELETE FROM accounts"
            }),
            "{v:#}"
        );
        assert_eq!(field(&v, "/unmapped/rule/section"), "exec.deny");
        assert!(
            field(&v, "/unmapped/reason").starts_with(&format!("destructive SQL ({kind})")),
            "{v:#}"
        );
        // The Detection Finding for the kill names the rule too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let seq = field(&v, "/metadata/sequence");
        while daemon.findings(|f| field(f, "/unmapped/activity_sequence") == seq && field(f, "/unmapped/sql/destructive/kind") == *kind).is_empty() {
            assert!(std::time::Instant::now() < deadline, "{how}: no finding for the kill");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    // A harmless query on a pipe runs, and reads every byte it was given.
    let db = database(&dir, "select.db");
    let out = bash(
        &agent,
        &format!("echo 'SELECT count(*) FROM accounts;' | sqlite3 {db}; echo rc=$?"),
    );
    assert_eq!(out, "2\nrc=0\n");
    let v = daemon.await_verdict("allowed", 10, |v| {
        sqlite_exec(v, &db) && field(v, "/unmapped/verdict") == "allowed"
    });
    assert_eq!(
        v["unmapped"]["sql"]["sources"],
        serde_json::json!(["stdin (pipe)"]),
        "{v:#}"
    );
    assert_eq!(field(&v, "/unmapped/sql/destructive"), "");

    // The statement is masked like everything else in a verdict.
    let db = database(&dir, "mask.db");
    let out = bash(
        &agent,
        &format!(
            "sqlite3 {db} <<'EOF'\nUPDATE accounts SET name = 'AKIAZ7Q3XK5M2W4Y6R8T';\nEOF\necho rc=$?"
        ),
    );
    assert!(out.contains("rc=137"), "{out}");
    let v = daemon.await_verdict("masked", 10, |v| {
        sqlite_exec(v, &db) && field(v, "/unmapped/verdict") == "killed"
    });
    let statement = field(&v, "/unmapped/sql/destructive/statement");
    assert!(
        statement.starts_with("UPDATE accounts SET name = 'AKIA")
            && !statement.contains("Z7Q3XK5M2W4Y6R8T"),
        "{statement}"
    );
    assert_eq!(rows(&db), "2");
    daemon.assert_schema_valid();
    daemon.stop();
}

#[test]
fn a_pipe_still_being_written_is_uninspectable_and_held_for_a_person() {
    let dir = TempDir::new("sql-hold");
    let agent = unique("sql-hold");
    let daemon = Daemon::start(&dir, &policy(&agent));
    let db = database(&dir, "held.db");
    // The writer sends something harmless, then (after the daemon's wait) something that is not.
    let script = format!(
        "(echo 'SELECT 1;'; sleep 4; echo 'DROP TABLE accounts;') | sqlite3 {db}; echo rc=$?"
    );
    let child = spawn_launch(&[], &agent, &["/bin/bash", "-c", &script], &[]);
    let v = daemon.await_verdict("held", 15, |v| {
        sqlite_exec(v, &db) && field(v, "/unmapped/verdict") == "held"
    });
    assert!(
        field(&v, "/unmapped/sql/uninspectable").contains("still open for writing"),
        "{v:#}"
    );
    assert_eq!(field(&v, "/unmapped/rule/section"), "exec.hold");
    let pid: u32 = field(&v, "/process/pid").parse().unwrap();
    guard_tests::process::await_stopped(pid);
    let out = agent_cmd(&["deny", &field(&v, "/unmapped/hold/id")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rc=137"),
        "{out:?}"
    );
    daemon.await_verdict("denied", 10, |v| {
        sqlite_exec(v, &db)
            && field(v, "/unmapped/verdict") == "killed"
            && field(v, "/unmapped/hold/decision") == "denied"
    });
    assert_eq!(rows(&db), "2", "the database was changed");
    daemon.stop();
}

#[test]
fn policy_explain_judges_the_statements_on_the_command_line() {
    let dir = TempDir::new("sql-explain");
    let p = dir.path("p.yaml");
    std::fs::write(&p, policy("a")).unwrap();
    let p = p.to_str().unwrap();
    let explain = |args: &[&str]| {
        let mut a = vec!["policy", "explain", p, "--"];
        a.extend_from_slice(args);
        let out = agent_cmd(&a);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = explain(&["sqlite3", "x.db", "DROP TABLE t"]);
    assert!(
        out.contains("verdict:  killed")
            && out.contains("sql:      destructive SQL (DROP TABLE) from argv: DROP TABLE t"),
        "{out}"
    );
    let out = explain(&["sqlite3", "x.db"]);
    assert!(
        out.contains("verdict:  held") && out.contains("stdin (not known before the command runs)"),
        "{out}"
    );
    let out = explain(&["sqlite3", "x.db", "SELECT 1"]);
    assert!(out.contains("verdict:  allowed"), "{out}");
    assert!(Path::new(SQLITE).exists());
}

#[test]
fn audit_mode_reports_what_it_would_have_stopped_and_stops_nothing() {
    let dir = TempDir::new("sql-audit");
    let agent = unique("sql-audit");
    let daemon = Daemon::start(&dir, &format!("mode: audit\n{}", policy(&agent)));
    let db = database(&dir, "audit.db");
    let out = bash(&agent, &format!("sqlite3 {db} 'DROP TABLE accounts'; echo rc=$?"));
    assert!(out.contains("rc=0"), "audit mode stops nothing: {out}");
    assert!(rows(&db).contains("no such table"), "the statement ran: {}", rows(&db));
    let v = daemon.await_verdict("would-kill", 10, |v| sqlite_exec(v, &db) && field(v, "/unmapped/verdict") == "would-kill");
    assert_eq!(field(&v, "/unmapped/sql/destructive/kind"), "DROP TABLE", "{v:#}");
    assert_eq!(field(&v, "/unmapped/rule/section"), "exec.deny");
    daemon.stop();
}
