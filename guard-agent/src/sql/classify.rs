//! Which statements destroy data: a small lexer that knows SQL's comments and quoting (so a
//! `DROP` inside a string or a comment is not one), a splitter on top-level `;`, and per
//! statement the keywords that destroy. Deliberately conservative: a statement that *might*
//! destroy (an `UPDATE` or `DELETE` without `WHERE`, any `DROP` or `TRUNCATE`) counts, because
//! the cost of a false alarm is a person's look at a held command, and the cost of a miss is a
//! database.

/// How a client takes its statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQL (psql, mysql, mariadb, sqlite3), with the client's own meta-commands.
    Sql(Client),
    /// Redis commands, one per line or as argv.
    Redis,
    /// MongoDB shell JavaScript.
    Mongo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Psql,
    Mysql,
    Sqlite,
}

/// A destructive statement found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What makes it destructive, e.g. `DROP TABLE`, `DELETE without WHERE`.
    pub kind: String,
    /// The statement as written (trimmed, at most [`STATEMENT_MAX`] bytes).
    pub statement: String,
}

/// How much of a statement a verdict carries.
pub const STATEMENT_MAX: usize = 512;

/// A file a meta-command (`.read F`, `\i F`, `source F`) asks the client to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include(pub String);

/// The first destructive statement of `text`, and the files it includes.
pub fn scan(dialect: Dialect, text: &str) -> (Option<Finding>, Vec<Include>) {
    match dialect {
        Dialect::Sql(client) => scan_sql(client, text),
        Dialect::Redis => (scan_redis(text), Vec::new()),
        Dialect::Mongo => (scan_mongo(text), Vec::new()),
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= STATEMENT_MAX {
        return s.to_owned();
    }
    let mut end = STATEMENT_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One statement: its text and its top-level words, upper-cased.
struct Statement<'a> {
    text: &'a str,
    words: Vec<String>,
}

/// Splits SQL into statements on top-level `;`, and meta-command lines (a line starting with
/// `.` for sqlite3, `\` for psql, `source`/`\.` for mysql) into their own statements.
fn statements(client: Client, text: &str) -> (Vec<Statement<'_>>, Vec<&str>) {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut meta = Vec::new();
    let mut start = 0;
    let mut words = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        if line_start && words.is_empty() {
            // Meta-commands are lines of their own, outside statements.
            let rest = &text[i..];
            let trimmed = rest.trim_start_matches([' ', '\t']);
            let lead = rest.len() - trimmed.len();
            let is_meta = match client {
                Client::Sqlite => trimmed.starts_with('.'),
                Client::Psql => trimmed.starts_with('\\'),
                Client::Mysql => {
                    trimmed.starts_with("\\.")
                        || trimmed
                            .get(..7)
                            .is_some_and(|w| w.eq_ignore_ascii_case("source "))
                }
            };
            if is_meta {
                let end = rest.find('\n').map_or(text.len(), |n| i + n);
                meta.push(text[i + lead..end].trim());
                i = end;
                start = i;
                continue;
            }
        }
        line_start = false;
        match c {
            b'\n' => {
                line_start = true;
                i += 1;
            }
            b';' => {
                out.push(Statement {
                    text: &text[start..i],
                    words: std::mem::take(&mut words),
                });
                i += 1;
                start = i;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_to_eol(b, i),
            b'#' if client == Client::Mysql => i = skip_to_eol(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            }
            b'\'' | b'"' | b'`' => i = skip_quoted(b, i, c),
            b'[' if client == Client::Sqlite => {
                i = text[i..].find(']').map_or(b.len(), |n| i + n + 1)
            }
            b'$' if client == Client::Psql => i = skip_dollar(text, i),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = b[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$'))
                    .map_or(b.len(), |n| i + n);
                words.push(text[i..end].to_ascii_uppercase());
                i = end;
            }
            _ => i += 1,
        }
    }
    if !text[start..].trim().is_empty() {
        out.push(Statement {
            text: &text[start..],
            words,
        });
    }
    (out, meta)
}

fn skip_to_eol(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|c| *c == b'\n')
        .map_or(b.len(), |n| i + n)
}

/// Past a quoted string or identifier; a doubled quote or a backslash escapes.
fn skip_quoted(b: &[u8], mut i: usize, q: u8) -> usize {
    i += 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
        } else if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Past a PostgreSQL dollar-quoted string (`$$...$$`, `$tag$...$tag$`); a lone `$` is a char.
fn skip_dollar(text: &str, i: usize) -> usize {
    let rest = &text[i + 1..];
    let Some(close) = rest.find('$') else {
        return i + 1;
    };
    let tag = &rest[..close];
    if !tag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return i + 1;
    }
    let delim = format!("${tag}$");
    let body = i + 1 + close + 1;
    text[body..]
        .find(&delim)
        .map_or(text.len(), |n| body + n + delim.len())
}

