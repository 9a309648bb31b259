//! Host patterns from policy text (`api.example.com`, `*.example.com`)
//! and their matching against names from DNS messages.

use std::fmt;
use std::str::FromStr;

/// Longest name in text form without the trailing dot (RFC 1035 2.3.4
/// allows 255 wire bytes, which is 253 characters of text).
const MAX_NAME_LEN: usize = 253;

/// Longest label (RFC 1035 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A host name, or a `*.` wildcard over the names below a domain.
///
/// `*.example.com` matches `a.example.com` and `a.b.example.com` but not
/// `example.com` itself: policies name the apex separately when they mean it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    /// Lowercase name without trailing dot or `*.` prefix.
    base: String,
    /// Whether the pattern was `*.base`.
    wildcard: bool,
}

impl HostPattern {
    /// Parses and normalises policy text.
    ///
    /// Accepted: labels of 1-63 characters from `[a-z0-9-_]` (any case),
    /// at most 253 characters in all, one optional trailing dot, and `*`
    /// only as the whole first label followed by at least one label.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if name.is_empty() {
            return Err(format!("host pattern {text:?}: empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "host pattern {:?}: longer than {MAX_NAME_LEN} characters",
                truncated(text)
            ));
        }
        let (wildcard, base) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None if name == "*" => {
                return Err(format!(
                    "host pattern {text:?}: bare `*` would match everything"
                ));
            }
            None => (false, name),
        };
        for label in base.split('.') {
            check_label(label).map_err(|why| format!("host pattern {text:?}: {why}"))?;
        }
        Ok(Self {
            base: base.to_string(),
            wildcard,
        })
    }

    /// True if `name` (any case, trailing dot allowed) is matched.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if !self.wildcard {
            return name.eq_ignore_ascii_case(&self.base);
        }
        // `name` must be `<one or more labels>.<base>`.
        let Some(split) = name.len().checked_sub(self.base.len() + 1) else {
            return false;
        };
        if split == 0 || !name.is_char_boundary(split) {
            return false;
        }
        let (prefix, rest) = name.split_at(split);
        !prefix.ends_with('.')
            && !prefix.starts_with('.')
            && rest.as_bytes().first() == Some(&b'.')
            && rest[1..].eq_ignore_ascii_case(&self.base)
    }

    /// True for a `*.` pattern.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The name after any `*.`, lowercase, without trailing dot.
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.base)
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Lowercases a name and drops one trailing dot, the form every name in
/// this module is compared in.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Checks one already-lowercased label of a pattern.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label".to_string());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!("label longer than {MAX_LABEL_LEN} characters"));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "character {c:?} not allowed (only a-z 0-9 - _, `*.` prefix)"
        ));
    }
    Ok(())
}

/// First characters of over-long input, for error messages.
fn truncated(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}
