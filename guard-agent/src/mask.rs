//! Secret masking: secrets in argv, command lines, environment excerpts and URLs are replaced
//! before any sink sees a verdict, so the original never reaches a log file, a socket or a
//! notification.
//!
//! Agents handle credentials all the time (`mysql -p…`, `curl -H 'Authorization: …'`,
//! `git clone https://user:token@…`), and a verdict copies what they ran. The daemon builds one
//! [`Masker`] at start and passes every verdict through [`Masker::mask_value`].
//!
//! # The masked form
//! Only the secret part becomes `***`; what an analyst needs to understand what leaked stays:
//! - a value after its name: `--password=***`, `--token ***`, `PGPASSWORD=***`,
//!   `"client_secret": "***"`, `?api_key=***&limit=10`, `X-Api-Key: ***`
//! - URL credentials: `https://user:***@host/`; headers: `Authorization: Bearer ***`
//! - tokens of a known format keep only their public type prefix, never a character of the
//!   secret itself: `AKIA***`, `ghp_***`, `github_pat_***`, `glpat-***`, `xoxb-***`,
//!   `sk_live_***`, `AIza***`, `sk-ant-***`, `sk-proj-***`, `eyJ***` (a JWT), `hf_***`, `hvs.***`
//! - private keys keep their armour: `-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE
//!   KEY-----`; a block cut short (truncated argv) is masked to the end
//! - argv forms: `-p***` (mysql), `sshpass -p ***`, `curl -u alice:***`, `sqlplus scott/***@db`
//!
//! - cookies, which are session credentials: `Cookie: ***`, `curl -b ***`
//!
//! When a known token sits under a secret name (`GITHUB_TOKEN=ghp_…`) the two overlap and the
//! whole value goes: `GITHUB_TOKEN=***`. `***` is never masked again, and masked text is masked
//! again until nothing changes, so masking twice gives what masking once gave.
//!
//! Administrators add shapes as regexes (`Masker::new`): a group named `secret` marks the part
//! to mask, else the whole match is masked.
//!
//! Limits, by design: an unquoted `name=value` value ends at whitespace, `&`, `;` or `,` (query
//! strings, mount options and connection strings need that); argv-aware masking sees the whole
//! argument instead. Masking errs towards hiding: a non-secret that only looks like one (a path
//! after `--private-key`) may be masked too.
//
//! The daemon masks every verdict object ([`Masker::mask_value`]) before it is numbered, written
//! to the audit log or handed to any sink.

use std::borrow::Cow;

use regex::{Captures, Regex, RegexSet};
use serde_json::Value;

/// What replaces a secret.
pub const MASK: &str = "***";

/// How many more times masked text is masked again, until nothing changes: what one round
/// masks can expose context for another (`Bearer -x/Bearer t0k3n`), and masking twice must
/// give what masking once gave.
const FIXPOINT_ROUNDS: usize = 4;

/// How deep `sh -c '… ssh h "mysql -p…"'` style nesting is followed.
const MAX_DEPTH: u8 = 4;

/// A test on one match that a regex cannot express (e.g. "the name really names a secret").
type Check = fn(&Captures<'_>, &str) -> bool;

/// One compiled shape of secret.
struct Rule {
    re: Regex,
    /// Capture groups holding the secret (named `secret…`); empty: the whole match is secret.
    groups: Vec<usize>,
    check: Option<Check>,
}

impl Rule {
    /// Compiles `pattern`, finding the groups that hold the secret by their `secret` names.
    fn new(pattern: &str, check: Option<Check>) -> Result<Rule, regex::Error> {
        let re = Regex::new(pattern)?;
        let groups = re
            .capture_names()
            .enumerate()
            .filter_map(|(i, name)| name.filter(|n| n.starts_with("secret")).map(|_| i))
            .collect();
        Ok(Rule { re, groups, check })
    }

    /// Pushes the byte ranges of `s` that this rule finds secret; `***` is already masked.
    ///
    /// A match its check rejects (`Bearer -x`) must not hide one that starts inside it
    /// (`Bearer -x/Bearer t0k3n…`), or a second pass would find what the first missed: the
    /// search resumes one character after a rejected match's start (a bounded number of times,
    /// so a hostile string cannot make this quadratic).
    fn spans(&self, s: &str, out: &mut Vec<(usize, usize)>) {
        const MAX_RETRIES: usize = 4096;
        let mut retries = 0;
        let mut at = 0;
        while at <= s.len() {
            let Some(caps) = self.re.captures_at(s, at) else { break };
            let Some(whole) = caps.get(0) else { break };
            let m = if self.groups.is_empty() { Some(whole) } else { self.groups.iter().find_map(|&g| caps.get(g)) };
            let accepted = m.filter(|m| !m.is_empty() && m.as_str() != MASK);
            let rejected = accepted.is_some_and(|m| self.check.is_some_and(|check| !check(&caps, m.as_str())));
            let next_char = |i: usize| i + s[i..].chars().next().map_or(1, char::len_utf8);
            at = if rejected && retries < MAX_RETRIES {
                retries += 1;
                next_char(whole.start())
            } else if whole.is_empty() {
                next_char(whole.end())
            } else {
                whole.end()
            };
            if let Some(m) = accepted
                && !rejected
            {
                out.push((m.start(), m.end()));
            }
        }
    }
}

/// Masks secrets in strings, argv vectors and whole verdicts. Built once; cheap to share.
pub struct Masker {
    /// Every rule's pattern, so one pass tells which rules (if any) need a closer look.
    set: RegexSet,
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker").field("rules", &self.rules.len()).finish()
    }
}

impl Default for Masker {
    /// The built-in shapes only.
    fn default() -> Self {
        Masker::new(&[]).expect("the built-in masking patterns compile")
    }
}

impl Masker {
    /// The built-in shapes plus the administrator's `extra` regexes. In an extra regex a group
    /// named `secret` (or `secret_…`) marks what to mask; without one the whole match is masked.
    pub fn new(extra: &[String]) -> Result<Masker, String> {
        let mut rules = Vec::new();
        for (pattern, check) in builtin_patterns() {
            rules.push(Rule::new(&pattern, check).map_err(|e| format!("built-in masking pattern {pattern:?}: {e}"))?);
        }
        for pattern in extra {
            rules.push(Rule::new(pattern, None).map_err(|e| format!("masking pattern {pattern:?}: {e}"))?);
        }
        let set = RegexSet::new(rules.iter().map(|r| r.re.as_str())).map_err(|e| format!("masking patterns: {e}"))?;
        Ok(Masker { set, rules })
    }

