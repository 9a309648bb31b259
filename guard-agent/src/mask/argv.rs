//! Masking rules for argv: which tools' flags carry secrets, wrappers, and classification.
use std::borrow::Cow;

use super::*;

// ---------------------------------------------------------------------------------------------
// Argv rules
// ---------------------------------------------------------------------------------------------

/// What kind of secret a flag's value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Val {
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
pub(super) enum Action {
    None,
    /// A flag whose value, the next argument, is secret.
    Next(Val),
    /// These bytes of this argument are secret.
    Mask(usize, usize),
}

/// A tool's flags that carry secrets.
pub(super) struct Flag {
    pub(super) names: &'static [&'static str],
    pub(super) val: Val,
    /// Whether `-p VALUE` takes the next argument; mysql's bare `-p` prompts instead.
    pub(super) next: bool,
    /// Whether a one-letter flag may carry its value attached (`-pVALUE`); openssl's `-k` may
    /// not (`-kfile` is another flag).
    pub(super) attached: bool,
}

/// Tool-specific argument forms that are not flags.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
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

pub(super) struct Tool {
    pub(super) names: &'static [&'static str],
    /// The flags mean this only with this subcommand: `docker login -p` but `docker run -p 80:80`.
    pub(super) when: Option<&'static str>,
    pub(super) flags: &'static [Flag],
    pub(super) special: Special,
}

pub(super) const fn flag(names: &'static [&'static str], val: Val, next: bool) -> Flag {
    Flag { names, val, next, attached: true }
}

pub(super) const fn tool(names: &'static [&'static str], flags: &'static [Flag]) -> Tool {
    Tool { names, when: None, flags, special: Special::None }
}

pub(super) const fn special(names: &'static [&'static str], special: Special) -> Tool {
    Tool { names, when: None, flags: &[], special }
}

pub(super) const LOGIN_TOOLS: &[&str] = &["docker", "podman", "nerdctl", "buildah", "finch", "helm", "oras", "crane", "regctl", "az", "cf"];

/// Tools whose flags carry secrets in ways a generic `--password` rule cannot know.
pub(super) const TOOLS: &[Tool] = &[
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
pub(super) struct Wrapper {
    pub(super) name: &'static str,
    /// Options that take the next argument (`sudo -u root`).
    pub(super) with_value: &'static [&'static str],
    /// Arguments before the command that are not options (`timeout 10 cmd`).
    pub(super) positionals: usize,
}

pub(super) const fn wrapper(name: &'static str, with_value: &'static [&'static str], positionals: usize) -> Wrapper {
    Wrapper { name, with_value, positionals }
}

pub(super) const WRAPPERS: &[Wrapper] = &[
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
pub(super) const SSH_WITH_VALUE: &[&str] =
    &["-B", "-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O", "-o", "-P", "-p", "-Q", "-R", "-S", "-W", "-w"];

pub(super) fn basename(a: &str) -> &str {
    a.rsplit('/').next().unwrap_or(a)
}

/// `NAME=value` as a shell puts it before a command.
pub(super) fn is_env_assignment(a: &str) -> bool {
    a.split_once('=').is_some_and(|(k, _)| {
        k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// Where the command proper starts: after env assignments and wrappers (`sudo -u x`, `env`,
/// `timeout 10`). `None` when there is no command.
pub(super) fn tool_index(args: &[Cow<'_, str>]) -> Option<usize> {
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
pub(super) fn tools_for(args: &[Cow<'_, str>], at: usize) -> Vec<&'static Tool> {
    let name = basename(&args[at]);
    TOOLS
        .iter()
        .filter(|t| t.names.contains(&name) && t.when.is_none_or(|w| args[at + 1..].iter().any(|a| a == w)))
        .collect()
}

/// Where an ssh remote command starts (after the options and the host).
pub(super) fn ssh_command_start(args: &[Cow<'_, str>], at: usize) -> Option<usize> {
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
pub(super) fn is_dash_c(a: &str) -> bool {
    a == "--command"
        || a.strip_prefix('-').is_some_and(|r| !r.is_empty() && r.len() <= 5 && r.bytes().all(|b| b.is_ascii_lowercase()) && r.ends_with('c'))
}

/// What one argument means, from the tool's flags, then the generic forms.
pub(super) fn classify(a: &str, tools: &[&Tool], after_set: bool) -> Action {
    for f in tools.iter().flat_map(|t| t.flags) {
        if let Some(action) = flag_action(f, a) {
            return action;
        }
    }
    generic_action(a, after_set).unwrap_or(Action::None)
}

/// `a` against one tool flag: the flag alone (value next), `-pVALUE`, `--name=VALUE`, `/p:VALUE`.
pub(super) fn flag_action(f: &Flag, a: &str) -> Option<Action> {
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
pub(super) fn generic_action(a: &str, after_set: bool) -> Option<Action> {
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
pub(super) fn plain_key(k: &str) -> bool {
    !k.is_empty() && !k.contains("://") && k.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b':' | b'@' | b'*'))
}

/// The secret bytes of a flag's value, if any.
pub(super) fn value_cut(val: Val, v: &str) -> Option<(usize, usize)> {
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
pub(super) fn header_cut(h: &str) -> Option<usize> {
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
pub(super) fn mask_value_at(a: &mut Cow<'_, str>, base: usize, val: Val) {
    if let Some((s, e)) = value_cut(val, &a[base..]) {
        mask_range(a, base + s, base + e);
    }
}

/// Replaces `a[s..e]` by `***`.
pub(super) fn mask_range(a: &mut Cow<'_, str>, s: usize, e: usize) {
    set_if_owned(a, |x| replace_ranges(x, vec![(s, e)]));
}

/// Positional secrets of a few tools, once the flags are known (`htpasswd -b f user PASS`).
pub(super) fn mask_positionals(args: &mut [Cow<'_, str>], at: usize, special: Special) {
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
pub(super) fn oracle_password(a: &str) -> Option<(usize, usize)> {
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
pub(super) fn split_words(s: &str) -> Vec<(usize, usize)> {
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
pub(super) fn is_operator(w: &str) -> bool {
    !w.is_empty() && w.bytes().all(|b| matches!(b, b';' | b'|' | b'&'))
}

/// `text` with its words replaced, keeping what lay between them.
pub(super) fn join_words(text: &str, words: &[(usize, usize)], masked: &[Cow<'_, str>]) -> String {
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
pub(super) fn joins_to(parts: &[&str], line: &str) -> bool {
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
pub(super) fn masked_join(parts: &[&str], edits: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            out.push(' ');
        }
        out.push_str(edits.iter().find(|(i, _)| *i == k).map_or(*p, |(_, m)| m.as_str()));
    }
    out
}


