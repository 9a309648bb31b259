//! What the daemon changes in the kernel maps at run time for the exfiltration defences:
//! taints it confirms or clears, workloads whose DNS it cuts off, and addresses learned from
//! DNS answers for `host:` rules.
use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use guard_common::{NetKeyV4, NetKeyV6, NetRule, Taint, names};

use super::{
    LoadError, Loaded,
    apply::{hash, trie},
};

impl Loaded {
    pub fn taint(&self, tgid: u32) -> Result<Option<Taint>, LoadError> {
        let map = hash::<u32, Taint>(&self.generation, names::TAINT)?;
        Ok(map.get(&tgid, 0).ok())
    }

    pub fn set_taint(&self, tgid: u32, t: Taint) -> Result<(), LoadError> {
        let mut map = hash::<u32, Taint>(&self.generation, names::TAINT)?;
        map.insert(tgid, t, 0).map_err(|source| LoadError::MapInsert { name: names::TAINT, source })
    }

    pub fn clear_taint(&self, tgid: u32) -> Result<(), LoadError> {
        let mut map = hash::<u32, Taint>(&self.generation, names::TAINT)?;
        let _ = map.remove(&tgid);
        Ok(())
    }

    /// Cuts off a workload's DNS (sendmsg/connect to port 53 refused, packets dropped).
    pub fn block_dns(&self, cgroup_id: u64, since_boot_ns: u64) -> Result<(), LoadError> {
        let mut map = hash::<u64, u64>(&self.generation, names::DNS_BLOCKED)?;
        map.insert(cgroup_id, since_boot_ns, 0).map_err(|source| LoadError::MapInsert { name: names::DNS_BLOCKED, source })
    }

    pub fn unblock_dns(&self, cgroup_id: u64) -> Result<(), LoadError> {
        let mut map = hash::<u64, u64>(&self.generation, names::DNS_BLOCKED)?;
        let _ = map.remove(&cgroup_id);
        Ok(())
    }

    /// Writes the network entry of one address (a /32 or /128) of a policy.
    pub fn set_address(&self, policy_id: u32, addr: IpAddr, rule: &NetRule) -> Result<(), LoadError> {
        let policy_id_be = policy_id.to_be_bytes();
        match addr {
            IpAddr::V4(a) => {
                let mut map = trie::<NetKeyV4, NetRule>(&self.generation, names::NET_V4)?;
                map.insert(&Key::new(64, NetKeyV4 { policy_id_be, addr: a.octets() }), rule, 0)
                    .map_err(|source| LoadError::MapInsert { name: names::NET_V4, source })
            }
            IpAddr::V6(a) => {
                let mut map = trie::<NetKeyV6, NetRule>(&self.generation, names::NET_V6)?;
                map.insert(&Key::new(160, NetKeyV6 { policy_id_be, addr: a.octets() }), rule, 0)
                    .map_err(|source| LoadError::MapInsert { name: names::NET_V6, source })
            }
        }
    }

    /// Removes the network entry of one address of a policy.
    pub fn remove_address(&self, policy_id: u32, addr: IpAddr) -> Result<(), LoadError> {
        let policy_id_be = policy_id.to_be_bytes();
        match addr {
            IpAddr::V4(a) => {
                let mut map = trie::<NetKeyV4, NetRule>(&self.generation, names::NET_V4)?;
                let _ = map.remove(&Key::new(64, NetKeyV4 { policy_id_be, addr: a.octets() }));
            }
            IpAddr::V6(a) => {
                let mut map = trie::<NetKeyV6, NetRule>(&self.generation, names::NET_V6)?;
                let _ = map.remove(&Key::new(160, NetKeyV6 { policy_id_be, addr: a.octets() }));
            }
        }
        Ok(())
    }
}
