//! Destructive SQL whatever the channel: what a held database client (psql, mysql, mariadb,
//! sqlite3, mongosh, redis-cli) is about to run, gathered while the kernel keeps it stopped at
//! exec — statements on its command line, files it is told to run (`-f FILE`, `-init`,
//! `--file`, and files those include with `.read`/`\i`/`source`), and its stdin when it will
//! read statements from there: a regular file (or a here-document bash wrote to one) is read
//! from the client's offset; a pipe is *peeked* with `tee(2)` (nothing consumed) once no process
//! holds its write end any more, so what is buffered is all it will ever get. What cannot be
//! seen whole — a terminal, a socket, a pipe someone still writes to, a file too large — is
//! "uninspectable", which a policy rule can hold or refuse (`sql: uninspectable`).
mod args;
pub mod classify;
mod stdin;

use std::{fs, path::Path};

use classify::Client;
pub use classify::{Dialect, Finding};
use serde_json::{Value, json};

/// Where `argv` says a client takes its statements from (for the fuzz target).
#[cfg(test)]
pub fn plan_argv(dialect: Dialect, argv: &[String]) -> Result<(usize, usize, bool), String> {
    args::plan(dialect, argv).map(|p| (p.inline.len(), p.files.len(), p.reads_stdin))
}

/// At most this much of one file or of stdin is read; more is uninspectable.
pub const READ_MAX: usize = 4 << 20;
/// `.read`/`\i` nesting followed; deeper is uninspectable.
const INCLUDE_DEPTH: usize = 4;

/// The clients guard knows, by executable name.
pub fn dialect(name: &str) -> Option<Dialect> {
    Some(match name {
        "psql" => Dialect::Sql(Client::Psql),
        "mysql" | "mariadb" => Dialect::Sql(Client::Mysql),
        "sqlite3" | "sqlite" => Dialect::Sql(Client::Sqlite),
        "mongosh" | "mongo" => Dialect::Mongo,
        "redis-cli" | "valkey-cli" => Dialect::Redis,
        _ => return None,
    })
}

pub const CLIENTS: [&str; 9] = [
    "psql",
    "mysql",
    "mariadb",
    "sqlite3",
    "sqlite",
    "mongosh",
    "mongo",
    "redis-cli",
    "valkey-cli",
];

/// What was found about one exec of a database client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub client: String,
    /// The first destructive statement, and where it came from (`argv`, `file /x.sql`, `stdin`).
    pub destructive: Option<(Finding, String)>,
    /// Why not everything the client will run could be seen.
    pub uninspectable: Option<String>,
    /// Every place statements were read from.
    pub sources: Vec<String>,
    /// stdin is a pipe these processes still hold open for writing: ask again later.
    pub writers: Vec<u32>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "client": self.client,
            "sources": self.sources,
            "destructive": self.destructive.as_ref().map(|(f, from)| json!({ "kind": f.kind, "statement": f.statement, "from": from })),
            "uninspectable": self.uninspectable,
        })
    }

    /// One line for a verdict's `reason`.
    pub fn summary(&self) -> String {
        match (&self.destructive, &self.uninspectable) {
            (Some((f, from)), _) => {
                format!("destructive SQL ({}) from {from}: {}", f.kind, f.statement)
            }
            (None, Some(why)) => format!("statements cannot all be inspected: {why}"),
            (None, None) => format!(
                "no destructive statement in {}",
                if self.sources.is_empty() {
                    "nothing".into()
                } else {
                    self.sources.join(", ")
                }
            ),
        }
    }
}

/// Where the client runs, for reading what it will read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proc<'a> {
    /// The stopped process; `None` for `policy explain` (files are read from here, stdin is
    /// unknown).
    pub pid: Option<u32>,
    /// Its working directory, for relative file names; `None`: those are unknown.
    pub cwd: Option<&'a str>,
}

/// Inspects what `client` (its executable's name) with `argv` will run.
/// `last_look`: do not report `writers` any more; a pipe still being written is uninspectable.
pub fn inspect(client: &str, argv: &[String], proc: Proc<'_>, last_look: bool) -> Report {
    let mut r = Report {
        client: client.to_owned(),
        ..Report::default()
    };
    let Some(dialect) = dialect(client) else {
        r.uninspectable = Some(format!(
            "guard does not know how `{client}` takes its statements"
        ));
        return r;
    };
    let plan = match args::plan(dialect, argv.get(1..).unwrap_or_default()) {
        Ok(p) => p,
        Err(why) => {
            r.uninspectable = Some(why);
            return r;
        }
    };
    for (from, text) in &plan.inline {
        look(&mut r, dialect, from, text, proc, 0);
    }
    for file in &plan.files {
        read_file(&mut r, dialect, file, proc, 0);
    }
    if plan.reads_stdin && r.destructive.is_none() {
        match proc.pid {
            None => note(&mut r, "stdin (not known before the command runs)".into()),
            Some(pid) => match stdin::read(pid, last_look) {
                stdin::Stdin::Text { text, what } => {
                    look(&mut r, dialect, &format!("stdin ({what})"), &text, proc, 0)
                }
                stdin::Stdin::Writers(pids) => r.writers = pids,
                stdin::Stdin::Unseen(why) => note(&mut r, why),
            },
        }
    }
    r
}

