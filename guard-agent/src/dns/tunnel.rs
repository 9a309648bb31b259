//! Detection of DNS-tunnel shaped queries: data smuggled out in long,
//! random-looking names, or many queries to one domain in a short time.
//!
//! Tools such as iodine and dnscat2 encode data as base32/base64 labels
//! under an attacker's domain, so their names are long, their labels are
//! near the 63-byte limit with high character entropy, and they send a
//! steady stream of queries to one base domain.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use super::names::normalize_name;

/// Default bound on tracked (workload, base domain) pairs.
pub const DEFAULT_MAX_TRACKED: usize = 4096;

/// Longest label kept in a [`TunnelReason::HighEntropy`] finding.
const MAX_REPORTED_LABEL: usize = 63;

/// Second-level labels under which registrations happen one level deeper
/// in many two-letter country domains (`example.co.uk`, `example.or.jp`).
const SHORT_SECOND_LEVELS: &[&str] = &[
    "ac", "co", "com", "edu", "gob", "go", "gov", "ltd", "mil", "ne", "net", "nic", "or", "org",
    "plc", "sch",
];

/// Thresholds above which a query looks like tunnel traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelLimits {
    /// Longest normal query name, in characters. Default 120: ordinary
    /// names (even long CDN and cloud hosts) stay well below, while iodine
    /// and dnscat2 fill names to 200+ characters to carry more data.
    pub max_name_len: usize,
    /// Longest normal label. Default 52: CDN and cache-busting hashes are
    /// at most ~40 characters, tunnels use labels close to the 63 limit.
    pub max_label_len: usize,
    /// Highest normal Shannon entropy of a label, in bits per character.
    /// Default 4.0: words and hex hashes (at most 4 bits/char) stay below,
    /// random base32/base64 payloads reach about 4.5-5.
    pub max_label_entropy: f64,
    /// Labels shorter than this are not entropy-checked. Default 20: short
    /// labels give meaningless entropy estimates (a 16-character label of
    /// distinct characters already scores 4 bits/char).
    pub min_entropy_label_len: usize,
    /// Most queries to one base domain per workload within `window`.
    /// Default 60 (one per second on average): normal clients cache
    /// answers, tunnels must query for every chunk of data they move.
    pub max_queries_per_window: u32,
    /// Length of the rate window. Default 60 s. A zero window disables
    /// the rate check.
    pub window: Duration,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        Self {
            max_name_len: 120,
            max_label_len: 52,
            max_label_entropy: 4.0,
            min_entropy_label_len: 20,
            max_queries_per_window: 60,
            window: Duration::from_secs(60),
        }
    }
}

impl TunnelLimits {
    /// The first shape limit `qname` crosses (length, label length,
    /// entropy), without touching any rate state: usable to decide about
    /// a single query.
    pub fn check_name(&self, qname: &str) -> Option<TunnelReason> {
        self.shape_reasons(&normalize_name(qname))
            .into_iter()
            .next()
    }

