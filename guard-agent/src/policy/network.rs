//! The `network` section of an agent: default, raw sockets, `cidr` rules with ports, and where
//! `host` rules go. CIDRs are normalised as the kernel judges destinations: an IPv4-mapped IPv6
//! prefix (`::ffff:a.b.c.d/len`, len >= 96) is the IPv4 prefix `a.b.c.d/(len - 96)`, because
//! connect4/6 judge a v4-mapped destination by the IPv4 rules and the packets leave as IPv4.
use std::net::{IpAddr, Ipv6Addr};

use super::{
    Cidr, NetAction, NetRule, Network, PolicyError,
    parse::Parser,
    yaml::Node,
};

impl Parser<'_> {
    pub(crate) fn network(&self, node: &Node) -> Result<Network, PolicyError> {
        let m = self.map(node, "`network`", &["default", "raw_sockets", "allow", "deny", "dns_grace"])?;
        let default = m.get("default").map(|n| self.net_action(n, "default")).transpose()?.unwrap_or(NetAction::Allow);
        let raw_sockets = m.get("raw_sockets").map(|n| self.net_action(n, "raw_sockets")).transpose()?.unwrap_or(NetAction::Deny);
        let mut rules = Vec::new();
        let mut hosts = Vec::new();
        for (key, action) in [("deny", NetAction::Deny), ("allow", NetAction::Allow)] {
            if let Some(list) = m.get(key) {
                for r in self.seq(list, &format!("`network.{key}`"))? {
                    let is_host = action == NetAction::Allow
                        && self.map(r, "a network rule", &["cidr", "host", "ports", "message"]).is_ok_and(|m| m.get("host").is_some());
                    if is_host {
                        hosts.push(self.host_rule(r)?);
                        continue;
                    }
                    rules.push(self.net_rule(r, action)?);
                }
            }
        }
        rules.sort_by_key(|r| (r.pos.line, r.pos.col));
        let dns_grace = m.get("dns_grace").map(|n| self.duration(n)).transpose()?.unwrap_or(super::DEFAULT_DNS_GRACE);
        Ok(Network { default, raw_sockets, rules, hosts, dns_grace })
    }

    fn net_action(&self, node: &Node, key: &str) -> Result<NetAction, PolicyError> {
        match self.str(node, &format!("`{key}`"))? {
            "allow" => Ok(NetAction::Allow),
            "deny" => Ok(NetAction::Deny),
            other => Err(self.err(node.pos, format!("`{key}` must be `allow` or `deny`, not `{other}`"))),
        }
    }

    fn net_rule(&self, node: &Node, action: NetAction) -> Result<NetRule, PolicyError> {
        let keys: &[&str] = if action == NetAction::Allow { &["cidr", "host", "ports", "message"] } else { &["cidr", "ports", "message"] };
        let m = self.map(node, "a network rule", keys)?;
        let cidr_node = m.require("cidr", node, self)?;
        let cidr = self.cidr(cidr_node)?;
        let ports = match m.get("ports") {
            Some(n) => self.ports(n)?,
            None => Vec::new(),
        };
        let message = m.get("message").map(|n| self.str(n, "`message`").map(str::to_owned)).transpose()?;
        Ok(NetRule { action, cidr, ports, message, pos: node.pos })
    }

    pub(crate) fn cidr(&self, node: &Node) -> Result<Cidr, PolicyError> {
        let text = self.nonempty_str(node, "`cidr`")?;
        let bad = |why: &str| self.err(node.pos, format!("`{text}` is not a valid CIDR: {why}"));
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = match len {
            None => max,
            Some(l) => l.parse().ok().filter(|l| *l <= max).ok_or_else(|| bad("bad prefix length"))?,
        };
        Ok(normalise(Cidr { addr: mask(addr, len), len }))
    }

    pub(crate) fn ports(&self, node: &Node) -> Result<Vec<(u16, u16)>, PolicyError> {
        let items = self.seq(node, "`ports`")?;
        if items.is_empty() {
            return Err(self.err(node.pos, "`ports` is empty: leave it out to mean every port"));
        }
        items
            .iter()
            .map(|item| {
                let text = self.str(item, "a port")?;
                let bad = || self.err(item.pos, format!("`{text}` is not a port (1-65535) or range (`lo-hi`)"));
                let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
                match text.split_once('-') {
                    Some((lo, hi)) => match (port(lo), port(hi)) {
                        (Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi)),
                        _ => Err(bad()),
                    },
                    None => port(text).map(|p| (p, p)).ok_or_else(bad),
                }
            })
            .collect()
    }
}

/// Clears the host bits of `addr` beyond `len`.
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// `::ffff:0:0/96` and everything in it, as the IPv4 prefix the kernel judges it as. Shorter
/// IPv6 prefixes stay IPv6 (see [`mapped_part_unreachable`]).
pub fn normalise(c: Cidr) -> Cidr {
    match c.addr {
        IpAddr::V6(a) if c.len >= 96 => match a.to_ipv4_mapped() {
            Some(v4) => Cidr { addr: IpAddr::V4(v4), len: c.len - 96 },
            None => c,
        },
        _ => c,
    }
}

/// An IPv6 prefix shorter than /96 that contains every IPv4-mapped address (`::/0` up to
/// `::ffff:0:0/95`): its mapped part can never fire, because the kernel judges those
/// destinations by the IPv4 rules; only native IPv6 destinations reach it.
pub fn mapped_part_unreachable(c: &Cidr) -> bool {
    let IpAddr::V6(a) = c.addr else { return false };
    let mapped = u128::from(Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0, 0]));
    let m = if c.len == 0 { 0 } else { u128::MAX << (128 - c.len) };
    c.len < 96 && mapped & m == u128::from(a)
}
