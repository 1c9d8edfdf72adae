//! A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux): just enough to find the
//! byte offset of a struct member, following anonymous structs and unions, the value
//! of an enumerator, and how many arguments a BTF-typed tracepoint has.
//! Format: Documentation/bpf/btf.rst.

use anyhow::{Context as _, Result, bail};

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;

/// One parsed type: its kind, name and, for structs and unions, its members.
#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// (name, type id, bit offset)
    members: Vec<(String, u32, u32)>,
    /// For enums: (enumerator, value).
    values: Vec<(String, i64)>,
    /// The type a pointer, typedef or modifier refers to (`size_or_type`).
    refers: u32,
    /// vlen: members, enumerators or parameters.
    vlen: u32,
}

#[derive(Debug)]
pub struct Btf {
    /// Index 0 is the void type; ids start at 1.
    types: Vec<Type>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    let s = b.get(off..off + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn str_at(strings: &[u8], off: u32) -> Result<String> {
    let s = strings
        .get(off as usize..)
        .context("BTF string offset out of range")?;
    let end = s
        .iter()
        .position(|&c| c == 0)
        .context("unterminated BTF string")?;
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

impl Btf {
    pub fn from_file(path: &std::path::Path) -> Result<Btf> {
        let data = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {}: this kernel exposes no BTF (CONFIG_DEBUG_INFO_BTF); \
                 copyscope needs it to find kernel struct offsets",
                path.display()
            )
        })?;
        Btf::parse(&data).with_context(|| format!("parsing BTF from {}", path.display()))
    }

