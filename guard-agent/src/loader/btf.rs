//! Just enough of a BTF reader to find the byte offset of a struct member in the running kernel
//! (`/sys/kernel/btf/vmlinux`). Format: Documentation/bpf/btf.rst in the kernel tree.
use std::collections::HashMap;

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}")]
    Read { path: String, #[source] source: std::io::Error },
    #[error("BTF data is malformed: {what}")]
    Malformed { what: &'static str },
}

struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset (the kind_flag bitfield encoding already removed).
    bit_offset: u32,
}

struct Composite {
    members: Vec<Member>,
}

pub struct Btf {
    strings: Vec<u8>,
    /// Struct and union types by id.
    composites: HashMap<u32, Composite>,
    /// Struct ids by name (the first one wins; vmlinux has one per name).
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Btf {
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.to_owned(), source })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let bad = |what| BtfError::Malformed { what };
        if u16_at(data, 0) != Some(MAGIC) {
            return Err(bad("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4).ok_or(bad("short header"))? as usize;
        let field = |i: usize| u32_at(data, 8 + 4 * i).map(|v| v as usize).ok_or(bad("short header"));
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types = data.get(hdr_len + type_off..hdr_len + type_off + type_len).ok_or(bad("type section out of bounds"))?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len).ok_or(bad("string section out of bounds"))?.to_vec();

        let mut btf = Btf { strings, composites: HashMap::new(), structs_by_name: HashMap::new() };
        let mut at = 0;
        let mut id = 1u32;
        while at < types.len() {
            let name_off = u32_at(types, at).ok_or(bad("truncated type"))?;
            let info = u32_at(types, at + 4).ok_or(bad("truncated type"))?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for m in 0..vlen {
                    let base = at + 12 * m;
                    let name_off = u32_at(types, base).ok_or(bad("truncated member"))?;
                    let type_id = u32_at(types, base + 4).ok_or(bad("truncated member"))?;
                    let offset = u32_at(types, base + 8).ok_or(bad("truncated member"))?;
                    let bit_offset = if kind_flag { offset & 0x00ff_ffff } else { offset };
                    members.push(Member { name_off, type_id, bit_offset });
                }
                btf.composites.insert(id, Composite { members });
                if kind == KIND_STRUCT && name_off != 0 {
                    let name = btf.string(name_off).to_owned();
                    btf.structs_by_name.entry(name).or_insert(id);
                }
            }
            at += extra;
            id += 1;
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Byte offset of `member` in `struct name`, looking into anonymous struct/union members
    /// (which randomized or grouped layouts use). `None` if absent or a bitfield.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = *self.structs_by_name.get(name)?;
        let bits = self.find_member(id, member, 0)?;
        (bits % 8 == 0).then_some(bits / 8)
    }

    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let composite = self.composites.get(&id)?;
        for m in &composite.members {
            if m.name_off != 0 && self.string(m.name_off) == member {
                return Some(m.bit_offset);
            }
        }
        if depth >= 8 {
            return None;
        }
        composite.members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            // Anonymous members are struct/union types, possibly behind modifiers we don't
            // track; only direct composites are searched.
            self.find_member(m.type_id, member, depth + 1).map(|inner| m.bit_offset + inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF for `struct s { int a; union { int b; long c; }; }` by hand.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0long\0".to_vec();
        let s = |name: &str| strings.windows(name.len() + 1).position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0).unwrap() as u32;
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        // 1: int
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: long
        push(&[s("long"), KIND_INT << 24, 8, 64]);
        // 3: union { int b; long c; }
        push(&[0, (KIND_UNION << 24) | 2, 8, s("b"), 1, 0, s("c"), 2, 0]);
        // 4: struct s { int a; union anon (at 64 bits); }
        push(&[s("s"), (KIND_STRUCT << 24) | 2, 16, s("a"), 1, 0, 0, 3, 64]);
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("s", "a"), Some(0));
        assert_eq!(btf.member_offset("s", "c"), Some(8));
        assert_eq!(btf.member_offset("s", "zz"), None);
        assert_eq!(btf.member_offset("nope", "a"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"garbage").is_err());
        let mut d = sample();
        d.truncate(30);
        assert!(Btf::parse(&d).is_err());
    }

    #[test]
    fn running_kernel_has_the_fields_guard_reads() {
        let btf = Btf::from_file(crate::paths::VMLINUX_BTF).expect("guard's machines have kernel BTF");
        assert!(btf.member_offset("task_struct", "real_parent").is_some());
        assert!(btf.member_offset("task_struct", "tgid").is_some());
    }
}
