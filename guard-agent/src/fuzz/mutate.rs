//! The fuzzers' seeded RNG and mutators. Mutations are chosen to keep most inputs close to
//! valid (a line moved, a scalar swapped for an awkward one, a section cut short), because a
//! parser that rejects random bytes at its first check is not exercised by random bytes.

/// One step of splitmix64: scrambles a counter into a well-spread seed.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xorshift64*, seeded through splitmix so that seeds 1, 2, 3 start far apart.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(splitmix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u32, den: u32) -> bool {
        self.below(den as usize) < num as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// Small numbers most of the time, sometimes anything: lengths and counts that land on the
    /// edges parsers get wrong.
    pub fn size(&mut self, typical: usize) -> usize {
        match self.below(10) {
            0 => 0,
            1 => self.below(1 << 16),
            _ => self.below(typical + 1),
        }
    }

    /// An integer from the usual edge cases or at random.
    pub fn edge_u64(&mut self) -> u64 {
        const EDGES: &[u64] = &[0, 1, 2, 7, 8, 15, 16, 63, 64, 127, 128, 255, 256, 4095, 4096, 65535, 65536, 1 << 31, u32::MAX as u64, 1 << 32, i64::MAX as u64, u64::MAX];
        if self.chance(1, 2) { *self.pick(EDGES) } else { self.next_u64() >> self.below(64) }
    }
}

/// Scalars that YAML and our scalar parsers have opinions about.
const AWKWARD: &[&str] = &[
    "~", "null", "''", "\"\"", "-1", "0", "00", "-0", "+1", "4294967295", "4294967296", "18446744073709551616", "1e999", "0x10", "1_000",
    "true", "no", "yes", "NaN", ".inf", "99999999999999999999s", "1ms", "0s", "-5s", "1h", "1d", "1.5s", "s", "8MiB", "8EiB", "16EiB",
    "0B", "1KiB", "MiB", "[]", "{}", "[", "{", "]", "}", "[a, [b, [c]]]", "{a: {b: c}}", "*a", "&a x", "!!str x", "!!binary aGk=", "!custom x",
    "? x", ": x", "- x", "---", "...", "|", ">-", "#", "\t", "\\", "\"\\u0000\"", "\"\\x7f\\e\"", "'it''s'", "\u{feff}x", "é", "\u{202e}",
    "/", "/**", "**", "*", "?", "[!", "{a,b", "a/../b", "/usr/bin/", "/usr/bin/rm", "rm", "mkfs", "127.0.0.1/8", "255.255.255.255/33",
    "::/0", "::ffff:1.2.3.4/128", "0.0.0.0/0", "fe80::1%eth0", "1.2.3", "65535", "65536", "1-65535", "80-79", "0-0", "example.com",
    "*.example.com", "**.com", ".", "..", "a..b", "xn--", "%", "%YAML 1.2", "key: value", "deny", "allow", "kill", "audit", "enforce",
    "allowlist-only", "tcp://h:1", "tls://[::1]:6514", "https://user:pw@h:99999/x", "file", "stdout", "syslog", "splunk_hec",
    "elasticsearch", "(", "(?P<secret>x)", "[a-", "\\p{Greek}+", "a{1000}{1000}", "127.0.0.1:0", "[::1]:9464", ":80", "local0", "kern",
];

pub fn awkward(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => "a".repeat(rng.size(5000)),
        1 => "/".repeat(rng.size(300)),
        2 => format!("{}", rng.edge_u64()),
        _ => (*rng.pick(AWKWARD)).to_owned(),
    }
}

/// Applies 0..=`max` random edits to a YAML-ish text. `keys` are mapping keys of the format,
/// inserted to make unknown/duplicate/misplaced-key paths run; `splice` are other valid texts
/// whose lines may be borrowed.
/// Texts grow no longer than this (a policy file far larger than any real one).
const MAX_TEXT: usize = 256 << 10;

