//! The values of the kernel programs' globals, from the families' offset tables: struct
//! members and enum values from BTF, record fields from tracefs.

use std::{collections::HashMap, path::Path};

use anyhow::{Result, anyhow, bail};

use super::{btf::Btf, tracefs};
use crate::family::{Need, Offset, Source};

/// What one source gave.
enum Lookup {
    Found(u64),
    /// The source exists on this kernel but lacks what was asked (said why).
    Absent(anyhow::Error),
    /// A record field whose tracepoints this kernel has none of.
    NoEvent,
}

/// Record formats read once each, however many fields are asked of them.
struct Formats<'a> {
    root: &'a Path,
    read: HashMap<(&'static str, &'static str), Option<HashMap<String, tracefs::Field>>>,
}

impl Formats<'_> {
    fn get(
        &mut self,
        event: (&'static str, &'static str),
    ) -> Result<Option<&HashMap<String, tracefs::Field>>> {
        if !self.read.contains_key(&event) {
            let f = tracefs::format(self.root, event.0, event.1)?;
            self.read.insert(event, f);
        }
        Ok(self.read[&event].as_ref())
    }
}

fn lookup(source: &Source, btf: &Btf, formats: &mut Formats<'_>) -> Result<Lookup> {
    Ok(match *source {
        Source::Member(members, plus) => {
            let mut last = anyhow!("no member given");
            for (ty, member) in members {
                match btf.member_offset(ty, member) {
                    Ok(off) => return Ok(Lookup::Found(off + plus)),
                    Err(e) => last = e,
                }
            }
            Lookup::Absent(last)
        }
        Source::EnumBit(ty, name) => match btf.enum_value(ty, name) {
            Ok(v) if (0..64).contains(&v) => Lookup::Found(v as u64),
            Ok(v) => Lookup::Absent(anyhow!("{ty}::{name} is {v}, not a bit number")),
            Err(e) => Lookup::Absent(e),
        },
        Source::Helper(name) => match btf.enum_value("bpf_func_id", &format!("BPF_FUNC_{name}")) {
            Ok(v) if v > 0 => Lookup::Found(v as u64),
            Ok(v) => Lookup::Absent(anyhow!("BPF_FUNC_{name} is {v}")),
            Err(e) => Lookup::Absent(e),
        },
        Source::TracepointArgs(name, n) => match btf.tracepoint_args(name) {
            Ok(k) if k >= n => Lookup::Found(1),
            Ok(k) => Lookup::Absent(anyhow!("{name} has {k} arguments, fewer than {n}")),
            Err(e) => Lookup::Absent(e),
        },
        Source::Field(events, field) => {
            for &event in events {
                if let Some(f) = formats.get(event)? {
                    return Ok(match f.get(field) {
                        Some(f) => Lookup::Found(f.offset),
                        None => Lookup::Absent(anyhow!("{} has no {field} field", event.1)),
                    });
                }
            }
            Lookup::NoEvent
        }
    })
}

/// Every global of `offsets` this kernel gives a value for. A required value that is
/// missing, or a record field missing from a tracepoint that exists, is an error; the
/// rest stay 0, and the probes that need them fail to attach, saying why.
pub fn resolve<'a>(
    offsets: impl IntoIterator<Item = &'a Offset>,
    btf: &Btf,
    root: &Path,
) -> Result<Vec<(&'static str, u64)>> {
    let mut formats = Formats {
        root,
        read: HashMap::new(),
    };
    let mut looked = Vec::new();
    for o in offsets {
        let l = lookup(&o.from, btf, &mut formats)?;
        match (o.need, &l) {
            (Need::Required, Lookup::Absent(_) | Lookup::NoEvent)
            | (Need::WithEvent, Lookup::Absent(_)) => {
                let Lookup::Absent(e) = l else {
                    bail!("{}: no tracepoint of this kernel has it", o.global)
                };
                return Err(e.context(format!("finding {}", o.global)));
            }
            _ => looked.push((o, l)),
        }
    }
    let found = |global: &str| {
        looked
            .iter()
            .any(|(o, l)| o.global == global && matches!(l, Lookup::Found(_)))
    };
    // A group is complete when each of its offsets, and each of its parent groups', is found.
    let complete = |group: &str| {
        let mut prefix = group;
        loop {
            let whole = looked.iter().all(|(o, l)| {
                !matches!(o.need, Need::Group(g) if g == prefix) || matches!(l, Lookup::Found(_))
            });
            if !whole {
                return false;
            }
            match prefix.rsplit_once('/') {
                Some((parent, _)) => prefix = parent,
                None => return true,
            }
        }
    };
    Ok(looked
        .iter()
        .filter_map(|(o, l)| {
            let Lookup::Found(v) = l else { return None };
            let keep = match o.need {
                Need::Group(g) => complete(g),
                Need::Unless(other) => !found(other),
                _ => true,
            };
            keep.then_some((o.global, *v))
        })
        .collect())
}
