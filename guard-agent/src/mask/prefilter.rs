//! One scan that tells whether a string can hold any built-in secret shape: literals at least
//! one of which every match of every built-in pattern contains (ASCII case aside). A string
//! with none of them (most of a verdict: paths, names, numbers as text) is clean after one
//! Aho-Corasick pass; only a hit runs the regexes.
//!
//! Each entry is what its pattern in `patterns.rs` cannot match without. Case-insensitive
//! patterns with Unicode case folding also match `ſ` (U+017F, folds to `s`) and `K` (U+212A
//! KELVIN SIGN, folds to `k`), the only non-ASCII characters that fold to ASCII letters: both
//! are literals too, so the prefilter never says "clean" where a regex would have matched.
//! `prefilter_covers_every_builtin_match` and `only_two_non_ascii_characters_fold_to_ascii`
//! hold the list to that.
use aho_corasick::AhoCorasick;

pub(super) const LITERALS: &[&str] = &[
    // Unicode case folding's only ways into ASCII letters (see above).
    "\u{17f}", "\u{212a}",
    // Private key blocks.
    "-----BEGIN",
    // scheme://user:password@host
    "://",
    // Authorization headers (both rules).
    "authorization",
    // Bearer tokens.
    "bearer",
    // name=value, name: value, "name": "value", --name VALUE: a secret's name has one of these.
    "pass", "pwd", "secret", "token", "key", "credential",
    // Cookies.
    "cookie",
    // Signed URLs.
    "sig=", "signature=",
    // aws_secret_access_key VALUE
    "aws_",
    // AWS access key ids.
    "AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AIPA", "ANPA", "ANVA", "AROA", "APKA",
    // GitHub.
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    // GitLab.
    "glpat-", "glptt-", "gldt-", "glrt-", "glsoat-", "glcbt-", "glimt-", "glft-", "gloas-",
    // Slack.
    "xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-",
    // Stripe.
    "sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_",
    // Google.
    "AIza", "ya29.",
    // OpenAI, Anthropic.
    "sk-",
    // JWTs.
    "eyJ",
    // Hugging Face, npm, PyPI, Vault, Docker Hub, SendGrid.
    "hf_", "npm_", "pypi-", "hvs.", "dckr_pat_", "SG.",
    // Webhook URLs.
    "hooks.slack.com/", "discord.com/api/webhooks/", "discordapp.com/api/webhooks/",
];

pub(super) fn build() -> AhoCorasick {
    // A full DFA, one table lookup per byte, for what every string of every verdict pays. The
    // automatic choice picks one only while the literals are few; asking keeps it one as the
    // list grows (for these literals it is a few hundred states).
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .kind(Some(aho_corasick::AhoCorasickKind::DFA))
        .build(LITERALS)
        .expect("the masking prefilter's literals build")
}