/// Why a statement destroys data, if it does.
fn destructive(words: &[String]) -> Option<String> {
    let has = |w: &str| words.iter().any(|x| x == w);
    let after = |w: &str| {
        words
            .iter()
            .position(|x| x == w)
            .and_then(|i| words.get(i + 1))
            .cloned()
    };
    if has("DROP") {
        return Some(match after("DROP") {
            Some(obj) => format!("DROP {obj}"),
            None => "DROP".to_owned(),
        });
    }
    if has("TRUNCATE") {
        return Some("TRUNCATE".to_owned());
    }
    for verb in ["DELETE", "UPDATE"] {
        if has(verb) && !has("WHERE") {
            return Some(format!("{verb} without WHERE"));
        }
    }
    // `REPLACE INTO` and `INSERT OR REPLACE` overwrite rows; `ALTER ... RENAME` moves them out
    // of sight but keeps them: neither is counted.
    None
}

fn scan_sql(client: Client, text: &str) -> (Option<Finding>, Vec<Include>) {
    let (stmts, meta) = statements(client, text);
    let mut includes = Vec::new();
    let mut found = None;
    for m in meta {
        let (cmd, arg) = m
            .split_once(char::is_whitespace)
            .map_or((m, ""), |(c, a)| (c, a.trim()));
        let arg = arg.trim_matches(['\'', '"', ';']).to_owned();
        let (include, shell, destroys) = match client {
            Client::Sqlite => (
                cmd == ".read",
                matches!(cmd, ".shell" | ".system"),
                matches!(cmd, ".restore" | ".recover"),
            ),
            Client::Psql => (
                matches!(cmd, "\\i" | "\\ir" | "\\include" | "\\include_relative"),
                cmd.starts_with("\\!"),
                false,
            ),
            Client::Mysql => (
                cmd == "\\." || cmd.eq_ignore_ascii_case("source"),
                cmd == "\\!" || cmd.eq_ignore_ascii_case("system"),
                false,
            ),
        };
        if include && !arg.is_empty() {
            includes.push(Include(arg));
        } else if (shell || destroys) && found.is_none() {
            let kind = if shell {
                format!("{cmd} (runs a shell command)")
            } else {
                cmd.to_owned()
            };
            found = Some(Finding {
                kind,
                statement: clip(m),
            });
        }
    }
    if found.is_none() {
        found = stmts.iter().find_map(|s| {
            destructive(&s.words).map(|kind| Finding {
                kind,
                statement: clip(s.text),
            })
        });
    }
    (found, includes)
}

/// `FLUSHALL`, `FLUSHDB` (every key of one or all databases), `SWAPDB`, `SHUTDOWN` (without
/// SAVE may lose writes), `DEBUG`, `CONFIG SET dir|dbfilename` (writes files anywhere).
fn scan_redis(text: &str) -> Option<Finding> {
    for line in text.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches(['"', '\'']).to_ascii_uppercase())
            .collect();
        let kind = match words.first().map(String::as_str) {
            Some(w @ ("FLUSHALL" | "FLUSHDB" | "SWAPDB" | "SHUTDOWN" | "DEBUG")) => w.to_owned(),
            Some("CONFIG")
                if words.get(1).is_some_and(|w| w == "SET")
                    && words
                        .get(2)
                        .is_some_and(|w| w == "DIR" || w == "DBFILENAME") =>
            {
                format!("CONFIG SET {}", words[2])
            }
            _ => continue,
        };
        return Some(Finding {
            kind,
            statement: clip(line),
        });
    }
    None
}