    /// Masks the secrets inside one free-standing string. Borrows (no allocation) when there is
    /// nothing to mask, which is the common case.
    pub fn mask_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        match replace_ranges(s, self.spans(s)) {
            Cow::Borrowed(b) => Cow::Borrowed(b),
            Cow::Owned(once) => Cow::Owned(fixpoint(once, |x| owned(replace_ranges(x, self.spans(x))))),
        }
    }

    /// Masks an argv in place, knowing what flags mean: the value after `--password`, `-pX` for
    /// mysql (but not `ssh -p 22`), `curl -u user:pass`, env assignments, `sh -c` scripts, …
    /// (The daemon masks whole verdicts with [`Masker::mask_value`], which does this for every
    /// `argv` array; this entry point is for tests and tools.)
    #[cfg(test)]
    #[expect(clippy::ptr_arg, reason = "the verdict path holds argv as a Vec")]
    pub fn mask_argv(&self, argv: &mut Vec<String>) {
        let edits = {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            self.argv_edits(&args)
        };
        for (i, masked) in edits {
            argv[i] = masked;
        }
    }

    /// Masks a whole verdict: every string, every object key, argv-aware for arrays under an
    /// `argv` key, and `cmd_line` re-derived from its masked argv (or masked word by word).
    pub fn mask_value(&self, v: &mut Value) {
        let plan = self.plan_value(v);
        let keys_dirty = plan.keys_dirty;
        self.apply_value(v, plan);
        if keys_dirty {
            self.mask_keys(v);
        }
    }

    /// The secret byte ranges of `s`, unsorted; none (no allocation) for a clean string.
    fn spans(&self, s: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        // `is_match` may stop early and costs less than half of `matches`: the clean case.
        if !self.set.is_match(s) {
            return spans;
        }
        let hits = self.set.matches(s);
        for i in hits.iter() {
            self.rules[i].spans(s, &mut spans);
        }
        spans
    }

    /// The masked form of each argument that changes, by index, masked until masking changes
    /// nothing more (so masking twice is masking once).
    fn argv_edits(&self, argv: &[&str]) -> Vec<(usize, String)> {
        let mut edits = self.argv_edits_once(argv);
        if edits.is_empty() {
            return edits;
        }
        let mut current: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        for _ in 0..FIXPOINT_ROUNDS {
            for (i, masked) in edits {
                current[i] = masked;
            }
            edits = self.argv_edits_once(&current.iter().map(String::as_str).collect::<Vec<_>>());
            if edits.is_empty() {
                break;
            }
        }
        current.into_iter().enumerate().filter(|(i, a)| a != argv[*i]).collect()
    }

    /// One round of [`Masker::argv_edits`].
    fn argv_edits_once(&self, argv: &[&str]) -> Vec<(usize, String)> {
        let mut args: Vec<Cow<'_, str>> = argv.iter().map(|a| Cow::Borrowed(*a)).collect();
        self.mask_args(&mut args, 0);
        self.mask_across(&mut args);
        for a in args.iter_mut() {
            set_if_owned(a, |s| self.mask_str(s));
        }
        args.into_iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Cow::Owned(s) if s != argv[i] => Some((i, s)),
                _ => None,
            })
            .collect()
    }

    /// Argv-aware masking of one command (flags, tool-specific forms, nested commands), without
    /// the per-string rules, which the caller runs afterwards.
    fn mask_args(&self, args: &mut [Cow<'_, str>], depth: u8) {
        if depth > MAX_DEPTH || args.is_empty() {
            return;
        }
        let at = tool_index(args);
        let tools: Vec<&'static Tool> = at.map(|t| tools_for(args, t)).unwrap_or_default();
        let special = tools.iter().map(|t| t.special).find(|s| *s != Special::None).unwrap_or(Special::None);
        let first = at.map_or(args.len(), |t| t + 1);
        let remote = if special == Special::Ssh { at.and_then(|t| ssh_command_start(args, t)) } else { None };
        let mut pending: Option<Val> = None;
        let mut after_set = false;
        let mut i = 0;
        while i < args.len() {
            // A setting's value is no flag (`gh secret set NAME --body X`): look at it afresh.
            if let Some(val) = pending.take()
                && !(val == Val::Setting && args[i].starts_with('-'))
            {
                mask_value_at(&mut args[i], 0, val);
                i += 1;
                continue;
            }
            if remote == Some(i) {
                self.mask_tail(&mut args[i..], depth + 1);
                break;
            }
            if i >= first && args[i] == "--" {
                self.mask_tail(&mut args[i + 1..], depth + 1);
                break;
            }
            if special == Special::Shell && i >= first && is_dash_c(&args[i]) {
                if let Some(script) = args.get_mut(i + 1) {
                    self.mask_script(script, depth + 1);
                }
                i += 2;
                continue;
            }
            match classify(&args[i], &tools, after_set) {
                Action::None => {}
                Action::Next(val) => pending = Some(val),
                Action::Mask(s, e) => mask_range(&mut args[i], s, e),
            }
            after_set |= matches!(&*args[i], "set" | "config" | "configure");
            i += 1;
        }
        if let Some(t) = at {
            mask_positionals(args, t, special);
        }
    }

    /// A nested command: one argument is a script to split into words, several are an argv.
    fn mask_tail(&self, args: &mut [Cow<'_, str>], depth: u8) {
        match args {
            [one] => self.mask_script(one, depth),
            _ => self.mask_args(args, depth),
        }
    }

    /// Masks a shell script held in one argument (`sh -c '…'`, `ssh host '…'`).
    fn mask_script(&self, arg: &mut Cow<'_, str>, depth: u8) {
        set_if_owned(arg, |s| self.mask_words(s, depth));
    }

    /// Masks a command line given as one string: the string rules first, then argv-aware
    /// masking of its shell words, command by command (`;`, `&&`, `|` …), keeping the spacing.
    fn mask_words<'a>(&self, s: &'a str, depth: u8) -> Cow<'a, str> {
        let first = self.mask_str(s);
        let rebuilt = {
            let text: &str = &first;
            let words = split_words(text);
            let mut args: Vec<Cow<'_, str>> = words.iter().map(|&(a, b)| Cow::Borrowed(&text[a..b])).collect();
            let mut start = 0;
            for j in 0..=args.len() {
                if j == args.len() || is_operator(&args[j]) {
                    self.mask_args(&mut args[start..j], depth);
                    start = j + 1;
                }
            }
            self.mask_across(&mut args);
            args.iter().any(|a| matches!(a, Cow::Owned(_))).then(|| join_words(text, &words, &args))
        };
        match rebuilt {
            Some(r) => Cow::Owned(r),
            None => first,
        }
    }

    /// Secrets that span arguments: a private key passed unquoted (`echo -----BEGIN RSA
    /// PRIVATE KEY----- MIIE…`) or a header split from its value (`Authorization:` `Bearer` `x`).
    fn mask_across(&self, args: &mut [Cow<'_, str>]) {
        let spread = args.len() > 1 && args.iter().any(|a| a.contains("-----BEGIN") || a.ends_with(':'));
        if !spread {
            return;
        }
        let mut joined = String::new();
        let mut starts = Vec::with_capacity(args.len());
        for (k, a) in args.iter().enumerate() {
            if k > 0 {
                joined.push(' ');
            }
            starts.push(joined.len());
            joined.push_str(a);
        }
        let spans = self.spans(&joined);
        if spans.is_empty() {
            return;
        }
        for (a, &lo) in args.iter_mut().zip(&starts) {
            let hi = lo + a.len();
            let local: Vec<(usize, usize)> = spans
                .iter()
                .filter_map(|&(s, e)| {
                    let (s, e) = (s.max(lo), e.min(hi));
                    (s < e).then(|| (s - lo, e - lo))
                })
                .collect();
            if !local.is_empty() {
                set_if_owned(a, |s| replace_ranges(s, local));
            }
        }
    }

    /// First pass over a verdict (read only): what to write where, in visiting order.
    fn plan_value(&self, root: &Value) -> ValuePlan {
        let mut argvs: Vec<Vec<&str>> = Vec::new();
        let mut cmds: Vec<&str> = Vec::new();
        let mut keys_dirty = false;
        // An explicit stack: a deeply nested value must not overflow the thread's stack.
        let mut stack = vec![(Slot::Other, root)];
        while let Some((slot, v)) = stack.pop() {
            match v {
                Value::String(s) if slot == Slot::CmdLine => cmds.push(s.as_str()),
                Value::Array(items) if slot == Slot::Argv => {
                    argvs.push(items.iter().map(|x| x.as_str().unwrap_or("")).collect());
                    stack.extend(items.iter().filter(|x| !x.is_string()).map(|x| (Slot::Other, x)));
                }
                Value::Array(items) => stack.extend(items.iter().map(|x| (Slot::Other, x))),
                Value::Object(map) => {
                    for (k, x) in map {
                        keys_dirty |= matches!(self.mask_str(k), Cow::Owned(_));
                        stack.push((Slot::of(k), x));
                    }
                }
                _ => {}
            }
        }
        let argv: Vec<Vec<(usize, String)>> = argvs.iter().map(|a| self.argv_edits(a)).collect();
        let cmd = cmds.iter().map(|c| self.cmd_line(c, &argvs, &argv)).collect();
        ValuePlan { argv, cmd, keys_dirty }
    }

    /// The masked `cmd_line`. When it is its argv's join, that argv's masking decides (so the
    /// two say the same): the masked argv joined again. Whatever changes is then masked as
    /// words like any command line, so that a second pass, which no longer sees the join,
    /// changes nothing. `None`: unchanged.
    fn cmd_line(&self, line: &str, argvs: &[Vec<&str>], edits: &[Vec<(usize, String)>]) -> Option<String> {
        let as_words = |s: String| fixpoint(s, |x| owned(self.mask_words(x, 0)));
        let derived = argvs.iter().zip(edits).find(|(argv, _)| joins_to(argv, line));
        let masked = match derived {
            Some((_, e)) if e.is_empty() => as_words(owned(self.mask_str(line))?),
            Some((argv, e)) => as_words(masked_join(argv, e)),
            None => as_words(owned(self.mask_words(line, 0))?),
        };
        (masked != line).then_some(masked)
    }

    /// Second pass: writes the plan, masking every other string on the way (same visiting
    /// order as [`Masker::plan_value`]).
    fn apply_value(&self, root: &mut Value, plan: ValuePlan) {
        let mut argv = plan.argv.into_iter();
        let mut cmd = plan.cmd.into_iter();
        let mut stack = vec![(Slot::Other, root)];
        while let Some((slot, v)) = stack.pop() {
            match v {
                Value::String(s) => {
                    let masked = if slot == Slot::CmdLine { cmd.next().flatten() } else { owned(self.mask_str(s)) };
                    if let Some(m) = masked {
                        *s = m;
                    }
                }
                Value::Array(items) => {
                    if slot == Slot::Argv {
                        for (i, masked) in argv.next().unwrap_or_default() {
                            if let Some(Value::String(x)) = items.get_mut(i) {
                                *x = masked;
                            }
                        }
                    }
                    let nested = items.iter_mut().filter(|x| slot != Slot::Argv || !x.is_string());
                    stack.extend(nested.map(|x| (Slot::Other, x)));
                }
                Value::Object(map) => stack.extend(map.iter_mut().map(|(k, x)| (Slot::of(k), x))),
                _ => {}
            }
        }
    }

    /// Renames object keys that hold a secret (rare: a label like `token=…`). A masked key that
    /// collides with another keeps one of the two values: losing data beats leaking it.
    fn mask_keys(&self, root: &mut Value) {
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    let renames: Vec<(String, String)> = map
                        .keys()
                        .filter_map(|k| match self.mask_str(k) {
                            Cow::Owned(m) => Some((k.clone(), m)),
                            Cow::Borrowed(_) => None,
                        })
                        .collect();
                    for (old, new) in renames {
                        if let Some(x) = map.remove(&old) {
                            map.insert(new, x);
                        }
                    }
                    stack.extend(map.values_mut());
                }
                _ => {}
            }
        }
    }
}