    pub fn parse(b: &[u8]) -> Result<Btf> {
        if b.len() < 24 {
            bail!("BTF too short ({} bytes)", b.len());
        }
        let magic = u16::from_le_bytes([b[0], b[1]]);
        if magic != MAGIC {
            bail!("not little-endian BTF (magic {magic:#x})");
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_sec = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .context("BTF type section out of range")?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF string section out of range")?;

        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            members: vec![],
            values: vec![],
            refers: 0,
            vlen: 0,
        }];
        let mut p = 0;
        while p < types_sec.len() {
            let name_off = u32_at(types_sec, p)?;
            let info = u32_at(types_sec, p + 4)?;
            let refers = u32_at(types_sec, p + 8)?;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            p += 12;
            let mut members = Vec::new();
            let mut values = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                3 => 12,          // ARRAY
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let mname = str_at(strings, u32_at(types_sec, m)?)?;
                        let mtype = u32_at(types_sec, m + 4)?;
                        let raw = u32_at(types_sec, m + 8)?;
                        let bit_off = if kind_flag { raw & 0x00ff_ffff } else { raw };
                        members.push((mname, mtype, bit_off));
                    }
                    vlen * 12
                }
                KIND_ENUM => {
                    for i in 0..vlen {
                        let e = p + i * 8;
                        let name = str_at(strings, u32_at(types_sec, e)?)?;
                        let raw = u32_at(types_sec, e + 4)?;
                        let v = if kind_flag {
                            i64::from(raw as i32)
                        } else {
                            i64::from(raw)
                        };
                        values.push((name, v));
                    }
                    vlen * 8
                }
                13 => vlen * 8,       // FUNC_PROTO
                15 | 19 => vlen * 12, // DATASEC, ENUM64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                k => bail!("unknown BTF kind {k} at type {}", types.len()),
            };
            p += extra;
            types.push(Type {
                kind,
                name: str_at(strings, name_off)?,
                members,
                values,
                refers,
                vlen: vlen as u32,
            });
        }
        Ok(Btf { types })
    }

    /// Byte offset of `member` in `struct name` (or union), searching anonymous members.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u64> {
        let id = self
            .types
            .iter()
            .position(|t| {
                (t.kind == KIND_STRUCT || t.kind == KIND_UNION)
                    && t.name == name
                    && !t.members.is_empty()
            })
            .with_context(|| format!("struct {name} not found in kernel BTF"))?;
        self.find(id, member)
            .map(|bits| bits / 8)
            .with_context(|| format!("struct {name} has no member {member} in kernel BTF"))
    }

    /// The value of `enumerator` in `enum name`.
    pub fn enum_value(&self, name: &str, enumerator: &str) -> Result<i64> {
        let t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_ENUM && t.name == name)
            .with_context(|| format!("enum {name} not found in kernel BTF"))?;
        t.values
            .iter()
            .find(|(n, _)| n == enumerator)
            .map(|(_, v)| *v)
            .with_context(|| format!("enum {name} has no {enumerator} in kernel BTF"))
    }

    /// The arguments a BTF-typed tracepoint passes to its programs: the parameters of
    /// `btf_trace_<name>` (a typedef of a pointer to a function prototype) less its first,
    /// the tracepoint's private data.
    pub fn tracepoint_args(&self, name: &str) -> Result<u32> {
        let typedef = format!("btf_trace_{name}");
        let mut t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_TYPEDEF && t.name == typedef)
            .with_context(|| format!("{typedef} not found in kernel BTF"))?;
        // PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: follow to the prototype.
        for _ in 0..8 {
            if t.kind == KIND_FUNC_PROTO {
                return Ok(t.vlen.saturating_sub(1));
            }
            if !matches!(t.kind, 2 | 8 | 9 | 10 | 11 | 18) {
                break;
            }
            t = self
                .types
                .get(t.refers as usize)
                .with_context(|| format!("{typedef} refers to a missing type"))?;
        }
        bail!("{typedef} is not a function pointer in kernel BTF")
    }

    fn find(&self, id: usize, member: &str) -> Option<u64> {
        let t = self.types.get(id)?;
        for (mname, mtype, bit_off) in &t.members {
            if mname == member {
                return Some(*bit_off as u64);
            }
            if mname.is_empty() {
                let inner = self.types.get(*mtype as usize)?;
                if inner.kind == KIND_STRUCT || inner.kind == KIND_UNION {
                    if let Some(o) = self.find(*mtype as usize, member) {
                        return Some(*bit_off as u64 + o);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob: `structs` are (name, [(member, type, bit offset)]) where a member
    /// type of 0 is an int and n > 0 refers to the n-th struct given (1-based, after the int).
    /// (member name, type, bit offset)
    type Member<'a> = (&'a str, u32, u32);

    pub(crate) fn blob(structs: &[(&str, &[Member])]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut add = |s: &str| -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let mut types = Vec::new();
        // id 1: int
        let int_name = add("int");
        for v in [int_name, 1 << 24, 4, 32] {
            types.extend_from_slice(&u32::to_le_bytes(v));
        }
        for (name, members) in structs {
            let n = add(name);
            for v in [n, (KIND_STRUCT << 24) | members.len() as u32, 64] {
                types.extend_from_slice(&u32::to_le_bytes(v));
            }
            for (m, ty, off) in members.iter() {
                let mn = add(m);
                let tid = if *ty == 0 { 1 } else { 1 + ty };
                for v in [mn, tid, *off] {
                    types.extend_from_slice(&u32::to_le_bytes(v));
                }
            }
        }
        framed(&types, &strings)
    }

    /// A BTF blob: the header, then the type and string sections.
    fn framed(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn counts_a_btf_tracepoint_s_arguments_through_its_typedef() {
        // id 1 int; 2 FUNC_PROTO(void *, bool, int, int, int); 3 PTR -> 2;
        // 4 TYPEDEF btf_trace_sched_switch -> 3; 5 TYPEDEF btf_trace_short -> 6;
        // 6 PTR -> 7; 7 FUNC_PROTO(void *, int).
        let mut strings = vec![0u8];
        let mut add = |s: &str| {
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let (int, switch, short) = (
            add("int"),
            add("btf_trace_sched_switch"),
            add("btf_trace_short"),
        );
        let mut t: Vec<u32> = vec![int, 1 << 24, 4, 32];
        t.extend([0, (KIND_FUNC_PROTO << 24) | 5, 0]);
        t.extend([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        t.extend([0, 2 << 24, 2]);
        t.extend([switch, KIND_TYPEDEF << 24, 3]);
        t.extend([short, KIND_TYPEDEF << 24, 6]);
        t.extend([0, 2 << 24, 7]);
        t.extend([0, (KIND_FUNC_PROTO << 24) | 2, 0, 0, 1, 0, 1]);
        let types: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        let btf = Btf::parse(&framed(&types, &strings)).unwrap();
        assert_eq!(btf.tracepoint_args("sched_switch").unwrap(), 4);
        assert_eq!(btf.tracepoint_args("short").unwrap(), 1);
        assert!(btf.tracepoint_args("missing").is_err());
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let b = blob(&[
            ("", &[("f_inode", 0, 64), ("f_flags", 0, 128)]),
            ("file", &[("f_count", 0, 0), ("", 1, 256)]),
        ]);
        let btf = Btf::parse(&b).unwrap();
        assert_eq!(btf.member_offset("file", "f_count").unwrap(), 0);
        assert_eq!(
            btf.member_offset("file", "f_inode").unwrap(),
            (256 + 64) / 8
        );
        assert_eq!(
            btf.member_offset("file", "f_flags").unwrap(),
            (256 + 128) / 8
        );
    }

    #[test]
    fn missing_struct_or_member_is_a_clear_error() {
        let btf = Btf::parse(&blob(&[("task_struct", &[("files", 0, 8 * 1000)])])).unwrap();
        assert_eq!(btf.member_offset("task_struct", "files").unwrap(), 1000);
        let e = btf
            .member_offset("task_struct", "nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no member nope"), "{e}");
        let e = btf
            .member_offset("inode", "i_mode")
            .unwrap_err()
            .to_string();
        assert!(e.contains("struct inode not found"), "{e}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(&[0u8; 10]).is_err());
        assert!(Btf::parse(&[0u8; 64]).is_err());
        let mut b = blob(&[("x", &[("a", 0, 0)])]);
        b.truncate(40);
        assert!(Btf::parse(&b).is_err());
    }

    #[test]
    fn reads_this_kernels_btf_when_present() {
        let path = std::path::Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!("skipped: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let files = btf.member_offset("task_struct", "files").unwrap();
        assert!(files > 0 && files < 16384, "task_struct.files at {files}");
        assert!(btf.member_offset("file", "f_inode").unwrap() > 0);
        assert_eq!(btf.member_offset("inode", "i_mode").unwrap(), 0);
        let head = btf.enum_value("pageflags", "PG_head").unwrap();
        assert!((0..64).contains(&head), "PG_head is bit {head}");
    }

    #[test]
    fn reads_enumerators_signed_and_unsigned() {
        // Strings: "", "e", "A", "B"; one ENUM type with A = 6 and B = -1 (kind_flag: signed).
        let strings = b"\0e\0A\0B\0";
        let mut types = Vec::new();
        for v in [
            1u32,
            (1 << 31) | (KIND_ENUM << 24) | 2,
            4,
            3,
            6,
            5,
            u32::MAX,
        ] {
            types.extend_from_slice(&v.to_le_bytes());
        }
        let btf = Btf::parse(&framed(&types, strings)).unwrap();
        assert_eq!(btf.enum_value("e", "A").unwrap(), 6);
        assert_eq!(btf.enum_value("e", "B").unwrap(), -1);
        let e = btf.enum_value("e", "C").unwrap_err().to_string();
        assert!(e.contains("has no C"), "{e}");
        assert!(btf.enum_value("pageflags", "PG_head").is_err());
    }
}
