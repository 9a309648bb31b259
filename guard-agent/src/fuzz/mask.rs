//! The masker sees hostile argv: whatever an agent runs. Masking never panics, masking twice
//! gives what masking once gave, and a token of a known format standing as its own argument
//! never survives into the verdict.
use std::sync::LazyLock;

use serde_json::{Value, json};

use super::{Rng, Target, mutate};
use crate::mask::Masker;

static MASKER: LazyLock<Masker> = LazyLock::new(Masker::default);

const PIECES: &[&str] = &[
    " ", "-p", "-u", "-b", "-H", "-c", "--", "=", ":", "@", "://", "/", "'", "\"", "\\", ";", "&&", "|", "$(", ")", "`", "password", "token",
    "secret", "key", "api_key", "x", "é", "🔑", "\u{0}", "\u{7f}", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----",
    "-----BEGIN", "Bearer ", "Authorization: ", "Cookie: ", "mysql", "sshpass", "bash", "sh", "ssh", "curl", "git", "docker", "sqlplus",
    "psql", "PGPASSWORD=", "GITHUB_TOKEN=", "https://", "http://user:", "?token=", "&", ",", "***", "%2F", "--password", "--password=",
    "--token", "scott/tiger@db", "bob:pa55", "eyJ", ".", "sk-", "AKIA",
];

/// A token of a known format whose secret part must be masked wherever it stands alone.
fn token(rng: &mut Rng) -> (String, String) {
    let alnum = |rng: &mut Rng, n: usize| -> String {
        (0..n).map(|_| char::from(*rng.pick(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))).collect()
    };
    let (prefix, secret) = match rng.below(3) {
        0 => ("ghp_", alnum(rng, 36)),
        1 => ("AKIA", alnum(rng, 16).to_ascii_uppercase()),
        _ => ("glpat-", alnum(rng, 20)),
    };
    (format!("{prefix}{secret}"), secret)
}

#[derive(Debug)]
pub struct Input {
    argv: Vec<String>,
    /// Tokens planted as whole arguments, and their secret parts.
    planted: Vec<(String, String)>,
}

fn generate(rng: &mut Rng) -> Input {
    let mut argv = Vec::new();
    let mut planted = Vec::new();
    // Up to about 64 KiB in all: what a held process's /proc cmdline may carry and more
    // than the kernel's record does (ARGV_LEN).
    for _ in 0..rng.size(8).min(64) {
        let arg = match rng.below(8) {
            0 => {
                let (t, secret) = token(rng);
                planted.push((t.clone(), secret));
                t
            }
            1 => {
                let n = rng.size(40).min(1024);
                String::from_utf8_lossy(&rng.bytes(n)).into_owned()
            }
            2 => mutate::awkward(rng),
            _ => (0..1 + rng.below(8)).map(|_| *rng.pick(PIECES)).collect(),
        };
        argv.push(arg);
    }
    Input { argv, planted }
}

fn check(input: &Input) {
    let m = &*MASKER;
    let line = input.argv.join(" ");
    let once = m.mask_str(&line).into_owned();
    assert_eq!(m.mask_str(&once), once, "mask_str is not idempotent");
    let mut argv = input.argv.clone();
    m.mask_argv(&mut argv);
    assert_eq!(argv.len(), input.argv.len(), "masking changed the number of arguments");
    let mut again = argv.clone();
    m.mask_argv(&mut again);
    assert_eq!(again, argv, "mask_argv is not idempotent");
    let mut v = json!({ "process": { "cmd_line": line }, "unmapped": { "argv": input.argv } });
    m.mask_value(&mut v);
    let mut twice = v.clone();
    m.mask_value(&mut twice);
    assert_eq!(twice, v, "mask_value is not idempotent");
    let Some(Value::Array(masked)) = v.pointer("/unmapped/argv") else { panic!("argv is gone: {v}") };
    for (orig, out) in input.argv.iter().zip(masked) {
        let out = out.as_str().unwrap_or_default();
        for (token, secret) in &input.planted {
            if orig == token {
                assert!(!out.contains(secret.as_str()), "token {token} survived masking as {out:?}");
            }
        }
    }
}

#[test]
fn argv() {
    Target { name: "mask::argv", generate, check }.run();
}