/// What the first pass over a verdict decided.
struct ValuePlan {
    /// Per `argv` array, in visiting order: the masked arguments by index.
    argv: Vec<Vec<(usize, String)>>,
    /// Per `cmd_line` string, in visiting order: its masked form, if it changes.
    cmd: Vec<Option<String>>,
    keys_dirty: bool,
}

/// What a value's key says about it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Argv,
    CmdLine,
    Other,
}

impl Slot {
    fn of(key: &str) -> Slot {
        match key {
            "argv" => Slot::Argv,
            "cmd_line" => Slot::CmdLine,
            _ => Slot::Other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// String rules
// ---------------------------------------------------------------------------------------------

/// Characters of a `name=value` name, with one of the words a secret's name contains; whether
/// the name really names a secret is decided by [`is_secret_key`].
const KEY: &str = r"[A-Za-z0-9_.\-]*(?i:pass|pwd|secret|token|key|credential)[A-Za-z0-9_.\-]*";
/// A value after `=`: quoted (an unclosed quote runs to the end), or up to a separator.
const EQ_VALUE: &str = r#"(?:"(?P<secret_dq>[^"]*)(?:"|\z)|'(?P<secret_sq>[^']*)(?:'|\z)|(?P<secret>[^\s"'&;,]+))"#;
/// A value after `: ` (YAML, headers): quoted, or up to whitespace.
const COLON_VALUE: &str = r#"(?:"(?P<secret_dq>[^"]*)(?:"|\z)|'(?P<secret_sq>[^']*)(?:'|\z)|(?P<secret>[^\s"']+))"#;
/// A flag's value in a command line: quoted, or a word that is no other flag.
const FLAG_VALUE: &str = r#"(?:"(?P<secret_dq>[^"]*)(?:"|\z)|'(?P<secret_sq>[^']*)(?:'|\z)|(?P<secret>[^\s"'\-][^\s"']*))"#;
/// Authorization schemes whose credential is one token.
const ONE_TOKEN_SCHEMES: &[&str] = &["bearer", "basic", "token", "apikey", "api-key", "sso-key", "key", "dpop"];
/// Authorization schemes whose credentials are parameters: everything after them is masked.
const PARAM_SCHEMES: &str = r"digest|aws4-hmac-sha256|negotiate|ntlm|hoba|mutual|vapid|gnap|scram-sha-[0-9]+";

/// Whether `word` is one of [`PARAM_SCHEMES`] (without a regex: this runs per header).
fn is_param_scheme(word: &str) -> bool {
    const WORDS: &[&str] = &["digest", "aws4-hmac-sha256", "negotiate", "ntlm", "hoba", "mutual", "vapid", "gnap"];
    let scram = word.len() > "scram-sha-".len()
        && word.as_bytes()[.."scram-sha-".len()].eq_ignore_ascii_case(b"scram-sha-")
        && word.bytes().skip("scram-sha-".len()).all(|b| b.is_ascii_digit());
    scram || WORDS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// The built-in shapes, each with the test it needs beyond its regex.
fn builtin_patterns() -> Vec<(String, Option<Check>)> {
    let p = |s: &str| s.to_string();
    vec![
        // Private key blocks: the body, to the END line or, cut short, to the end.
        (p(r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<secret>(?s:.*?))(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)"), None),
        // scheme://user:password@host
        (p(r"(?i)(?-u:\b)[a-z][a-z0-9+.\-]*://[^\s/?#@:]*:(?P<secret>[^\s/?#@]+)@"), None),
        // Authorization headers: a one-token credential, or everything after a parameter scheme.
        (p(r#"(?i)(?-u:\b)(?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?(?:(?:bearer|basic|token|apikey|api-key|sso-key|key|dpop)[ \t]+)?(?P<secret>[^\s"',;]+)"#), Some(not_a_scheme)),
        (format!(r#"(?i)(?-u:\b)(?:proxy-)?authorization["']?[ \t]*[:=][ \t]*["']?(?:{PARAM_SCHEMES})[ \t]+(?P<secret>[^\r\n]+)"#), None),
        (p(r"(?-u:\b)(?:[Bb]earer|BEARER)[ \t]+(?P<secret>[A-Za-z0-9\-._~+/]+=*)"), Some(random_looking)),
        // name=value, name: value, "name": "value" where the name names a secret.
        (format!(r"(?:^|[^A-Za-z0-9_.\-])(?P<key>{KEY})[ \t]*=[ \t]*{EQ_VALUE}"), Some(secret_key_value)),
        (format!(r"(?:^|[^A-Za-z0-9_.\-])(?P<key>{KEY})[ \t]*:[ \t]+{COLON_VALUE}"), Some(secret_key_value)),
        (format!(r#"["'](?P<key>{KEY})["'][ \t]*[:=][ \t]*{COLON_VALUE}"#), Some(secret_key_value)),
        // --password VALUE inside a command line held as one string.
        (format!(r"(?:^|[ \t])(?P<dash>--?)(?P<key>{KEY})[ \t]+{FLAG_VALUE}"), Some(secret_flag_value)),
        // Cookies are session credentials: the whole header value.
        (p(r#"(?i)(?-u:\b)(?:set-)?cookie["']?[ \t]*:[ \t]*(?P<secret>[^\r\n"']+)"#), None),
        // Signed URLs: ?sig=, &X-Amz-Signature=
        (p(r"(?i)[?&;](?:[A-Za-z0-9_.\-]*[_.\-])?(?:sig|signature)=(?P<secret>[^&#\s]+)"), None),
        // aws_secret_access_key VALUE (space separated, as `aws configure` prints it)
        (p(r#"(?i)(?-u:\b)aws_(?:secret_access_key|session_token|security_token)["']?[ \t]+["']?(?P<secret>[A-Za-z0-9/+=]{16,})"#), None),
        // Tokens of a known format: the public prefix stays.
        (p(r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)(?P<secret>[A-Z0-9]{16})(?-u:\b)"), None),
        (p(r"(?-u:\b)(?:gh[pousr]_(?P<secret>[A-Za-z0-9]{30,255})|github_pat_(?P<secret_pat>[A-Za-z0-9_]{22,255}))"), None),
        (p(r"(?-u:\b)gl(?:pat|ptt|dt|rt|soat|cbt|imt|ft|oas)-(?P<secret>[A-Za-z0-9_\-]{20,})"), None),
        (p(r"(?-u:\b)xox[abposre]-(?P<secret>[A-Za-z0-9\-]{10,})"), None),
        (p(r"(?-u:\b)(?:(?:sk|rk)_(?:live|test)_(?P<secret>[A-Za-z0-9]{10,})|whsec_(?P<secret_wh>[A-Za-z0-9+/=]{20,}))"), None),
        (p(r"(?-u:\b)(?:AIza(?P<secret>[A-Za-z0-9_\-]{30,})|ya29\.(?P<secret_oauth>[A-Za-z0-9_\-]{20,}))"), None),
        (p(r"(?-u:\b)sk-(?:ant-|proj-|svcacct-|admin-)?(?P<secret>[A-Za-z0-9_\-]{20,})"), Some(random_looking)),
        (p(r"(?-u:\b)eyJ(?P<secret>[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*)"), None),
        (p(concat!(
            r"(?-u:\b)(?:hf_(?P<secret_hf>[A-Za-z0-9]{30,})|npm_(?P<secret_npm>[A-Za-z0-9]{36})",
            r"|pypi-(?P<secret_pypi>AgE[A-Za-z0-9_\-]{40,})|hvs\.(?P<secret_vault>[A-Za-z0-9_\-]{20,})",
            r"|dckr_pat_(?P<secret_docker>[A-Za-z0-9_\-]{20,})|SG\.(?P<secret_sg>[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}))"
        )), None),
        // Webhook URLs whose path is the credential.
        (p(r"(?:hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9/_\-]+)|discord(?:app)?\.com/api/webhooks/[0-9]+/(?P<secret_discord>[A-Za-z0-9_\-]+))"), None),
    ]
}

/// Rejects a parameter scheme's name as the credential (the other Authorization rule masks
/// what follows it), so `Authorization: Digest ***` keeps the scheme.
fn not_a_scheme(_: &Captures<'_>, secret: &str) -> bool {
    !is_param_scheme(secret)
}

/// For shapes that also match words (`Bearer authentication`): only keep what looks random.
fn random_looking(_: &Captures<'_>, secret: &str) -> bool {
    looks_random(secret)
}

/// For `name=value` shapes: the name must name a secret and the value must not be a variable
/// reference (`PASSWORD=$DB_PASSWORD` shows no secret).
fn secret_key_value(caps: &Captures<'_>, secret: &str) -> bool {
    caps.name("key").is_some_and(|k| is_secret_key(k.as_str())) && !is_var_ref(secret)
}

/// For `--name VALUE` in a string: as [`secret_key_value`], but `-pass` alone is ffmpeg's pass
/// number, not a password.
fn secret_flag_value(caps: &Captures<'_>, secret: &str) -> bool {
    let single = caps.name("dash").is_some_and(|d| d.as_str() == "-");
    let key = caps.name("key").map_or("", |k| k.as_str());
    !(single && key.eq_ignore_ascii_case("pass")) && secret_key_value(caps, secret)
}

/// Random-looking: letters and digits mixed, or long with both cases.
fn looks_random(s: &str) -> bool {
    let has = |f: fn(&u8) -> bool| s.as_bytes().iter().any(f);
    (s.len() >= 8 && has(u8::is_ascii_digit) && has(u8::is_ascii_alphabetic))
        || (s.len() >= 20 && has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase))
}

/// `$NAME` or `${…}`: a shell reference, not a value.
fn is_var_ref(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('$') else { return false };
    rest.starts_with('{')
        || (rest.bytes().next().is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
}

/// Words whose presence as (the end of) a name component makes the name a secret's.
fn strong_component(c: &str) -> bool {
    const ENDINGS: &[&str] = &["password", "passwd", "passphrase", "secret", "token"];
    const WHOLE: &[&str] = &["pass", "sshpass", "pwd", "apikey", "privatekey", "credential", "credentials", "secretkey"];
    ENDINGS.iter().any(|e| ends_with_ci(c, e)) || WHOLE.iter().any(|w| c.eq_ignore_ascii_case(w))
}

/// Words that, before `key`, make it a secret key (`api_key`, `x-api-key`, `signing-key`).
fn key_qualifier(c: &str) -> bool {
    const QUALIFIERS: &[&str] =
        &["api", "private", "secret", "signing", "encryption", "master", "client", "account", "storage", "shared", "subscription", "license"];
    QUALIFIERS.iter().any(|q| c.eq_ignore_ascii_case(q))
}

/// Whether a name (`DB_PASSWORD`, `--client-secret`, `npmAuthToken`, `x-api-key`) names a
/// secret. Names about a secret rather than holding one are not: `--password-file`,
/// `--password-stdin`, `--no-password`, `token_type`, `max_tokens`, and `PWD`, the directory.
fn is_secret_key(name: &str) -> bool {
    const NOT_FIRST: &[&str] =
        &["no", "ask", "prompt", "max", "min", "num", "show", "use", "with", "skip", "require", "allow", "disable", "enable", "reset", "generate", "print", "read"];
    const NOT_LAST: &[&str] = &[
        "file", "files", "path", "dir", "length", "len", "size", "count", "limit", "type", "name", "env", "stdin", "prompt", "cmd",
        "command", "helper", "min", "max", "ttl", "timeout", "expiry", "expires", "expiration", "url", "uri", "endpoint", "ref", "id",
        "version", "policy", "mode", "format", "fd", "source", "store", "backend", "provider", "arn", "location", "hint", "prefix",
    ];
    if name == "PWD" {
        return false;
    }
    let (mut first, mut prev, mut last, mut count, mut secret) = ("", "", "", 0usize, false);
    for c in components(name) {
        if count == 0 {
            first = c;
        }
        secret |= strong_component(c) || (c.eq_ignore_ascii_case("key") && key_qualifier(prev));
        count += 1;
        prev = c;
        last = c;
    }
    let in_list = |w: &str, list: &[&str]| list.iter().any(|l| w.eq_ignore_ascii_case(l));
    secret && !(count > 1 && (in_list(first, NOT_FIRST) || in_list(last, NOT_LAST)))
}

/// The words of a name: split at anything not alphanumeric and at camelCase humps
/// (`npmAuthToken` → npm, Auth, Token; `APIKey` stays one word).
fn components(name: &str) -> impl Iterator<Item = &str> {
    let b = name.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && !b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        i += 1;
        // A new word starts at an upper-case letter after a lower-case one or a digit.
        while i < b.len() && b[i].is_ascii_alphanumeric() && (!b[i].is_ascii_uppercase() || b[i - 1].is_ascii_uppercase()) {
            i += 1;
        }
        Some(&name[start..i])
    })
}

fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Replaces the given ranges of `s` by `***` (merging overlaps; a range already `***` stays).
fn replace_ranges(s: &str, mut spans: Vec<(usize, usize)>) -> Cow<'_, str> {
    spans.retain(|&(a, b)| a < b && b <= s.len() && &s[a..b] != MASK);
    if spans.is_empty() {
        return Cow::Borrowed(s);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    let mut spans = spans.into_iter().peekable();
    while let Some((start, mut end)) = spans.next() {
        while let Some(&(s2, e2)) = spans.peek()
            && s2 <= end
        {
            end = end.max(e2);
            spans.next();
        }
        let start = start.max(at);
        out.push_str(&s[at..start]);
        out.push_str(MASK);
        at = end.max(at);
    }
    out.push_str(&s[at..]);
    Cow::Owned(out)
}

/// Applies `step` to `s` until it changes nothing (at most [`FIXPOINT_ROUNDS`] times).
fn fixpoint(mut s: String, step: impl Fn(&str) -> Option<String>) -> String {
    for _ in 0..FIXPOINT_ROUNDS {
        match step(&s) {
            Some(next) => s = next,
            None => break,
        }
    }
    s
}

/// The new string, if masking made one.
fn owned(c: Cow<'_, str>) -> Option<String> {
    match c {
        Cow::Owned(m) => Some(m),
        Cow::Borrowed(_) => None,
    }
}

/// Replaces `*a` by what `f` makes of it, when that is new.
fn set_if_owned<'s>(a: &mut Cow<'s, str>, f: impl for<'x> FnOnce(&'x str) -> Cow<'x, str>) {
    if let Some(m) = owned(f(a)) {
        *a = Cow::Owned(m);
    }
}

// ---------------------------------------------------------------------------------------------
// Argv rules
// ---------------------------------------------------------------------------------------------

/// What kind of secret a flag's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// All of it.
    Secret,
    /// What follows the first separator (`user:pass`, `DOMAIN\user%pass`, `user,pass`).
    UserPass(char),
    /// openssl's `pass:SECRET`; `env:`, `file:`, `fd:` and `stdin` name no secret.
    PassArg,
    /// A `Name: value` header whose name says it carries a credential.
    Header,
    /// The value after a setting's name (`config set some.token VALUE`), unless it is a flag.
    Setting,
    /// `curl -b name=value`: cookies, but `curl -b cookies.txt` names a file.
    Cookies,
}

/// What one argument says.
enum Action {
    None,
    /// A flag whose value, the next argument, is secret.
    Next(Val),
    /// These bytes of this argument are secret.
    Mask(usize, usize),
}

/// A tool's flags that carry secrets.
struct Flag {
    names: &'static [&'static str],
    val: Val,
    /// Whether `-p VALUE` takes the next argument; mysql's bare `-p` prompts instead.
    next: bool,
    /// Whether a one-letter flag may carry its value attached (`-pVALUE`); openssl's `-k` may
    /// not (`-kfile` is another flag).
    attached: bool,
}

/// Tool-specific argument forms that are not flags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    /// `-c SCRIPT`
    Shell,
    /// `ssh [options] host COMMAND…`
    Ssh,
    /// `htpasswd -b file user PASSWORD`: the last argument.
    Htpasswd,
    /// `vault login TOKEN`
    VaultLogin,
    /// `sqlplus user/PASSWORD@db`
    Oracle,
    /// `wpa_passphrase ssid PASSPHRASE`
    SecondPositional,
}

struct Tool {
    names: &'static [&'static str],
    /// The flags mean this only with this subcommand: `docker login -p` but `docker run -p 80:80`.
    when: Option<&'static str>,
    flags: &'static [Flag],
    special: Special,
}

const fn flag(names: &'static [&'static str], val: Val, next: bool) -> Flag {
    Flag { names, val, next, attached: true }
}

const fn tool(names: &'static [&'static str], flags: &'static [Flag]) -> Tool {
    Tool { names, when: None, flags, special: Special::None }
}

const fn special(names: &'static [&'static str], special: Special) -> Tool {
    Tool { names, when: None, flags: &[], special }
}

const LOGIN_TOOLS: &[&str] = &["docker", "podman", "nerdctl", "buildah", "finch", "helm", "oras", "crane", "regctl", "az", "cf"];

/// Tools whose flags carry secrets in ways a generic `--password` rule cannot know.
const TOOLS: &[Tool] = &[
    tool(
        &[
            "mysql", "mariadb", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump", "mysqlslap",
            "mysqlbinlog", "mariadb-dump", "mariadb-admin", "mariadb-import", "mariadb-check", "mariadb-show", "mariadb-slap",
        ],
        &[flag(&["-p", "--password"], Val::Secret, false)],
    ),
    tool(&["mysqladmin", "mariadb-admin"], &[flag(&["password"], Val::Secret, true)]),
    tool(&["sshpass"], &[flag(&["-p"], Val::Secret, true)]),
    tool(&["redis-cli", "valkey-cli", "keydb-cli"], &[flag(&["-a"], Val::Secret, true)]),
    tool(
        &["mongo", "mongosh", "mongodump", "mongorestore", "mongoexport", "mongoimport", "mongostat", "mongotop", "mongofiles"],
        &[flag(&["-p"], Val::Secret, true)],
    ),
    tool(&["sqlcmd", "bcp", "osql"], &[flag(&["-P"], Val::Secret, true)]),
    tool(
        &["ldapsearch", "ldapmodify", "ldapadd", "ldapdelete", "ldapwhoami", "ldapmodrdn", "ldapcompare", "ldapexop"],
        &[flag(&["-w"], Val::Secret, true)],
    ),
    tool(&["ldappasswd"], &[flag(&["-w", "-s", "-a"], Val::Secret, true)]),
    tool(&["zip", "unzip", "zipcloak"], &[flag(&["-P"], Val::Secret, true)]),
    tool(&["7z", "7za", "7zr", "7zz", "rar", "unrar"], &[flag(&["-p"], Val::Secret, false)]),
    tool(&["ssh-keygen"], &[flag(&["-N", "-P"], Val::Secret, true)]),
    tool(&["useradd", "usermod"], &[flag(&["-p"], Val::Secret, true)]),
    Tool { names: LOGIN_TOOLS, when: Some("login"), flags: &[flag(&["-p"], Val::Secret, true)], special: Special::None },
    tool(&["skopeo", "podman", "buildah"], &[flag(&["--creds", "--src-creds", "--dest-creds"], Val::UserPass(':'), true)]),
    tool(
        &["curl"],
        &[
            flag(&["-u", "--user", "-U", "--proxy-user"], Val::UserPass(':'), true),
            flag(&["--oauth2-bearer"], Val::Secret, true),
            flag(&["-b", "--cookie"], Val::Cookies, true),
            flag(&["-H", "--header", "--proxy-header"], Val::Header, true),
        ],
    ),
    tool(&["wget"], &[flag(&["--header"], Val::Header, true)]),
    tool(&["http", "https", "httpie", "xh", "xhs"], &[flag(&["-a", "--auth"], Val::UserPass(':'), true)]),
    tool(&["smbclient", "rpcclient", "smbcacls", "smbget", "smbmap"], &[flag(&["-U", "--user"], Val::UserPass('%'), true)]),
    tool(&["lftp"], &[flag(&["-u"], Val::UserPass(','), true)]),
    tool(&["openssl"], &[flag(&["-pass", "-passin", "-passout"], Val::PassArg, true), Flag { names: &["-k"], val: Val::Secret, next: true, attached: false }]),
    tool(
        &["keytool", "jarsigner"],
        &[flag(&["-storepass", "-keypass", "-srcstorepass", "-deststorepass", "-srckeypass", "-destkeypass", "-new"], Val::Secret, true)],
    ),
    tool(&["xfreerdp", "xfreerdp3", "wlfreerdp", "sdl-freerdp", "sdl-freerdp3"], &[flag(&["/p:", "/password:"], Val::Secret, false)]),
    tool(&["rdesktop", "evil-winrm", "twine"], &[flag(&["-p"], Val::Secret, true)]),
    tool(&["ipmitool", "mosquitto_pub", "mosquitto_sub", "mosquitto_rr"], &[flag(&["-P"], Val::Secret, true)]),
    Tool { names: &["gh"], when: Some("secret"), flags: &[flag(&["-b", "--body"], Val::Secret, true)], special: Special::None },
    tool(&["nmcli"], &[flag(&["password", "wifi-sec.psk", "802-11-wireless-security.psk"], Val::Secret, true)]),
    special(&["htpasswd"], Special::Htpasswd),
    Tool { names: &["vault", "bao"], when: Some("login"), flags: &[], special: Special::VaultLogin },
    special(&["sqlplus", "sqlldr", "rman", "expdp", "impdp", "exp", "imp", "dgmgrl"], Special::Oracle),
    special(&["wpa_passphrase"], Special::SecondPositional),
    special(&["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "fish", "busybox", "su", "runuser"], Special::Shell),
    special(&["ssh", "autossh"], Special::Ssh),
];

/// Commands that run another command: the tool is found after them.
struct Wrapper {
    name: &'static str,
    /// Options that take the next argument (`sudo -u root`).
    with_value: &'static [&'static str],
    /// Arguments before the command that are not options (`timeout 10 cmd`).
    positionals: usize,
}

const fn wrapper(name: &'static str, with_value: &'static [&'static str], positionals: usize) -> Wrapper {
    Wrapper { name, with_value, positionals }
}

const WRAPPERS: &[Wrapper] = &[
    wrapper(
        "sudo",
        &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group", "--chdir", "--host", "--prompt", "--role",
            "--type", "--other-user", "--close-from", "--command-timeout"],
        0,
    ),
    wrapper("doas", &["-u", "-C"], 0),
    wrapper("env", &["-u", "-C", "-S", "--unset", "--chdir", "--split-string"], 0),
    wrapper("nice", &["-n", "--adjustment"], 0),
    wrapper("ionice", &["-c", "-n", "-p", "--class", "--classdata"], 0),
    wrapper("timeout", &["-s", "-k", "--signal", "--kill-after"], 1),
    wrapper("stdbuf", &["-i", "-o", "-e"], 0),
    wrapper("time", &["-f", "-o", "--format", "--output"], 0),
    wrapper("xargs", &["-I", "-n", "-P", "-d", "-E", "-L", "-s", "-a", "--max-args", "--max-procs", "--delimiter", "--arg-file"], 0),
    wrapper("watch", &["-n", "-d", "--interval"], 0),
    wrapper("flock", &["-w", "-E", "--timeout", "--conflict-exit-code"], 1),
    wrapper("strace", &["-o", "-e", "-p", "-s", "-u", "-E"], 0),
    wrapper("ltrace", &["-o", "-e", "-p", "-s", "-u"], 0),
    wrapper("proxychains", &["-f"], 0),
    wrapper("proxychains4", &["-f"], 0),
    wrapper("chroot", &[], 1),
    wrapper("taskset", &[], 1),
    wrapper("chrt", &[], 1),
    wrapper("nohup", &[], 0),
    wrapper("exec", &[], 0),
    wrapper("command", &[], 0),
    wrapper("builtin", &[], 0),
    wrapper("setsid", &[], 0),
    wrapper("unbuffer", &[], 0),
    wrapper("torsocks", &[], 0),
    wrapper("firejail", &[], 0),
];

/// `ssh` options that take the next argument.
const SSH_WITH_VALUE: &[&str] =
    &["-B", "-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O", "-o", "-P", "-p", "-Q", "-R", "-S", "-W", "-w"];

fn basename(a: &str) -> &str {
    a.rsplit('/').next().unwrap_or(a)
}

/// `NAME=value` as a shell puts it before a command.
fn is_env_assignment(a: &str) -> bool {
    a.split_once('=').is_some_and(|(k, _)| {
        k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Where the command proper starts: after env assignments and wrappers (`sudo -u x`, `env`,
/// `timeout 10`). `None` when there is no command.
fn tool_index(args: &[Cow<'_, str>]) -> Option<usize> {
    let mut i = 0;
    loop {
        while args.get(i).is_some_and(|a| is_env_assignment(a)) {
            i += 1;
        }
        let name = basename(args.get(i)?);
        let Some(w) = WRAPPERS.iter().find(|w| w.name == name) else { return Some(i) };
        i += 1;
        while let Some(a) = args.get(i) {
            if a == "--" {
                i += 1;
                break;
            } else if a.starts_with('-') && a.len() > 1 {
                i += if w.with_value.contains(&&**a) { 2 } else { 1 };
            } else if is_env_assignment(a) {
                i += 1;
            } else {
                break;
            }
        }
        i += w.positionals;
    }
}

/// The table entries for the tool at `at`, those whose subcommand condition holds.
fn tools_for(args: &[Cow<'_, str>], at: usize) -> Vec<&'static Tool> {
    let name = basename(&args[at]);
    TOOLS
        .iter()
        .filter(|t| t.names.contains(&name) && t.when.is_none_or(|w| args[at + 1..].iter().any(|a| a == w)))
        .collect()
}

/// Where an ssh remote command starts (after the options and the host).
fn ssh_command_start(args: &[Cow<'_, str>], at: usize) -> Option<usize> {
    let mut j = at + 1;
    while let Some(a) = args.get(j) {
        if a.starts_with('-') && a.len() > 1 {
            j += if SSH_WITH_VALUE.contains(&&**a) { 2 } else { 1 };
        } else {
            return (j + 1 < args.len()).then_some(j + 1);
        }
    }
    None
}

/// `-c`, or a short cluster ending in it (`-lc`, `-ec`), or `--command`: a shell's script flag.
fn is_dash_c(a: &str) -> bool {
    a == "--command"
        || a.strip_prefix('-').is_some_and(|r| !r.is_empty() && r.len() <= 5 && r.bytes().all(|b| b.is_ascii_lowercase()) && r.ends_with('c'))
}

/// What one argument means, from the tool's flags, then the generic forms.
fn classify(a: &str, tools: &[&Tool], after_set: bool) -> Action {
    for f in tools.iter().flat_map(|t| t.flags) {
        if let Some(action) = flag_action(f, a) {
            return action;
        }
    }
    generic_action(a, after_set).unwrap_or(Action::None)
}

/// `a` against one tool flag: the flag alone (value next), `-pVALUE`, `--name=VALUE`, `/p:VALUE`.
fn flag_action(f: &Flag, a: &str) -> Option<Action> {
    for &name in f.names {
        if a == name {
            return Some(if f.next { Action::Next(f.val) } else { Action::None });
        }
        let short = name.len() == 2 && name.starts_with('-');
        let inline = if (short && f.attached) || name.ends_with(':') {
            a.strip_prefix(name)
        } else if short {
            None
        } else {
            a.strip_prefix(name).and_then(|r| r.strip_prefix('='))
        };
        if let Some(v) = inline {
            let base = a.len() - v.len();
            return Some(value_cut(f.val, v).map_or(Action::None, |(s, e)| Action::Mask(base + s, base + e)));
        }
    }
    None
}

/// Forms any tool may use: `--token VALUE`, `--api-key=VALUE`, `DB_PASSWORD=VALUE`,
/// `-Ddb.password=VALUE`, `config set some.token VALUE`, `X-Api-Key:VALUE`.
fn generic_action(a: &str, after_set: bool) -> Option<Action> {
    // Flags have no spaces in their names (`-----BEGIN RSA PRIVATE KEY-----` is no flag).
    let name_end = a.find('=').unwrap_or(a.len());
    if a.starts_with('-') && !a[..name_end].contains(char::is_whitespace) {
        if let Some((name, v)) = a.split_once('=') {
            let cut = is_secret_key(name.trim_start_matches('-')).then(|| value_cut(Val::Secret, v)).flatten()?;
            return Some(Action::Mask(name.len() + 1 + cut.0, name.len() + 1 + cut.1));
        }
        let name = a.trim_start_matches('-');
        let long = a.starts_with("--") || (name.len() > 4 && name != "pass");
        return (long && is_secret_key(name)).then_some(Action::Next(Val::Secret));
    }
    if let Some((name, v)) = a.split_once('=')
        && plain_key(name)
    {
        let cut = is_secret_key(name).then(|| value_cut(Val::Secret, v)).flatten()?;
        return Some(Action::Mask(name.len() + 1 + cut.0, name.len() + 1 + cut.1));
    }
    if after_set && plain_key(a) && is_secret_key(a) {
        return Some(Action::Next(Val::Setting));
    }
    header_cut(a).map(|s| Action::Mask(s, a.len()))
}

/// A name as written before `=` (`DB_PASSWORD`, `db.password`, `//registry.npmjs.org/:_authToken`):
/// name characters only, so no sentence and no URL (`https://x/?a=b` is no name).
fn plain_key(k: &str) -> bool {
    !k.is_empty() && !k.contains("://") && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b':' | b'@' | b'*'))
}

/// The secret bytes of a flag's value, if any.
fn value_cut(val: Val, v: &str) -> Option<(usize, usize)> {
    let start = match val {
        Val::Secret | Val::Setting => (!is_var_ref(v)).then_some(0)?,
        Val::UserPass(sep) => v.find(sep)? + sep.len_utf8(),
        Val::PassArg => v.strip_prefix("pass:").map(|_| "pass:".len())?,
        Val::Header => header_cut(v)?,
        Val::Cookies => v.contains('=').then_some(0)?,
    };
    let rest = &v[start..];
    (!rest.is_empty() && rest != MASK).then_some((start, v.len()))
}

/// Where the credential of a `Name: value` header starts, if the name says it carries one; an
/// Authorization scheme word stays (`Authorization: Bearer ***`).
fn header_cut(h: &str) -> Option<usize> {
    let colon = h.find(':')?;
    let name = h[..colon].trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    let after = &h[colon + 1..];
    let mut at = colon + 1 + (after.len() - after.trim_start().len());
    let cookie = name.eq_ignore_ascii_case("cookie") || name.eq_ignore_ascii_case("set-cookie");
    if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("proxy-authorization") {
        let rest = &h[at..];
        if let Some(sp) = rest.find(char::is_whitespace) {
            let word = &rest[..sp];
            let is_scheme = ONE_TOKEN_SCHEMES.iter().any(|s| word.eq_ignore_ascii_case(s)) || is_param_scheme(word);
            if is_scheme {
                let tail = &rest[sp..];
                at += sp + (tail.len() - tail.trim_start().len());
            }
        }
    } else if !cookie && !is_secret_key(name) {
        return None;
    }
    let v = &h[at..];
    (!v.is_empty() && v != MASK).then_some(at)
}

/// Masks `a`'s value starting at `base` as `val` says.
fn mask_value_at(a: &mut Cow<'_, str>, base: usize, val: Val) {
    if let Some((s, e)) = value_cut(val, &a[base..]) {
        mask_range(a, base + s, base + e);
    }
}

/// Replaces `a[s..e]` by `***`.
fn mask_range(a: &mut Cow<'_, str>, s: usize, e: usize) {
    set_if_owned(a, |x| replace_ranges(x, vec![(s, e)]));
}

/// Positional secrets of a few tools, once the flags are known (`htpasswd -b f user PASS`).
fn mask_positionals(args: &mut [Cow<'_, str>], at: usize, special: Special) {
    let positional = |a: &str| !a.starts_with('-');
    match special {
        Special::Htpasswd => {
            let batch = args[at + 1..].iter().any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('b'));
            if batch && args.len() > at + 2 && let Some(last) = args.last_mut() {
                mask_value_at(last, 0, Val::Secret);
            }
        }
        Special::VaultLogin => {
            let login = args[at + 1..].iter().position(|a| a == "login").map_or(args.len(), |p| at + 1 + p);
            for a in args.iter_mut().skip(login + 1).filter(|a| positional(a) && !a.contains('=')) {
                mask_value_at(a, 0, Val::Secret);
            }
        }
        Special::Oracle => {
            // The connect string: the first plain positional, or `userid=…` (expdp, sqlldr).
            let mut first = true;
            for a in args.iter_mut().skip(at + 1).filter(|a| positional(a)) {
                let userid = a.len() >= 7 && a.as_bytes()[..7].eq_ignore_ascii_case(b"userid=");
                if ((first && !a.contains('=')) || userid)
                    && let Some((s, e)) = oracle_password(a)
                {
                    mask_range(a, s, e);
                }
                first &= a.contains('=');
            }
        }
        Special::SecondPositional => {
            if let Some(a) = args.iter_mut().skip(at + 1).filter(|a| positional(a)).nth(1) {
                mask_value_at(a, 0, Val::Secret);
            }
        }
        Special::None | Special::Shell | Special::Ssh => {}
    }
}

/// The password of an Oracle connect string `user/password@db` (also after `userid=`).
fn oracle_password(a: &str) -> Option<(usize, usize)> {
    let base = if a.len() >= 7 && a.as_bytes()[..7].eq_ignore_ascii_case(b"userid=") { 7 } else { 0 };
    let body = &a[base..];
    if body.starts_with(['/', '@']) {
        return None;
    }
    let slash = body.find('/')?;
    let end = body.find('@').unwrap_or(body.len());
    (slash < end && slash + 1 < end && &body[slash + 1..end] != MASK).then_some((base + slash + 1, base + end))
}

// ---------------------------------------------------------------------------------------------
// Command lines as strings
// ---------------------------------------------------------------------------------------------

/// Shell words of `s` as byte ranges (quotes kept inside words; `;`, `|`, `&` runs are words of
/// their own). Never fails: an unclosed quote runs to the end.
fn split_words(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if matches!(b[i], b';' | b'|' | b'&') {
            while i < b.len() && matches!(b[i], b';' | b'|' | b'&') {
                i += 1;
            }
            out.push((start, i));
            continue;
        }
        let mut quote: Option<u8> = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(q) if c == q => quote = None,
                // Inside double quotes a backslash escapes the next byte.
                Some(b'"') if c == b'\\' => i += 1,
                Some(_) => {}
                None if c.is_ascii_whitespace() || matches!(c, b';' | b'|' | b'&') => break,
                None if c == b'\'' || c == b'"' => quote = Some(c),
                None if c == b'\\' => i += 1,
                None => {}
            }
            i += 1;
        }
        // A trailing backslash may step past the end; a word ends on an ASCII byte or the end,
        // so its range stays on character boundaries.
        i = i.min(b.len());
        out.push((start, i));
    }
    out
}

/// A word that separates commands.
fn is_operator(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| matches!(b, b';' | b'|' | b'&'))
}

/// `text` with its words replaced, keeping what lay between them.
fn join_words(text: &str, words: &[(usize, usize)], masked: &[Cow<'_, str>]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (&(a, b), w) in words.iter().zip(masked) {
        out.push_str(&text[at..a]);
        out.push_str(w);
        at = b;
    }
    out.push_str(&text[at..]);
    out
}

/// Whether `line` is `parts` joined by single spaces (how a verdict builds `cmd_line`).
fn joins_to(parts: &[&str], line: &str) -> bool {
    let mut rest = line;
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            let Some(r) = rest.strip_prefix(' ') else { return false };
            rest = r;
        }
        let Some(r) = rest.strip_prefix(p) else { return false };
        rest = r;
    }
    rest.is_empty()
}

/// `parts` with `edits` applied, joined by spaces.
fn masked_join(parts: &[&str], edits: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            out.push(' ');
        }
        out.push_str(edits.iter().find(|(i, _)| *i == k).map_or(*p, |(_, m)| m.as_str()));
    }
    out
}


#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CORPUS: &str = include_str!("mask/corpus.txt");

    /// The corpus: string cases, argv cases, negatives.
    struct Corpus {
        strings: Vec<(String, String)>,
        argv: Vec<(Vec<String>, Vec<String>)>,
        negative: Vec<String>,
    }

    /// `\n`, `\t`, `\\` in the strings section.
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                },
                (c, false) => out.push(c),
            }
        }
        out
    }

    fn corpus() -> Corpus {
        let mut c = Corpus { strings: vec![], argv: vec![], negative: vec![] };
        let mut section = "";
        for line in CORPUS.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if line.starts_with('[') {
                section = line;
                continue;
            }
            match section {
                "[strings]" => {
                    let (input, expected) = line.split_once('\t').expect("a tab between input and expected");
                    c.strings.push((unescape(input), unescape(expected)));
                }
                "[argv]" => {
                    let v: Value = serde_json::from_str(line).expect("an argv case is JSON");
                    let list = |k: &str| -> Vec<String> {
                        v[k].as_array().expect("a list").iter().map(|x| x.as_str().expect("a string").to_string()).collect()
                    };
                    c.argv.push((list("argv"), list("masked")));
                }
                "[negative]" => c.negative.push(line.to_string()),
                other => panic!("unknown corpus section {other:?}"),
            }
        }
        c
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn corpus_is_big_enough() {
        let c = corpus();
        assert!(c.strings.len() + c.argv.len() >= 40, "{} positive cases", c.strings.len() + c.argv.len());
        assert!(c.negative.len() >= 10);
    }

    #[test]
    fn corpus_strings_are_masked() {
        let m = Masker::default();
        let mut failures = vec![];
        for (input, expected) in corpus().strings {
            let got = m.mask_str(&input);
            if got != expected {
                failures.push(format!("input:    {input}\nexpected: {expected}\ngot:      {got}\n"));
            }
            // Masking twice is masking once, and the second pass allocates nothing.
            if !matches!(m.mask_str(&got), Cow::Borrowed(_)) {
                failures.push(format!("not idempotent: {got} -> {}", m.mask_str(&got)));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn corpus_argv_is_masked() {
        let m = Masker::default();
        let mut failures = vec![];
        for (argv, expected) in corpus().argv {
            let mut got = argv.clone();
            m.mask_argv(&mut got);
            if got != expected {
                failures.push(format!("argv:     {argv:?}\nexpected: {expected:?}\ngot:      {got:?}\n"));
            }
            let mut again = got.clone();
            m.mask_argv(&mut again);
            if again != got {
                failures.push(format!("not idempotent: {got:?} -> {again:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn negatives_stay_as_they_are() {
        let m = Masker::default();
        for s in corpus().negative {
            assert!(matches!(m.mask_str(&s), Cow::Borrowed(_)), "mask_str changed {s:?} to {:?}", m.mask_str(&s));
            let mut argv = words(&s);
            m.mask_argv(&mut argv);
            assert_eq!(argv, words(&s), "mask_argv changed {s:?}");
            assert_eq!(m.mask_words(&s, 0), s, "mask_words changed {s:?}");
        }
    }

    /// The secrets planted in [`verdict`].
    const PLANTED: &[&str] = &[
        "S3cretPass",
        "t0k3nValue99",
        "hunter2",
        "ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS",
        "0a1b2c3d4e5f6a7b8c9d0e1f",
        "glpat-0kyI5-wccpGUyG5QG01-",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "labelSecret1",
        "MIIEpAIBAAKCAQEA7bq3",
        "zz9-lbl-key",
        "IOSFODNN7EXAMPLE",
    ];

    /// A verdict shaped like `Verdict::to_json` makes them, with secrets everywhere.
    fn verdict() -> Value {
        let argv = ["mysql", "-u", "root", "-pS3cretPass", "--token", "t0k3nValue99", "https://bob:hunter2@db.example.com/x"];
        json!({
            "class_uid": 1007,
            "message": "Authorization: Bearer 0a1b2c3d4e5f6a7b8c9d0e1f was used",
            "process": {
                "pid": 10,
                "cmd_line": argv.join(" "),
                "working_directory": "/home/agent/ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS",
                "file": { "path": "/usr/bin/mysql", "name": "mysql" },
            },
            "unmapped": {
                "argv": argv,
                "argv_truncated": false,
                "reason": "env excerpt: AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "session": {
                    "id": "s1",
                    "labels": { "ticket": "OPS-1", "deploy": { "token": "glpat-0kyI5-wccpGUyG5QG01-", "list": ["db_password=labelSecret1", 3, null] } },
                    "token=zz9-lbl-key": "a secret in a key",
                },
                "ancestry": [{ "pid": 9, "exe": "/bin/sh" }],
                "env": ["PATH=/usr/bin", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "KEY=-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq3"],
            },
        })
    }

    #[test]
    fn mask_value_leaves_no_secret_in_the_output() {
        let m = Masker::default();
        let mut v = verdict();
        m.mask_value(&mut v);
        let out = serde_json::to_string(&v).unwrap();
        for secret in PLANTED {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert_eq!(v["unmapped"]["argv"][3], "-p***");
        assert_eq!(v["unmapped"]["argv"][5], "***");
        assert_eq!(v["unmapped"]["argv"][0], "mysql");
        // cmd_line says exactly what the masked argv says.
        let argv: Vec<&str> = v["unmapped"]["argv"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        assert_eq!(v["process"]["cmd_line"], argv.join(" "));
        assert_eq!(v["process"]["file"]["path"], "/usr/bin/mysql");
        assert_eq!(v["unmapped"]["session"]["labels"]["ticket"], "OPS-1");
        assert_eq!(v["unmapped"]["session"]["labels"]["deploy"]["list"][1], 3);
        assert_eq!(v["unmapped"]["session"]["token=***"], "a secret in a key");
        assert_eq!(v["unmapped"]["env"][0], "PATH=/usr/bin");
        // Idempotent on a whole verdict.
        let mut again = v.clone();
        m.mask_value(&mut again);
        assert_eq!(again, v);
    }

    #[test]
    fn cmd_line_without_its_argv_is_masked_word_by_word() {
        let m = Masker::default();
        let mut v = json!({ "process": { "cmd_line": "sshpass -p hunter2 ssh deploy@host && mysql -pS3cret" } });
        m.mask_value(&mut v);
        assert_eq!(v["process"]["cmd_line"], "sshpass -p *** ssh deploy@host && mysql -p***");
    }

    #[test]
    fn clean_strings_borrow() {
        let m = Masker::default();
        for s in ["", "/usr/bin/python3", "Process Activity", "exec.deny: basename: shred", "/home/agent/project/src"] {
            assert!(matches!(m.mask_str(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn configured_patterns_mask() {
        let m = Masker::new(&[r"internal-(?P<secret>[a-z0-9]{12})".to_string(), r"CORP[0-9]{8}".to_string()]).unwrap();
        assert_eq!(m.mask_str("id internal-abcdef012345 ok"), "id internal-*** ok");
        assert_eq!(m.mask_str("badge CORP12345678."), "badge ***.");
        assert_eq!(m.mask_str("badge ***."), "badge ***.");
        // The built-ins stay.
        assert_eq!(m.mask_str("--password=x1"), "--password=***");
        let mut argv = words("tool --flag internal-abcdef012345");
        m.mask_argv(&mut argv);
        assert_eq!(argv, words("tool --flag internal-***"));
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_it() {
        let e = Masker::new(&["ok[0-9]+".to_string(), "(unclosed".to_string()]).unwrap_err();
        assert!(e.contains("(unclosed"), "{e}");
        // An empty match is no secret.
        let m = Masker::new(&["x*".to_string()]).unwrap();
        assert_eq!(m.mask_str("abc"), "abc");
    }

    #[test]
    fn key_names() {
        for k in ["DB_PASSWORD", "--client-secret", "npmAuthToken", "x-api-key", "PGPASSWORD", "MYSQL_PWD", "Pwd", "DB_PASS", "apiKey", "AWS_SECRET_ACCESS_KEY", "_authToken"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["PWD", "OLDPWD", "max_tokens", "token_type", "--password-file", "--password-stdin", "--no-password", "bypass", "key", "AWS_ACCESS_KEY_ID", "tokenizer", "--token-limit"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn odd_input_never_panics() {
        let m = Masker::default();
        // Every tool flag alone at the end, with an empty value, and attached.
        for t in TOOLS {
            for name in t.names {
                for f in t.flags {
                    for flag in f.names {
                        for argv in [vec![*name, *flag], vec![*name, "login", "secret", *flag, ""], vec![*name, &format!("{flag}=")]] {
                            let mut argv: Vec<String> = argv.into_iter().map(String::from).collect();
                            m.mask_argv(&mut argv);
                        }
                    }
                }
                for tail in [&[][..], &["-b"], &["login"], &["-c"], &["-p"], &["/"], &["userid="], &["a/"], &["-p", "1", "h"]] {
                    let mut argv: Vec<String> = std::iter::once(*name).chain(tail.iter().copied()).map(String::from).collect();
                    m.mask_argv(&mut argv);
                }
            }
        }
        let odd = [
            "", "-", "--", "=", "--=", "-p", ":", "a:", "://", "x://:@", "\\", "'", "\"", "\"password=", "password='", "-----BEGIN",
            "-----BEGIN RSA PRIVATE KEY-----", "Authorization:", "Authorization: Bearer", "pässwörd=geheimnis", "пароль: секрет",
            "password=пароль", "token=🔑🔑🔑", "é=é", "sudo -u", "timeout", "env A=1", "bash -c", "ssh -p", "ssh h", "sqlplus /",
        ];
        for s in odd {
            let _ = m.mask_str(s);
            let _ = m.mask_words(s, 0);
            let mut argv = words(s);
            m.mask_argv(&mut argv);
            let mut whole = vec![s.to_string(), s.to_string()];
            m.mask_argv(&mut whole);
        }
        assert_eq!(m.mask_str("password=пароль"), "password=***");
        assert_eq!(m.mask_str("пароль: секрет token=🔑"), "пароль: секрет token=***");
        let mut argv = vec![];
        m.mask_argv(&mut argv);
        assert!(argv.is_empty());
    }

    #[test]
    fn huge_strings_are_masked_to_the_end() {
        let m = Masker::default();
        let mut s = "a b/c=d ".repeat(128 * 1024);
        assert_eq!(s.len(), 1 << 20);
        assert!(matches!(m.mask_str(&s), Cow::Borrowed(_)));
        s.push_str(" --password=hunter2 -----BEGIN EC PRIVATE KEY-----");
        s.push_str(&"QUJDREVGR0g=".repeat(50_000));
        let masked = m.mask_str(&s);
        assert!(masked.ends_with("--password=*** -----BEGIN EC PRIVATE KEY-----***"));
        let mut argv = vec!["mysql".to_string(), format!("-p{s}"), s.clone()];
        m.mask_argv(&mut argv);
        assert_eq!(argv[1], "-p***");
        assert!(!argv[2].contains("hunter2"));
    }

    #[test]
    fn nesting_is_bounded() {
        let m = Masker::default();
        let mut script = "mysql -pS3cret".to_string();
        for _ in 0..50 {
            script = format!("bash -c {script}");
        }
        let _ = m.mask_words(&script, 0);
        let mut deep = json!("token=abc123");
        for _ in 0..500 {
            deep = json!({ "x": [deep] });
        }
        m.mask_value(&mut deep);
        assert!(!serde_json::to_string(&deep).unwrap().contains("abc123"));
    }

    /// Pseudo-random strings built from the pieces the rules care about: no panic, and a second
    /// pass changes nothing.
    #[test]
    fn mixed_pieces_never_panic_and_stay_idempotent() {
        const PIECES: &[&str] = &[
            " ", "-p", "=", ":", "@", "://", "/", "'", "\"", "\\", ";", "&&", "|", "password", "token", "key", "x", "é", "€", "🔑", "-----BEGIN",
            "RSA PRIVATE KEY-----", "-----END", "Bearer ", "Authorization: ", "ghp_YK0fFWqcajQLE9WVxuXbrFZmU3A6IIRgmKJS", "mysql", "sshpass",
            "bash", "-c", "--", "ssh", "***", "AKIAIOSFODNN7EXAMPLE", "\n", "sk-", "abc123def456ghi789jkl", "curl", "-u", "bob:pa55",
            "--password", "https://", "sqlplus", "scott/tiger@db", "htpasswd", "-b", "vault", "login", "docker", "set", "config", "%", ",",
            "$X", "Cookie: ", "-H", "userid=",
        ];
        let m = Masker::default();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3_000 {
            let n = (next() % 24) as usize;
            let s: String = (0..n).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            let once = m.mask_str(&s).into_owned();
            assert_eq!(m.mask_str(&once), once, "mask_str not idempotent on {s:?}");
            let mut argv = words(&s);
            m.mask_argv(&mut argv);
            let mut again = argv.clone();
            m.mask_argv(&mut again);
            assert_eq!(again, argv, "mask_argv not idempotent on {s:?}");
            let mut v = json!({ "process": { "cmd_line": s }, "unmapped": { "argv": words(&s), "note": s } });
            m.mask_value(&mut v);
            let mut again = v.clone();
            m.mask_value(&mut again);
            assert_eq!(again, v, "mask_value not idempotent on {s:?}");
        }
    }
}
