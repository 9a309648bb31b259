//! Where each client takes its statements from, by its command line: inline statements,
//! files to run, and whether it reads statements from stdin. Options that take a value are
//! listed per client so a value is never mistaken for a statement (or a statement for a value);
//! an option guard does not know is taken as a flag.
use super::classify::{Client, Dialect};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (where, text): `argv` statements.
    pub inline: Vec<(String, String)>,
    pub files: Vec<String>,
    pub reads_stdin: bool,
}

struct Spec {
    /// Short options (without `-`) that take a value, attached (`-cSQL`) or next (`-c SQL`).
    short: &'static [char],
    /// Long options (without `--`) that take a value (`--x=V` or `--x V`).
    long: &'static [&'static str],
    /// Single-dash long options that take the next argument (sqlite3's `-cmd X`).
    word: &'static [&'static str],
    /// Short options whose value is only ever attached (mysql's `-pSECRET`; a bare `-p` prompts).
    attached: &'static [char],
}

const PSQL: Spec = Spec {
    short: &[
        'c', 'd', 'f', 'F', 'h', 'L', 'o', 'p', 'P', 'R', 'T', 'U', 'v',
    ],
    long: &[
        "command",
        "dbname",
        "file",
        "field-separator",
        "host",
        "log-file",
        "output",
        "port",
        "pset",
        "record-separator",
        "table-attr",
        "username",
        "set",
        "variable",
    ],
    word: &[],
    attached: &[],
};
const MYSQL: Spec = Spec {
    short: &['e', 'h', 'u', 'P', 'D', 'S', 'O'],
    long: &[
        "execute",
        "host",
        "user",
        "port",
        "database",
        "socket",
        "init-command",
        "default-character-set",
        "defaults-file",
        "defaults-extra-file",
        "login-path",
    ],
    word: &[],
    attached: &['p'],
};
const SQLITE: Spec = Spec {
    short: &[],
    long: &[],
    word: &[
        "cmd",
        "init",
        "separator",
        "newline",
        "nullvalue",
        "vfs",
        "maxsize",
        "mmap",
        "pagecache",
        "lookaside",
        "heap",
        "escape",
        "A",
    ],
    attached: &[],
};
const MONGO: Spec = Spec {
    short: &['f', 'u', 'p'],
    long: &[
        "eval",
        "file",
        "host",
        "port",
        "username",
        "password",
        "authenticationDatabase",
        "tlsCAFile",
    ],
    word: &[],
    attached: &[],
};
const REDIS: Spec = Spec {
    short: &['h', 'p', 's', 'a', 'u', 'n', 'r', 'i', 'd'],
    long: &[
        "user",
        "pass",
        "sni",
        "cacert",
        "cacertdir",
        "cert",
        "key",
        "tls-ciphers",
        "tls-ciphersuites",
    ],
    word: &[],
    attached: &[],
};

/// One parsed option or positional argument.
enum Arg<'a> {
    Opt(&'a str, Option<&'a str>),
    Pos(&'a str),
}

fn parse<'a>(spec: &Spec, args: &'a [String]) -> Result<Vec<Arg<'a>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut options_end = false;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        if options_end || !a.starts_with('-') || a == "-" {
            out.push(Arg::Pos(a));
            continue;
        }
        if a == "--" {
            options_end = true;
            continue;
        }
        let mut value = |name: &'a str| -> Result<&'a str, String> {
            let v = args
                .get(i)
                .ok_or_else(|| format!("option `{name}` has no value"))?;
            i += 1;
            Ok(v.as_str())
        };
        if let Some(w) = a
            .strip_prefix('-')
            .filter(|w| spec.word.contains(w))
            .or_else(|| a.strip_prefix("--").filter(|w| spec.word.contains(w)))
        {
            out.push(Arg::Opt(w, Some(value(a)?)));
        } else if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((k, v)) => out.push(Arg::Opt(k, Some(v))),
                None if spec.long.contains(&long) => out.push(Arg::Opt(long, Some(value(a)?))),
                None => out.push(Arg::Opt(long, None)),
            }
        } else {
            // A cluster of short options; the first that takes a value takes the rest or the next.
            let body = &a[1..];
            for (at, c) in body.char_indices() {
                if spec.attached.contains(&c) {
                    out.push(Arg::Opt(
                        &body[at..at + c.len_utf8()],
                        Some(&body[at + c.len_utf8()..]),
                    ));
                    break;
                }
                if spec.short.contains(&c) {
                    let rest = &body[at + c.len_utf8()..];
                    let name = &body[at..at + c.len_utf8()];
                    out.push(Arg::Opt(
                        name,
                        Some(if rest.is_empty() { value(a)? } else { rest }),
                    ));
                    break;
                }
                out.push(Arg::Opt(&body[at..at + c.len_utf8()], None));
            }
        }
    }
    Ok(out)
}