/// Collection and database drops, and deletes that match every document.
fn scan_mongo(text: &str) -> Option<Finding> {
    let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    const CALLS: [&str; 6] = [
        ".dropDatabase(",
        ".drop(",
        ".dropCollection(",
        ".deleteMany({})",
        ".remove({})",
        ".dropIndexes(",
    ];
    let (at, call) = CALLS
        .iter()
        .filter_map(|c| squeezed.find(c).map(|at| (at, *c)))
        .min()?;
    // The statement: back to the previous `;` or newline-free start.
    let start = squeezed[..at].rfind(';').map_or(0, |n| n + 1);
    let end = squeezed[at..].find(';').map_or(squeezed.len(), |n| at + n);
    let kind = call
        .trim_start_matches('.')
        .trim_end_matches('(')
        .to_owned();
    Some(Finding {
        kind,
        statement: clip(&squeezed[start..end]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(client: Client, text: &str) -> Option<String> {
        scan(Dialect::Sql(client), text).0.map(|f| f.kind)
    }

    #[test]
    fn destructive_statements_are_found_and_harmless_ones_are_not() {
        let s = |t| sql(Client::Sqlite, t);
        assert_eq!(s("DROP TABLE users;").as_deref(), Some("DROP TABLE"));
        assert_eq!(
            s("select 1; drop schema public cascade").as_deref(),
            Some("DROP SCHEMA")
        );
        assert_eq!(s("DELETE FROM t").as_deref(), Some("DELETE without WHERE"));
        assert_eq!(s("delete from t where id = 3"), None);
        assert_eq!(
            s("UPDATE t SET a = 1").as_deref(),
            Some("UPDATE without WHERE")
        );
        assert_eq!(s("update t set a = 1 where id = 2;"), None);
        assert_eq!(s("TRUNCATE t;").as_deref(), Some("TRUNCATE"));
        assert_eq!(
            s("ALTER TABLE t DROP COLUMN c").as_deref(),
            Some("DROP COLUMN")
        );
        assert_eq!(s("SELECT * FROM t; INSERT INTO t VALUES (1);"), None);
        assert_eq!(s(""), None);
    }

    #[test]
    fn quotes_and_comments_hide_nothing_and_invent_nothing() {
        let s = |t| sql(Client::Sqlite, t);
        assert_eq!(s("SELECT 'DROP TABLE t; --';"), None);
        assert_eq!(s("SELECT \"drop\" FROM t;"), None);
        assert_eq!(s("-- DROP TABLE t\nSELECT 1;"), None);
        assert_eq!(s("/* DROP TABLE t; */ SELECT 1;"), None);
        assert_eq!(
            s("SELECT 'it''s'; DROP TABLE t").as_deref(),
            Some("DROP TABLE")
        );
        assert_eq!(s("SELECT 1 /* unterminated DROP"), None);
        assert_eq!(s("SELECT [drop] FROM t"), None);
        assert_eq!(
            sql(
                Client::Psql,
                "SELECT $$ DROP TABLE x $$; SELECT $f$ drop $f$;"
            ),
            None
        );
        assert_eq!(
            sql(Client::Psql, "DO $$ BEGIN END $$; DROP DATABASE prod;").as_deref(),
            Some("DROP DATABASE")
        );
        assert_eq!(sql(Client::Mysql, "# DROP TABLE t\nSELECT 1;"), None);
        // The statement is reported as written, trimmed.
        let (f, _) = scan(
            Dialect::Sql(Client::Sqlite),
            "  SELECT 1;\n  DROP TABLE  accounts ;",
        );
        assert_eq!(f.unwrap().statement, "DROP TABLE  accounts");
    }

    #[test]
    fn meta_commands_include_files_or_count_as_destructive() {
        let (f, inc) = scan(
            Dialect::Sql(Client::Sqlite),
            ".read /tmp/x.sql\n.tables\nSELECT 1;",
        );
        assert_eq!((f, inc), (None, vec![Include("/tmp/x.sql".into())]));
        let (f, _) = scan(Dialect::Sql(Client::Sqlite), ".shell rm -rf /srv\n");
        assert_eq!(f.unwrap().kind, ".shell (runs a shell command)");
        let (f, _) = scan(Dialect::Sql(Client::Sqlite), ".restore backup.db");
        assert_eq!(f.unwrap().kind, ".restore");
        let (_, inc) = scan(Dialect::Sql(Client::Psql), "\\i 'drop.sql'\n");
        assert_eq!(inc, vec![Include("drop.sql".into())]);
        let (_, inc) = scan(Dialect::Sql(Client::Mysql), "SOURCE /x.sql;\n");
        assert_eq!(inc, vec![Include("/x.sql".into())]);
        // A `.` inside a statement is not a meta-command.
        assert_eq!(sql(Client::Sqlite, "SELECT a\n.b FROM t;"), None);
    }

    #[test]
    fn redis_and_mongo() {
        assert_eq!(
            scan(Dialect::Redis, "GET a\nflushall\n").0.unwrap().kind,
            "FLUSHALL"
        );
        assert_eq!(
            scan(Dialect::Redis, "CONFIG SET dir /etc").0.unwrap().kind,
            "CONFIG SET DIR"
        );
        assert_eq!(scan(Dialect::Redis, "SET a b\nDEL a"), (None, vec![]));
        assert_eq!(
            scan(Dialect::Mongo, "db.users.drop()").0.unwrap().kind,
            "drop"
        );
        assert_eq!(
            scan(Dialect::Mongo, "db.getSiblingDB('x').dropDatabase();")
                .0
                .unwrap()
                .kind,
            "dropDatabase"
        );
        assert_eq!(
            scan(Dialect::Mongo, "db.t.deleteMany( { } )")
                .0
                .unwrap()
                .kind,
            "deleteMany({})"
        );
        assert_eq!(scan(Dialect::Mongo, "db.t.deleteMany({a: 1})").0, None);
    }

    #[test]
    fn hostile_input_never_panics_and_long_statements_are_clipped() {
        for t in [
            "'",
            "\"",
            "$",
            "$a",
            "$a$",
            "/*",
            "--",
            "[",
            "\\",
            ".",
            "é'é",
            "DROP",
            ";;;;",
            "$$\u{1F600}",
        ] {
            for c in [Client::Psql, Client::Mysql, Client::Sqlite] {
                let _ = scan(Dialect::Sql(c), t);
            }
            let _ = scan(Dialect::Redis, t);
            let _ = scan(Dialect::Mongo, t);
        }
        let long = format!("DROP TABLE {}", "é".repeat(1000));
        let f = scan(Dialect::Sql(Client::Sqlite), &long).0.unwrap();
        assert!(f.statement.len() <= STATEMENT_MAX + '…'.len_utf8() && f.statement.ends_with('…'));
    }
}