    /// Every shape limit a normalised name crosses, in a fixed order.
    fn shape_reasons(&self, name: &str) -> Vec<TunnelReason> {
        let mut reasons = Vec::new();
        if name.len() > self.max_name_len {
            reasons.push(TunnelReason::LongName {
                len: name.len(),
                max: self.max_name_len,
            });
        }
        if let Some(longest) = name.split('.').max_by_key(|l| l.len())
            && longest.len() > self.max_label_len
        {
            reasons.push(TunnelReason::LongLabel {
                len: longest.len(),
                max: self.max_label_len,
            });
        }
        let noisiest = name
            .split('.')
            .filter(|l| l.len() >= self.min_entropy_label_len)
            .map(|l| (l, label_entropy(l)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((label, bits)) = noisiest
            && bits > self.max_label_entropy
        {
            reasons.push(TunnelReason::HighEntropy {
                label: label.chars().take(MAX_REPORTED_LABEL).collect(),
                bits_per_char: bits,
                max: self.max_label_entropy,
            });
        }
        reasons
    }
}

/// Which limit a query crossed.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelReason {
    /// The whole name is too long.
    LongName { len: usize, max: usize },
    /// One label is too long.
    LongLabel { len: usize, max: usize },
    /// One label looks random (bits per character above the limit).
    HighEntropy {
        label: String,
        bits_per_char: f64,
        max: f64,
    },
    /// Too many queries to one base domain; `queries` is the estimated
    /// count over the last `window`.
    Rate {
        queries: u32,
        window: Duration,
        max: u32,
    },
}

impl TunnelReason {
    /// Bit used to remember that this kind was already reported for a pair.
    fn bit(&self) -> u8 {
        match self {
            Self::LongName { .. } => 1,
            Self::LongLabel { .. } => 2,
            Self::HighEntropy { .. } => 4,
            Self::Rate { .. } => 8,
        }
    }
}

impl fmt::Display for TunnelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LongName { len, max } => {
                write!(f, "query name is {len} characters long (limit {max})")
            }
            Self::LongLabel { len, max } => {
                write!(f, "query name has a {len}-character label (limit {max})")
            }
            Self::HighEntropy {
                label,
                bits_per_char,
                max,
            } => write!(
                f,
                "label {label:?} looks random: {bits_per_char:.2} bits/char (limit {max:.2})"
            ),
            Self::Rate {
                queries,
                window,
                max,
            } => write!(
                f,
                "about {queries} queries to one domain within {}s (limit {max})",
                window.as_secs_f64()
            ),
        }
    }
}

/// A query that crossed a limit, with where it went.
#[derive(Debug, Clone, PartialEq)]
pub struct TunnelFinding {
    /// The limit crossed.
    pub reason: TunnelReason,
    /// Base domain the query went to (see [`base_domain`]).
    pub base_domain: String,
    /// The normalised query name.
    pub qname: String,
}

/// The registrable part of a name: its last two labels, or last three when
/// the second-to-last is a short generic label under a two-letter country
/// code (`example.co.uk`). An approximation without the public suffix list:
/// it groups all of `*.github.io` under `github.io`, which only makes the
/// rate check stricter for such shared domains.
pub fn base_domain(name: &str) -> String {
    let mut name = normalize_name(name);
    let mut labels = name.rsplit('.');
    let tld = labels.next().unwrap_or_default();
    let second = labels.next().unwrap_or_default();
    let keep = if tld.len() == 2
        && tld.bytes().all(|b| b.is_ascii_lowercase())
        && SHORT_SECOND_LEVELS.contains(&second)
    {
        3
    } else {
        2
    };
    // The dot in front of the kept labels; none means the name is short.
    match name.rmatch_indices('.').nth(keep - 1) {
        Some((dot, _)) => name.split_off(dot + 1),
        None => name,
    }
}

/// Shannon entropy of a label's bytes in bits per character; 0 for an
/// empty label. Random base32 text scores close to 5, hex close to 4.
pub fn label_entropy(label: &str) -> f64 {
    let bytes = label.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[usize::from(b)] += 1;
    }
    let total = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum()
}

/// Rate state and reported kinds for one (workload, base domain) pair.
#[derive(Debug)]
struct Pair {
    /// Position in the recency index.
    stamp: u64,
    /// Start of the current fixed window.
    window_start: Instant,
    /// Queries in the current window.
    current: u32,
    /// Queries in the window before it.
    previous: u32,
    /// Bits of the reason kinds already reported.
    reported: u8,
}

