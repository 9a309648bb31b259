//! Masking rules for free text: the built-in secret shapes and the helpers that apply them.
use std::borrow::Cow;

use regex::Captures;

use super::*;

// ---------------------------------------------------------------------------------------------
// String rules
// ---------------------------------------------------------------------------------------------

/// Characters of a `name=value` name, with one of the words a secret's name contains; whether
/// the name really names a secret is decided by [`is_secret_key`].
pub(super) const KEY: &str = r"[A-Za-z0-9_.\-]*(?i:pass|pwd|secret|token|key|credential)[A-Za-z0-9_.\-]*";
/// A value after `=`: quoted (an unclosed quote runs to the end), or up to a separator.
pub(super) const EQ_VALUE: &str = r#"(?:"(?P<secret_dq>[^"]*)(?:"|\z)|'(?P<secret_sq>[^']*)(?:'|\z)|(?P<secret>[^\s"'&;,]+))"#;
/// A value after `: ` (YAML, headers): quoted, or up to whitespace.
pub(super) const COLON_VALUE: &str = r#"(?:"(?P<secret_dq>[^"]*)(?:"|\z)|'(?P<secret_sq>[^']*)(?:'|\z)|(?P<secret>[^\s"']+))"#;
/// A flag's value in a command line: quoted, or a word that is no other flag.
pub(super) const FLAG_VALUE: &str = r#"(?:"(?P<secret_dq>[^"]*)(?:"|\z)|'(?P<secret_sq>[^']*)(?:'|\z)|(?P<secret>[^\s"'\-][^\s"']*))"#;
/// Authorization schemes whose credential is one token.
pub(super) const ONE_TOKEN_SCHEMES: &[&str] = &["bearer", "basic", "token", "apikey", "api-key", "sso-key", "key", "dpop"];
/// Authorization schemes whose credentials are parameters: everything after them is masked.
pub(super) const PARAM_SCHEMES: &str = r"digest|aws4-hmac-sha256|negotiate|ntlm|hoba|mutual|vapid|gnap|scram-sha-[0-9]+";

/// Whether `word` is one of [`PARAM_SCHEMES`] (without a regex: this runs per header).
pub(super) fn is_param_scheme(word: &str) -> bool {
    const WORDS: &[&str] = &["digest", "aws4-hmac-sha256", "negotiate", "ntlm", "hoba", "mutual", "vapid", "gnap"];
    let scram = word.len() > "scram-sha-".len()
        && word.as_bytes()[.."scram-sha-".len()].eq_ignore_ascii_case(b"scram-sha-")
        && word.bytes().skip("scram-sha-".len()).all(|b| b.is_ascii_digit());
    scram || WORDS.iter().any(|w| word.eq_ignore_ascii_case(w))
}

/// The built-in shapes, each with the test it needs beyond its regex.
pub(super) fn builtin_patterns() -> Vec<(String, Option<Check>)> {
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
pub(super) fn not_a_scheme(_: &Captures<'_>, secret: &str) -> bool {
    !is_param_scheme(secret)
}

/// For shapes that also match words (`Bearer authentication`): only keep what looks random.
pub(super) fn random_looking(_: &Captures<'_>, secret: &str) -> bool {
    looks_random(secret)
}

/// For `name=value` shapes: the name must name a secret and the value must not be a variable
/// reference (`PASSWORD=$DB_PASSWORD` shows no secret).
pub(super) fn secret_key_value(caps: &Captures<'_>, secret: &str) -> bool {
    caps.name("key").is_some_and(|k| is_secret_key(k.as_str())) && !is_var_ref(secret)
}

/// For `--name VALUE` in a string: as [`secret_key_value`], but `-pass` alone is ffmpeg's pass
/// number, not a password.
pub(super) fn secret_flag_value(caps: &Captures<'_>, secret: &str) -> bool {
    let single = caps.name("dash").is_some_and(|d| d.as_str() == "-");
    let key = caps.name("key").map_or("", |k| k.as_str());
    !(single && key.eq_ignore_ascii_case("pass")) && secret_key_value(caps, secret)
}

/// Random-looking: letters and digits mixed, or long with both cases.
pub(super) fn looks_random(s: &str) -> bool {
    let has = |f: fn(&u8) -> bool| s.as_bytes().iter().any(f);
    (s.len() >= 8 && has(u8::is_ascii_digit) && has(u8::is_ascii_alphabetic))
        || (s.len() >= 20 && has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase))
}

/// `$NAME` or `${…}`: a shell reference, not a value.
pub(super) fn is_var_ref(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('$') else { return false };
    rest.starts_with('{')
        || (rest.bytes().next().is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
}

/// Words whose presence as (the end of) a name component makes the name a secret's.
pub(super) fn strong_component(c: &str) -> bool {
    const ENDINGS: &[&str] = &["password", "passwd", "passphrase", "secret", "token"];
    const WHOLE: &[&str] = &["pass", "sshpass", "pwd", "apikey", "privatekey", "credential", "credentials", "secretkey"];
    ENDINGS.iter().any(|e| ends_with_ci(c, e)) || WHOLE.iter().any(|w| c.eq_ignore_ascii_case(w))
}

/// Words that, before `key`, make it a secret key (`api_key`, `x-api-key`, `signing-key`).
pub(super) fn key_qualifier(c: &str) -> bool {
    const QUALIFIERS: &[&str] =
        &["api", "private", "secret", "signing", "encryption", "master", "client", "account", "storage", "shared", "subscription", "license"];
    QUALIFIERS.iter().any(|q| c.eq_ignore_ascii_case(q))
}

/// Whether a name (`DB_PASSWORD`, `--client-secret`, `npmAuthToken`, `x-api-key`) names a
/// secret. Names about a secret rather than holding one are not: `--password-file`,
/// `--password-stdin`, `--no-password`, `token_type`, `max_tokens`, and `PWD`, the directory.
pub(super) fn is_secret_key(name: &str) -> bool {
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
pub(super) fn components(name: &str) -> impl Iterator<Item = &str> {
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

pub(super) fn ends_with_ci(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Replaces the given ranges of `s` by `***` (merging overlaps; a range already `***` stays).
pub(super) fn replace_ranges(s: &str, mut spans: Vec<(usize, usize)>) -> Cow<'_, str> {
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

/// Applies `step` to `s` until it changes nothing. Text that still changes after
/// [`FIXPOINT_ROUNDS`] rounds (crafted quoting can make each round uncover the next, as fuzzing
/// found) becomes [`MASK`] as a whole: masking twice must give what masking once gave, and the
/// bound keeps a hostile command line from costing more rounds; hiding errs the safe way.
pub(super) fn fixpoint(mut s: String, step: impl Fn(&str) -> Option<String>) -> String {
    for _ in 0..FIXPOINT_ROUNDS {
        match step(&s) {
            Some(next) if next != s => s = next,
            _ => return s,
        }
    }
    match step(&s) {
        Some(next) if next != s => MASK.to_owned(),
        _ => s,
    }
}

/// The new string, if masking made one.
pub(super) fn owned(c: Cow<'_, str>) -> Option<String> {
    match c {
        Cow::Owned(m) => Some(m),
        Cow::Borrowed(_) => None,
    }
}

/// Replaces `*a` by what `f` makes of it, when that is new.
pub(super) fn set_if_owned<'s>(a: &mut Cow<'s, str>, f: impl for<'x> FnOnce(&'x str) -> Cow<'x, str>) {
    if let Some(m) = owned(f(a)) {
        *a = Cow::Owned(m);
    }
}

