//! Names OCSF and guard give to numbers: IP protocols, address families, socket types, and
//! the captions of OCSF severities.

pub(super) fn protocol_name(p: u32) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "ipv6-icmp",
        _ => "other",
    }
}

/// The caption of an OCSF `severity_id`.
pub(super) fn severity_name(id: u32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        6 => "Fatal",
        99 => "Other",
        _ => "Unknown",
    }
}

pub(super) fn family_name(f: u32) -> &'static str {
    match f {
        2 => "inet",
        10 => "inet6",
        17 => "packet",
        _ => "other",
    }
}

pub(super) fn sock_type_name(t: u32) -> &'static str {
    match t {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        _ => "other",
    }
}
