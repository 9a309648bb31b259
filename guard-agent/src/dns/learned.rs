//! Addresses learned from DNS answers, kept per policy key until their TTL
//! (plus a grace period) runs out, and a short record of answers for names
//! that were not allowed, to explain later connections to those addresses.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::names::normalize_name;

/// Default bound on learned (key, address) entries: enough for thousands of
/// hosts per node while keeping the table a few megabytes.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Default bound on "seen" entries; they only serve log lineage.
pub const DEFAULT_SEEN_CAPACITY: usize = 4096;

/// How long a "seen" answer is remembered.
pub const DEFAULT_SEEN_TTL: Duration = Duration::from_secs(600);

/// Most names remembered per address; CDN addresses serve many names and
/// only a few are needed to explain a connection.
const MAX_NAMES: usize = 8;

/// Longest lifetime given to an entry, whatever TTL a server sends: one
/// week (the cap RFC 8767 suggests) plus a day of grace.
const MAX_LIFETIME: Duration = Duration::from_secs(8 * 24 * 3600);

/// Key of an entry: policy/owner key and address.
type Key = (u32, IpAddr);

/// Names and expiry of one address.
#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    expires: Instant,
}

/// Entries with an index ordered by expiry, so expiring is cheap.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    by_expiry: BTreeSet<(Instant, u32, IpAddr)>,
}

impl Table {
    /// Extends an existing entry to at least `expires` and adds `name`.
    /// Returns false when there is no such entry.
    fn extend(&mut self, key: Key, name: &str, expires: Instant) -> bool {
        let Some(entry) = self.entries.get_mut(&key) else {
            return false;
        };
        if expires > entry.expires {
            self.by_expiry.remove(&(entry.expires, key.0, key.1));
            self.by_expiry.insert((expires, key.0, key.1));
            entry.expires = expires;
        }
        add_name(&mut entry.names, name);
        true
    }

    /// Adds a new entry; the caller has checked it is absent.
    fn insert(&mut self, key: Key, name: &str, expires: Instant) {
        let mut names = Vec::new();
        add_name(&mut names, name);
        self.by_expiry.insert((expires, key.0, key.1));
        self.entries.insert(key, Entry { names, expires });
    }

    /// Removes and returns the entries expired at `now`.
    fn pop_expired(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some(&(when, k, addr)) = self.by_expiry.first() {
            if when > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&(k, addr));
            out.push((k, addr));
        }
        out
    }

    /// Removes the entry that expires first; false when there is none.
    fn pop_soonest(&mut self) -> bool {
        match self.by_expiry.pop_first() {
            Some((_, k, addr)) => self.entries.remove(&(k, addr)).is_some(),
            None => false,
        }
    }

    /// Removes every entry of a policy key.
    fn forget_key(&mut self, key: u32) {
        self.entries.retain(|(k, _), _| *k != key);
        self.by_expiry.retain(|(_, k, _)| *k != key);
    }
}

/// Adds a normalised name unless present or the list is full.
fn add_name(names: &mut Vec<String>, name: &str) {
    let name = normalize_name(name);
    if names.len() < MAX_NAMES && !names.contains(&name) {
        names.push(name);
    }
}

/// `now + life`, with `life` capped so hostile TTLs cannot overflow.
fn deadline(now: Instant, life: Duration) -> Instant {
    now.checked_add(life.min(MAX_LIFETIME)).unwrap_or(now)
}

/// Addresses learned per policy key from allowed answers, plus a bounded
/// short-lived record of answers for names that were not allowed.
#[derive(Debug)]
pub struct Learned {
    capacity: usize,
    allowed: Table,
    refused: u64,
    seen_capacity: usize,
    seen_ttl: Duration,
    seen: Table,
}

impl Default for Learned {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_SEEN_CAPACITY, DEFAULT_SEEN_TTL)
    }
}

impl Learned {
    /// A cache holding at most `capacity` learned and `seen_capacity` seen
    /// entries, seen entries living `seen_ttl`.
    pub fn new(capacity: usize, seen_capacity: usize, seen_ttl: Duration) -> Self {
        Self {
            capacity,
            allowed: Table::default(),
            refused: 0,
            seen_capacity,
            seen_ttl,
            seen: Table::default(),
        }
    }

    /// Learns that `addr` answers `name` under `key` for `ttl + grace`.
    ///
    /// A known entry keeps the later of its old and new expiry and gains the
    /// name (up to 8 names). Returns true only when the entry is new, i.e.
    /// when the caller must add the address to the kernel map. When the
    /// table is full a new entry is refused and counted, never evicting a
    /// live one: a flood of answers must not push out addresses in use.
    pub fn learn(
        &mut self,
        key: u32,
        addr: IpAddr,
        name: &str,
        ttl: Duration,
        grace: Duration,
        now: Instant,
    ) -> bool {
        let expires = deadline(now, ttl.saturating_add(grace));
        if self.allowed.extend((key, addr), name, expires) {
            return false;
        }
        if self.allowed.entries.len() >= self.capacity {
            self.refused = self.refused.saturating_add(1);
            return false;
        }
        self.allowed.insert((key, addr), name, expires);
        true
    }

    /// Removes and returns the learned entries expired at `now` (expiry at
    /// or before `now`), oldest first; also drops expired seen entries.
    pub fn expired(&mut self, now: Instant) -> Vec<(u32, IpAddr)> {
        self.seen.pop_expired(now);
        self.allowed.pop_expired(now)
    }

    /// Names a learned address was asked as; present until [`Self::expired`]
    /// removes the entry.
    pub fn names(&self, key: u32, addr: IpAddr) -> Option<&[String]> {
        self.allowed
            .entries
            .get(&(key, addr))
            .map(|e| e.names.as_slice())
    }

    /// When a learned entry expires.
    pub fn expires(&self, key: u32, addr: IpAddr) -> Option<Instant> {
        self.allowed.entries.get(&(key, addr)).map(|e| e.expires)
    }

    /// Number of learned entries.
    pub fn len(&self) -> usize {
        self.allowed.entries.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.allowed.entries.is_empty()
    }

    /// New entries refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Drops everything learned or seen under `key`, e.g. when its policy
    /// is removed. Returns the learned addresses so the caller can clear
    /// them from kernel maps.
    pub fn forget_key(&mut self, key: u32) -> Vec<IpAddr> {
        let addrs = self
            .allowed
            .entries
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|(_, a)| *a)
            .collect();
        self.allowed.forget_key(key);
        self.seen.forget_key(key);
        addrs
    }

    /// Remembers an answer for a name that was not allowed, so a later
    /// denied connection to `addr` can be explained ("resolved from X").
    /// Bounded: when full, the entry closest to expiry makes room.
    pub fn saw(&mut self, key: u32, addr: IpAddr, name: &str, now: Instant) {
        if self.seen_capacity == 0 {
            return;
        }
        self.seen.pop_expired(now);
        let expires = deadline(now, self.seen_ttl);
        if self.seen.extend((key, addr), name, expires) {
            return;
        }
        while self.seen.entries.len() >= self.seen_capacity {
            if !self.seen.pop_soonest() {
                break;
            }
        }
        self.seen.insert((key, addr), name, expires);
    }

    /// Names recently seen answering with `addr` under `key`; kept until
    /// [`Self::expired`] or [`Self::saw`] purges the entry.
    pub fn seen_names(&self, key: u32, addr: IpAddr) -> Option<Vec<String>> {
        self.seen.entries.get(&(key, addr)).map(|e| e.names.clone())
    }

    /// Number of seen entries.
    pub fn seen_len(&self) -> usize {
        self.seen.entries.len()
    }
}
