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

mod argv;
mod patterns;
mod prefilter;

use argv::*;
use patterns::*;

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
    /// Literals one of which every built-in shape contains ([`prefilter`]): a string without
    /// any is clean of built-in shapes after one scan.
    prefilter: aho_corasick::AhoCorasick,
    /// The administrator's extra patterns, which have no literals the prefilter knows.
    extra: Option<RegexSet>,
    /// Every rule's pattern, so one pass tells which rules (if any) need a closer look.
    set: RegexSet,
    rules: Vec<Rule>,
    /// Tells maskers apart (a value masked once by this one, [`crate::verdict::Shared`], is
    /// reused only by this one).
    id: u64,
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
        let extra = match extra {
            [] => None,
            _ => Some(RegexSet::new(extra).map_err(|e| format!("masking patterns: {e}"))?),
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Masker { prefilter: prefilter::build(), extra, set, rules, id })
    }

    /// This masker's identity (distinct for every masker made in this process).
    pub fn id(&self) -> u64 {
        self.id
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

    /// An exec's argv and its command line (the argv joined by spaces) masked as
    /// [`Masker::mask_value`] masks them in a verdict: the changed arguments by index, and the
    /// masked command line if it changes.
    pub fn mask_exec_argv(&self, argv: &[String]) -> (Vec<(usize, String)>, Option<String>) {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let edits = self.argv_edits(&args);
        let line = argv.join(" ");
        let cmd = self.cmd_line(&line, std::slice::from_ref(&args), std::slice::from_ref(&edits));
        (edits, cmd)
    }

    /// The secret byte ranges of `s`, unsorted; none (no allocation) for a clean string.
    fn spans(&self, s: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        // One literal scan settles the clean case, which is nearly every string.
        if !self.may_hold_secret(s) {
            return spans;
        }
        let hits = self.set.matches(s);
        for i in hits.iter() {
            self.rules[i].spans(s, &mut spans);
        }
        spans
    }

    /// Whether `s` has something a secret shape needs ([`prefilter`]), or an extra pattern
    /// matches; `false` means no rule can match.
    fn may_hold_secret(&self, s: &str) -> bool {
        self.prefilter.is_match(s) || self.extra.as_ref().is_some_and(|e| e.is_match(s))
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

#[cfg(test)]
mod tests;