pub fn mutate_text(rng: &mut Rng, text: &str, max: usize, keys: &[&str], splice: &[&str]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let edits = rng.below(max + 1);
    for _ in 0..edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let at = rng.below(lines.len());
        match rng.below(16) {
            0 => {
                lines.remove(at);
            }
            1 => {
                let l = lines[at].clone();
                lines.insert(at, l);
            }
            2 => {
                let other = rng.below(lines.len());
                lines.swap(at, other);
            }
            3 => lines[at] = reindent(rng, &lines[at]),
            4..=6 => lines[at] = replace_scalar(rng, &lines[at]),
            7 => {
                let indent = indent_of(&lines[at]).to_owned();
                let key = rng.pick(keys);
                lines.insert(at, format!("{indent}{key}: {}", awkward(rng)));
            }
            8 => {
                if let Some(other) = (!splice.is_empty()).then(|| rng.pick(splice)) {
                    let theirs: Vec<&str> = other.lines().collect();
                    if !theirs.is_empty() {
                        let from = rng.below(theirs.len());
                        let n = 1 + rng.below(6);
                        for (k, l) in theirs[from..(from + n).min(theirs.len())].iter().enumerate() {
                            lines.insert((at + k).min(lines.len()), (*l).to_owned());
                        }
                    }
                }
            }
            9 => {
                lines.truncate(at + 1);
                let cut = rng.below(lines[at].len() + 1);
                lines[at] = cut_at(&lines[at], cut).to_owned();
            }
            10 => lines.insert(at, nesting(rng)),
            11 => {
                // A flow collection on one line, in place of a block one.
                lines[at] = format!("{}{}", indent_of(&lines[at]), flow(rng, 0));
            }
            12 => {
                let mut bytes = std::mem::take(&mut lines[at]).into_bytes();
                let n = 1 + rng.below(3);
                for _ in 0..n {
                    let i = rng.below(bytes.len() + 1);
                    match rng.below(3) {
                        0 if i < bytes.len() => bytes[i] ^= 1 << rng.below(8),
                        1 if i < bytes.len() => {
                            bytes.remove(i);
                        }
                        _ => bytes.insert(i, *rng.pick(b"-:#[]{},&*!|>'\"%@`\t ?\\\r\x00\x7f")),
                    }
                }
                lines[at] = String::from_utf8_lossy(&bytes).into_owned();
            }
            13 => lines[at].push_str(&format!(" # {}", awkward(rng))),
            14 => {
                // Many copies: lists and maps far longer than any test writes.
                let l = lines[at].clone();
                let n = rng.size(200).min(MAX_TEXT / (l.len() + 1));
                for _ in 0..n {
                    lines.insert(at, l.clone());
                }
            }
            _ => lines.insert(at, format!("{}- {}", indent_of(&lines[at]), awkward(rng))),
        }
    }
    let mut out = lines.join(if rng.chance(1, 20) { "\r\n" } else { "\n" });
    out.truncate(cut_at(&out, 2 * MAX_TEXT).len());
    if rng.chance(3, 4) {
        out.push('\n');
    }
    out
}

fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

fn reindent(rng: &mut Rng, line: &str) -> String {
    let body = line.trim_start();
    let indent = indent_of(line).len();
    match rng.below(4) {
        0 => format!("{}{body}", " ".repeat(indent + 1 + rng.below(4))),
        1 => format!("{}{body}", " ".repeat(indent.saturating_sub(1 + rng.below(4)))),
        2 => format!("\t{body}"),
        _ => body.to_owned(),
    }
}

/// Swaps the value after `key: ` or `- ` for an awkward one.
fn replace_scalar(rng: &mut Rng, line: &str) -> String {
    let split = line.find(": ").map(|i| i + 2).or_else(|| line.find("- ").map(|i| i + 2));
    match split {
        Some(i) => format!("{}{}", &line[..i], awkward(rng)),
        None => format!("{line} {}", awkward(rng)),
    }
}

/// A prefix of `s` of at most `n` bytes, cut at a character boundary.
pub fn cut_at(s: &str, mut n: usize) -> &str {
    n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Deeply nested collections: flow or block, closed or not.
fn nesting(rng: &mut Rng) -> String {
    let depth = match rng.below(4) {
        0 => rng.below(50_000),
        _ => rng.below(200),
    };
    match rng.below(6) {
        0 => "[".repeat(depth),
        1 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        2 => format!("{}x{}", "{a: ".repeat(depth), "}".repeat(depth)),
        // Compact block collections: one line, any depth.
        3 => format!("{}x", "- ".repeat(depth)),
        4 => format!("{}x", "? ".repeat(depth)),
        _ => (0..depth.min(300)).map(|d| format!("{}- ", " ".repeat(d * 2))).collect::<Vec<_>>().join("\n"),
    }
}

fn flow(rng: &mut Rng, depth: usize) -> String {
    if depth > 3 || rng.chance(1, 3) {
        return awkward(rng);
    }
    let n = rng.below(4);
    let items: Vec<String> = (0..n).map(|_| flow(rng, depth + 1)).collect();
    if rng.chance(1, 2) {
        format!("[{}]", items.join(", "))
    } else {
        let pairs: Vec<String> = items.iter().map(|v| format!("{}: {v}", rng.pick(&["a", "path", "cidr", "name", "type"]))).collect();
        format!("{{{}}}", pairs.join(", "))
    }
}

/// Applies 0..=`max` byte-level edits: flips, overwrites with edge values, inserts, deletes,
/// duplicated ranges and truncation.
pub fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>, max: usize) {
    let edits = rng.below(max + 1);
    for _ in 0..edits {
        let len = bytes.len();
        let at = rng.below(len + 1);
        match rng.below(7) {
            0 if at < len => bytes[at] ^= 1 << rng.below(8),
            1 if at < len => bytes[at] = *rng.pick(&[0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xff]),
            2 => bytes.insert(at, rng.next_u64() as u8),
            3 if at < len => {
                let n = (1 + rng.below(16)).min(len - at);
                bytes.drain(at..at + n);
            }
            4 if at < len => {
                let n = (1 + rng.below(32)).min(len - at);
                let copy = bytes[at..at + n].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, copy);
            }
            5 => bytes.truncate(at),
            _ if at + 4 <= len => bytes[at..at + 4].copy_from_slice(&(rng.edge_u64() as u32).to_ne_bytes()),
            _ => {}
        }
    }
}
