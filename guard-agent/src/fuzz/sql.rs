//! What a held database client will run is hostile text: its argv, the files it is told to run,
//! its stdin. The statement scanner and the per-client argv planner never panic, a destructive
//! statement found is a piece of the text (clipped), and one planted after a clean prefix is
//! always found.
use super::{Rng, Target, mutate};
use crate::sql::{
    Dialect,
    classify::{self, Client, STATEMENT_MAX},
};

const PIECES: &[&str] = &[
    " ", "\n", ";", "'", "\"", "`", "[", "]", "$$", "$a$", "--", "/*", "*/", "#", "\\", ".", ".read x", ".shell", "\\i f", "\\!", "source ",
    "DROP", "drop", "TABLE", "TRUNCATE", "DELETE", "FROM", "WHERE", "UPDATE", "SET", "SELECT", "INSERT", "INTO", "VALUES", "(", ")", "t",
    "x", "1", "é", "🗑", "\u{0}", "FLUSHALL", "db.t.drop()", "deleteMany({})", "CONFIG SET dir", "-c", "-e", "-f", "-cmd", "-init", "--eval",
    "--file=", "-p", "-h", "--", "-",
];

#[derive(Debug)]
pub struct Input {
    dialect: Dialect,
    text: String,
    /// A statement appended after a clean prefix: it must be found.
    planted: bool,
    argv: Vec<String>,
}

const DIALECTS: [Dialect; 5] = [Dialect::Sql(Client::Psql), Dialect::Sql(Client::Mysql), Dialect::Sql(Client::Sqlite), Dialect::Redis, Dialect::Mongo];

fn piecework(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| match rng.below(10) {
            0 => mutate::awkward(rng),
            1 => {
                let n = 1 + rng.below(16);
                String::from_utf8_lossy(&rng.bytes(n)).into_owned()
            }
            _ => (*rng.pick(PIECES)).to_owned(),
        })
        .collect()
}

fn generate(rng: &mut Rng) -> Input {
    let dialect = *rng.pick(&DIALECTS);
    let planted = matches!(dialect, Dialect::Sql(_)) && rng.chance(1, 3);
    let text = if planted {
        // Clean statements (no quotes, comments or meta-commands left open), then a drop.
        let clean = ["SELECT 1;", "SELECT a FROM t WHERE b = 2;", "INSERT INTO t VALUES (1);", "\n", " "];
        let mut t: String = (0..rng.size(4)).map(|_| *rng.pick(&clean)).collect();
        t.push_str("\nDROP TABLE accounts;");
        t
    } else {
        let n = rng.size(24).min(4096);
        piecework(rng, n)
    };
    let argv = (0..rng.size(4).min(32))
        .map(|_| {
            let n = 1 + rng.below(3);
            piecework(rng, n)
        })
        .collect();
    Input { dialect, text, planted, argv }
}

fn check(input: &Input) {
    let (found, _includes) = classify::scan(input.dialect, &input.text);
    if let Some(f) = &found {
        assert!(f.statement.len() <= STATEMENT_MAX + '…'.len_utf8(), "statement not clipped: {} bytes", f.statement.len());
        if matches!(input.dialect, Dialect::Sql(_)) {
            let body = f.statement.trim_end_matches('…');
            assert!(input.text.contains(body), "the statement {body:?} is not in the text");
        }
    }
    if input.planted {
        let f = found.unwrap_or_else(|| panic!("a DROP after clean statements was missed: {:?}", input.text));
        assert_eq!(f.kind, "DROP TABLE");
    }
    // The planner reads no files: it only says where statements come from.
    let _ = crate::sql::plan_argv(input.dialect, &input.argv);
}

#[test]
fn statements_and_argv() {
    Target { name: "sql::statements_and_argv", generate, check }.run();
}