impl Pair {
    /// Counts one query at `now` and returns the estimated number of
    /// queries in the sliding window ending now.
    ///
    /// Sliding-window counter: two fixed windows, the previous one weighted
    /// by how much of it still overlaps the sliding window. Two integers per
    /// pair instead of one timestamp per query; exact while the rate is
    /// steady, within one window's count of the truth for bursts.
    fn count(&mut self, now: Instant, window: Duration) -> f64 {
        let mut elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= window.saturating_mul(2) {
            self.previous = 0;
            self.current = 0;
            self.window_start = now;
            elapsed = Duration::ZERO;
        } else if elapsed >= window {
            self.previous = self.current;
            self.current = 0;
            self.window_start = self.window_start.checked_add(window).unwrap_or(now);
            elapsed = now.saturating_duration_since(self.window_start);
        }
        self.current = self.current.saturating_add(1);
        let overlap = 1.0 - (elapsed.as_secs_f64() / window.as_secs_f64()).clamp(0.0, 1.0);
        f64::from(self.previous) * overlap + f64::from(self.current)
    }
}

/// Watches the queries of each workload for tunnel-shaped traffic.
///
/// State is kept per (workload, base domain) pair, at most `max_tracked`
/// pairs; the least recently queried pair is dropped to make room. Each
/// kind of [`TunnelReason`] is reported once per tracked pair, so a tunnel
/// yields a handful of findings, not one per query.
#[derive(Debug)]
pub struct TunnelDetector {
    limits: TunnelLimits,
    max_tracked: usize,
    pairs: HashMap<(u64, String), Pair>,
    /// Recency index: stamp -> pair key, oldest first.
    recency: BTreeMap<u64, (u64, String)>,
    next_stamp: u64,
}

impl Default for TunnelDetector {
    fn default() -> Self {
        Self::new(TunnelLimits::default(), DEFAULT_MAX_TRACKED)
    }
}

impl TunnelDetector {
    /// A detector with the given limits tracking at most `max_tracked`
    /// pairs (at least 1).
    pub fn new(limits: TunnelLimits, max_tracked: usize) -> Self {
        Self {
            limits,
            max_tracked: max_tracked.max(1),
            pairs: HashMap::new(),
            recency: BTreeMap::new(),
            next_stamp: 0,
        }
    }

    /// The limits in use.
    pub fn limits(&self) -> &TunnelLimits {
        &self.limits
    }

    /// Number of tracked (workload, base domain) pairs.
    pub fn tracked(&self) -> usize {
        self.pairs.len()
    }

    /// Records one query of `workload` and returns a finding if it crosses
    /// a limit whose kind was not yet reported for this pair.
    pub fn observe(&mut self, workload: u64, qname: &str, now: Instant) -> Option<TunnelFinding> {
        let qname = normalize_name(qname);
        let key = (workload, base_domain(&qname));
        let stamp = self.next_stamp;
        self.next_stamp += 1;

        if let Some(pair) = self.pairs.get_mut(&key) {
            self.recency.remove(&pair.stamp);
            pair.stamp = stamp;
        } else {
            while self.pairs.len() >= self.max_tracked {
                let Some((_, oldest)) = self.recency.pop_first() else {
                    break;
                };
                self.pairs.remove(&oldest);
            }
            self.pairs.insert(
                key.clone(),
                Pair {
                    stamp,
                    window_start: now,
                    current: 0,
                    previous: 0,
                    reported: 0,
                },
            );
        }
        self.recency.insert(stamp, key.clone());
        let pair = self.pairs.get_mut(&key)?;

        let mut reasons = self.limits.shape_reasons(&qname);
        if !self.limits.window.is_zero() {
            let estimate = pair.count(now, self.limits.window);
            let max = self.limits.max_queries_per_window;
            if estimate > f64::from(max) {
                reasons.push(TunnelReason::Rate {
                    // Saturating float-to-int cast; estimate > max >= 0.
                    queries: estimate.ceil() as u32,
                    window: self.limits.window,
                    max,
                });
            }
        }
        let reason = reasons.into_iter().find(|r| pair.reported & r.bit() == 0)?;
        pair.reported |= reason.bit();
        Some(TunnelFinding {
            reason,
            base_domain: key.1,
            qname,
        })
    }

    /// Drops all state of a workload, e.g. when its cgroup goes away.
    pub fn forget_workload(&mut self, workload: u64) {
        self.pairs.retain(|(w, _), _| *w != workload);
        self.recency.retain(|_, (w, _)| *w != workload);
    }
}
