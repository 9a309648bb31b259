//! DNS analysis for the agent: turns raw DNS payloads copied by the
//! cgroup_skb program into names and addresses, matches names against
//! policy host patterns, spots DNS-tunnel shaped traffic and keeps the
//! addresses learned from answers until their TTL runs out.
//!
//! Everything here is pure and synchronous: no I/O, no clocks (callers pass
//! `Instant`s), no panics on hostile input. Wire decoding is done by
//! `hickory-proto`; this module only flattens its output.
//!
//! Names handed out by this module are lowercase ASCII without the trailing
//! dot. Label bytes outside `[a-z0-9-_]` are written as `\DDD` (decimal, as
//! in RFC 1035 master files), so a `.` inside a label can never be confused
//! with a label separator.

// The module's API is complete (and unit-tested) beyond what the daemon calls today.
#![cfg_attr(not(test), allow(dead_code, unused_imports))]

mod learned;
mod names;
mod parse;
mod tunnel;

#[cfg(test)]
mod tests;

pub use self::learned::{DEFAULT_CAPACITY, DEFAULT_SEEN_CAPACITY, DEFAULT_SEEN_TTL, Learned};
pub use self::names::HostPattern;
pub use self::parse::{
    Answer, AnswerData, Dns, MAX_CNAME_HOPS, ParseError, Question, Transport, parse,
};
pub use self::tunnel::{
    DEFAULT_MAX_TRACKED, TunnelDetector, TunnelLimits, TunnelReason, base_domain,
    label_entropy,
};