pub fn plan(dialect: Dialect, args: &[String]) -> Result<Plan, String> {
    let mut p = Plan::default();
    let inline = |p: &mut Plan, v: &str| p.inline.push(("argv".to_owned(), v.to_owned()));
    match dialect {
        Dialect::Sql(Client::Psql) => {
            let mut stdin = true;
            for a in parse(&PSQL, args)? {
                match a {
                    Arg::Opt("c" | "command", Some(v)) => {
                        inline(&mut p, v);
                        stdin = false;
                    }
                    Arg::Opt("f" | "file", Some(v)) => {
                        if v == "-" {
                            p.reads_stdin = true;
                        } else {
                            p.files.push(v.to_owned());
                        }
                        stdin = false;
                    }
                    _ => {}
                }
            }
            p.reads_stdin |= stdin;
        }
        Dialect::Sql(Client::Mysql) => {
            let mut stdin = true;
            for a in parse(&MYSQL, args)? {
                match a {
                    Arg::Opt("e" | "execute", Some(v)) => {
                        inline(&mut p, v);
                        stdin = false;
                    }
                    Arg::Opt("init-command", Some(v)) => inline(&mut p, v),
                    _ => {}
                }
            }
            p.reads_stdin = stdin;
        }
        Dialect::Sql(Client::Sqlite) => {
            let mut positional = 0;
            for a in parse(&SQLITE, args)? {
                match a {
                    Arg::Opt("cmd", Some(v)) => inline(&mut p, v),
                    Arg::Opt("init", Some(v)) => p.files.push(v.to_owned()),
                    Arg::Opt("A", Some(_)) => {
                        return Err("sqlite3 `-A` (archive mode) is not inspected".into());
                    }
                    Arg::Pos(v) => {
                        // The first is the database; every further one is SQL.
                        if positional > 0 {
                            inline(&mut p, v);
                        }
                        positional += 1;
                    }
                    _ => {}
                }
            }
            p.reads_stdin = positional < 2;
        }
        Dialect::Mongo => {
            let mut stdin = true;
            for a in parse(&MONGO, args)? {
                match a {
                    Arg::Opt("eval", Some(v)) => {
                        inline(&mut p, v);
                        stdin = false;
                    }
                    Arg::Opt("f" | "file", Some(v)) => {
                        p.files.push(v.to_owned());
                        stdin = false;
                    }
                    Arg::Pos(v) if v.ends_with(".js") => {
                        p.files.push(v.to_owned());
                        stdin = false;
                    }
                    _ => {}
                }
            }
            p.reads_stdin = stdin;
        }
        Dialect::Redis => {
            let mut words = Vec::new();
            for a in parse(&REDIS, args)? {
                if let Arg::Pos(v) = a {
                    words.push(v);
                }
            }
            if words.is_empty() {
                p.reads_stdin = true;
            } else {
                inline(&mut p, &words.join(" "));
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(d: Dialect, a: &[&str]) -> Plan {
        plan(d, &a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }
    fn inline(p: &Plan) -> Vec<&str> {
        p.inline.iter().map(|(_, t)| t.as_str()).collect()
    }

    #[test]
    fn psql() {
        let d = Dialect::Sql(Client::Psql);
        let p = plan_of(d, &["-h", "db", "-U", "app", "-c", "DROP TABLE t", "prod"]);
        assert_eq!((inline(&p), p.reads_stdin), (vec!["DROP TABLE t"], false));
        let p = plan_of(
            d,
            &["-cSELECT 1", "--file=x.sql", "--command", "TRUNCATE a"],
        );
        assert_eq!(
            (inline(&p), &p.files, p.reads_stdin),
            (
                vec!["SELECT 1", "TRUNCATE a"],
                &vec!["x.sql".to_owned()],
                false
            )
        );
        assert!(plan_of(d, &["-f", "-"]).reads_stdin);
        assert!(plan_of(d, &["prod"]).reads_stdin);
        // `-U` takes `-c` as its value: there is no statement.
        assert_eq!(inline(&plan_of(d, &["-U", "-c"])), Vec::<&str>::new());
        assert!(
            plan(d, &["-c".to_owned()])
                .unwrap_err()
                .contains("no value")
        );
    }

    #[test]
    fn mysql_sqlite_mongo_redis() {
        let p = plan_of(
            Dialect::Sql(Client::Mysql),
            &["-uroot", "-psecret", "-e", "DROP DATABASE x", "shop"],
        );
        assert_eq!(
            (inline(&p), p.reads_stdin),
            (vec!["DROP DATABASE x"], false)
        );
        assert!(plan_of(Dialect::Sql(Client::Mysql), &["shop"]).reads_stdin);
        let s = Dialect::Sql(Client::Sqlite);
        let p = plan_of(
            s,
            &["-cmd", ".timeout 5", "app.db", "DELETE FROM t", "VACUUM"],
        );
        assert_eq!(
            (inline(&p), p.reads_stdin),
            (vec![".timeout 5", "DELETE FROM t", "VACUUM"], false)
        );
        let p = plan_of(s, &["-init", "setup.sql", "-batch", "app.db"]);
        assert_eq!(
            (&p.files, p.reads_stdin),
            (&vec!["setup.sql".to_owned()], true)
        );
        assert!(plan_of(s, &[]).reads_stdin);
        assert!(plan(s, &["-A".into(), "x".into()]).is_err());
        let p = plan_of(Dialect::Mongo, &["mongodb://h/db", "--eval", "db.t.drop()"]);
        assert_eq!((inline(&p), p.reads_stdin), (vec!["db.t.drop()"], false));
        assert_eq!(plan_of(Dialect::Mongo, &["x.js"]).files, ["x.js"]);
        let p = plan_of(
            Dialect::Redis,
            &["-h", "cache", "-n", "2", "FLUSHALL", "ASYNC"],
        );
        assert_eq!((inline(&p), p.reads_stdin), (vec!["FLUSHALL ASYNC"], false));
        assert!(plan_of(Dialect::Redis, &["-h", "cache"]).reads_stdin);
    }
}