fn note(r: &mut Report, why: String) {
    if r.uninspectable.is_none() {
        r.uninspectable = Some(why);
    }
}

fn look(r: &mut Report, dialect: Dialect, from: &str, text: &str, proc: Proc<'_>, depth: usize) {
    r.sources.push(from.to_owned());
    let (found, includes) = classify::scan(dialect, text);
    if let Some(f) = found
        && r.destructive.is_none()
    {
        r.destructive = Some((f, from.to_owned()));
    }
    for inc in includes {
        if depth + 1 >= INCLUDE_DEPTH {
            note(
                r,
                format!(
                    "`{}` is included more than {INCLUDE_DEPTH} levels deep",
                    inc.0
                ),
            );
        } else {
            read_file(r, dialect, &inc.0, proc, depth + 1);
        }
    }
}

/// A file the client will run, read as the client would see it: through its root, relative to
/// its working directory.
fn read_file(r: &mut Report, dialect: Dialect, name: &str, proc: Proc<'_>, depth: usize) {
    if name == "-" {
        // `-f -`: stdin, handled by the caller's plan.
        return;
    }
    let full = match (name.starts_with('/'), proc.cwd) {
        (true, _) => name.to_owned(),
        (false, Some(cwd)) => format!("{}/{name}", cwd.trim_end_matches('/')),
        (false, None) => return note(r, format!("file `{name}`: its directory is not known")),
    };
    let path = match proc.pid {
        Some(pid) => format!("/proc/{pid}/root{full}"),
        None => full.clone(),
    };
    match read_limited(Path::new(&path)) {
        Ok(text) => look(r, dialect, &format!("file {full}"), &text, proc, depth),
        Err(e) => note(r, format!("file `{full}` cannot be read: {e}")),
    }
}

fn read_limited(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let f = fs::File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(READ_MAX as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > READ_MAX {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            READ_MAX >> 20
        )));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn argv_statements_are_judged_without_a_process() {
        let r = inspect(
            "sqlite3",
            &argv(&["sqlite3", "db.sqlite", "DROP TABLE t"]),
            Proc::default(),
            true,
        );
        let (f, from) = r.destructive.unwrap();
        assert_eq!((f.kind.as_str(), from.as_str()), ("DROP TABLE", "argv"));
        assert_eq!(r.uninspectable, None, "SQL on argv: stdin is not read");
        let r = inspect(
            "psql",
            &argv(&["psql", "-d", "prod", "-c", "select 1"]),
            Proc::default(),
            true,
        );
        assert_eq!((r.destructive, r.uninspectable), (None, None));
        let r = inspect("psql", &argv(&["psql", "prod"]), Proc::default(), true);
        assert!(r.uninspectable.unwrap().contains("stdin"));
        let r = inspect(
            "mysql",
            &argv(&["mysql", "-uroot", "--execute=TRUNCATE logs"]),
            Proc::default(),
            true,
        );
        assert_eq!(r.destructive.unwrap().0.kind, "TRUNCATE");
        let r = inspect(
            "redis-cli",
            &argv(&["redis-cli", "-n", "3", "flushdb"]),
            Proc::default(),
            true,
        );
        assert_eq!(r.destructive.unwrap().0.kind, "FLUSHDB");
        let r = inspect("nc", &argv(&["nc"]), Proc::default(), true);
        assert!(r.uninspectable.unwrap().contains("does not know"));
    }

    #[test]
    fn files_and_their_includes_are_read() {
        let dir = std::env::temp_dir().join(format!("guard-sql-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap().to_owned();
        fs::write(dir.join("a.sql"), format!("SELECT 1;\n.read {d}/b.sql\n")).unwrap();
        fs::write(dir.join("b.sql"), "-- cleanup\nDROP TABLE accounts;\n").unwrap();
        fs::write(dir.join("rel.sql"), ".read b.sql\n").unwrap();
        fs::write(dir.join("loop.sql"), format!(".read {d}/loop.sql\n")).unwrap();
        let read = |f: &str| {
            let mut r = Report::default();
            read_file(
                &mut r,
                Dialect::Sql(Client::Sqlite),
                &format!("{d}/{f}"),
                Proc::default(),
                0,
            );
            r
        };
        let r = read("a.sql");
        let (f, from) = r.destructive.unwrap();
        assert_eq!(
            (f.kind.as_str(), from),
            ("DROP TABLE", format!("file {d}/b.sql"))
        );
        assert_eq!(
            r.sources,
            [format!("file {d}/a.sql"), format!("file {d}/b.sql")]
        );
        // Relative to a working directory nobody knows (no process): uninspectable.
        assert!(read("rel.sql").uninspectable.unwrap().contains("not known"));
        assert!(
            read("loop.sql")
                .uninspectable
                .unwrap()
                .contains("levels deep")
        );
        assert!(
            read("missing.sql")
                .uninspectable
                .unwrap()
                .contains("cannot be read")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
