//! The probe families, one module each. A family's module declares everything the agent
//! knows about it: its probes with their attach methods best first, and the kernel offsets
//! its programs read, as data. The loader walks these tables; it holds no per-family code.
//!
//! Adding a family: its kernel programs in `ebpf/programs/src/<name>.rs`, a variant of
//! [`Family`], and its module here.

pub mod copies;
pub mod pagecache;
pub mod process;
pub mod sched;
pub mod syscalls;
pub mod uring;

pub use copyscope_common::Family;

/// What the agent declares about one family.
pub struct Unit {
    pub family: Family,
    /// Its probes, attached in this order.
    pub probes: &'static [ProbeSpec],
    /// The globals its programs read, and where each value comes from.
    pub offsets: &'static [Offset],
}

/// A family's declarations.
pub fn unit(family: Family) -> &'static Unit {
    match family {
        Family::Syscalls => &syscalls::UNIT,
        Family::Process => &process::UNIT,
        Family::Sched => &sched::UNIT,
        Family::Pagecache => &pagecache::UNIT,
        Family::Copies => &copies::UNIT,
        Family::Uring => &uring::UNIT,
    }
}

/// Every probe of every family, in attach order.
pub fn probes() -> impl Iterator<Item = &'static ProbeSpec> {
    Family::ALL.into_iter().flat_map(|f| unit(f).probes)
}

/// Every offset of every family.
pub fn offsets() -> impl Iterator<Item = &'static Offset> {
    Family::ALL.into_iter().flat_map(|f| unit(f).offsets)
}

/// Whether the agent runs without this family (none of its probes is required), so that
/// `--disable-families` may turn it off.
pub fn optional(family: Family) -> bool {
    unit(family).probes.iter().all(|p| !p.required)
}

/// The families a user may turn off; the others carry every figure.
pub fn optional_families() -> impl Iterator<Item = Family> {
    Family::ALL.into_iter().filter(|f| optional(*f))
}

/// How a program is attached. Ordered best first within each probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// BTF-typed raw tracepoint (tp_btf): typed arguments, direct kernel loads.
    TpBtf,
    RawTracepoint,
    Tracepoint,
    FEntry,
    FExit,
    KProbe,
    KRetProbe,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::TpBtf => "tp_btf",
            Method::RawTracepoint => "raw_tracepoint",
            Method::Tracepoint => "tracepoint",
            Method::FEntry => "fentry",
            Method::FExit => "fexit",
            Method::KProbe => "kprobe",
            Method::KRetProbe => "kretprobe",
        }
    }
}

/// Where one method attaches.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// A raw tracepoint by name.
    Raw(&'static str),
    /// One tracepoint `category:name`.
    Tracepoint(&'static str, &'static str),
    /// `syscalls:sys_<prefix>_<name>` for every counted syscall.
    EachSyscall(&'static str),
    /// A kernel function: the first of these names the kernel has.
    Function(&'static [&'static str]),
    /// Every one of these kernel functions the kernel has (at least one), each with its
    /// program: fentry/fexit programs bind to one function at load time.
    EveryFunction(&'static [(&'static str, &'static str)]),
}

#[derive(Debug, Clone, Copy)]
pub struct Attach {
    pub method: Method,
    pub program: &'static str,
    pub target: Target,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub family: Family,
    pub hook: &'static str,
    /// Methods in order of preference; the first that loads and attaches is used.
    pub methods: &'static [Attach],
    /// A required probe that cannot attach is an error; an optional one is skipped with a reason.
    pub required: bool,
    /// When no method attaches, the figure comes from the syscalls family instead: the
    /// copy routines' callers have no tracepoint, so a kernel without kprobes and fentry
    /// (like a 6.18 built without CONFIG_KPROBES) counts those copies from the syscalls.
    pub syscall_fallback: bool,
    /// Globals the programs cannot do without: when the kernel gives none for one of them
    /// (an older record or struct), the probe is not attached, and says so.
    pub needs: &'static [&'static str],
}

pub(crate) const fn tp(
    program: &'static str,
    category: &'static str,
    name: &'static str,
) -> Attach {
    Attach {
        method: Method::Tracepoint,
        program,
        target: Target::Tracepoint(category, name),
    }
}

pub(crate) const fn func(
    method: Method,
    program: &'static str,
    names: &'static [&'static str],
) -> Attach {
    Attach {
        method,
        program,
        target: Target::Function(names),
    }
}

/// A field of a tracepoint record, in the first of `events` the kernel has: loading fails
/// when that event lacks it, and the global stays 0 when the kernel has none of them.
pub(crate) const fn record(
    global: &'static str,
    events: &'static [(&'static str, &'static str)],
    field: &'static str,
) -> Offset {
    Offset {
        global,
        from: Source::Field(events, field),
        need: Need::WithEvent,
    }
}

/// One global of the kernel programs and where the loader finds its value.
#[derive(Debug, Clone, Copy)]
pub struct Offset {
    pub global: &'static str,
    pub from: Source,
    pub need: Need,
}

/// Where an offset's value comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A member of a kernel struct (BTF): the first `(struct, member)` the kernel has, plus
    /// a constant (an element of an array member).
    Member(&'static [(&'static str, &'static str)], u64),
    /// A value of a kernel enum (BTF), kept when it is a bit number (0-63).
    EnumBit(&'static str, &'static str),
    /// 1 when the BTF tracepoint has at least this many arguments.
    TracepointArgs(&'static str, u32),
    /// A field of a tracepoint record (tracefs), in the first of these events the kernel
    /// has.
    Field(&'static [(&'static str, &'static str)], &'static str),
    /// A BPF helper the kernel has (`BPF_FUNC_<name>` of BTF's `enum bpf_func_id`): its
    /// number.
    Helper(&'static str),
}

impl Source {
    /// What the kernel would have to have, in words.
    pub fn describe(&self) -> String {
        match *self {
            Source::Member(members, _) => members
                .iter()
                .map(|(ty, m)| format!("struct {ty}'s {m}"))
                .collect::<Vec<_>>()
                .join(" or "),
            Source::EnumBit(ty, name) => format!("enum {ty}'s {name}"),
            Source::TracepointArgs(name, n) => format!("{n} arguments of BTF tracepoint {name}"),
            Source::Field(events, field) => events
                .iter()
                .map(|(cat, name)| format!("{cat}:{name}'s {field} field"))
                .collect::<Vec<_>>()
                .join(" or "),
            Source::Helper(name) => format!("BPF helper bpf_{name}"),
        }
    }
}

/// What happens when an offset's source is missing.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Loading fails.
    Required,
    /// For a record field: loading fails when the event exists without the field (its
    /// format changed); when the kernel has none of the events, the global stays 0 and the
    /// probes that need it fail to attach, saying why.
    WithEvent,
    /// The global stays 0; the programs do without.
    Optional,
    /// Set only when every offset of the named group is found (and those of its parent
    /// groups: `"folio/nr"` needs `"folio"` too).
    Group(&'static str),
    /// Set only when the named global was not: the other way to the same value.
    Unless(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_name_fits_the_kernel_limit() {
        for p in probes() {
            for m in p.methods {
                let mut names = vec![m.program];
                if let Target::EveryFunction(pairs) = m.target {
                    names.extend(pairs.iter().map(|(_, prog)| *prog));
                }
                for n in names {
                    assert!(n.len() <= 15, "{n} is longer than 15 characters");
                }
            }
        }
    }

    #[test]
    fn every_probe_has_a_tracepoint_path_or_a_syscall_fallback() {
        // This host class has no kprobes and no fentry: every probe needs a tracepoint method.
        for p in probes().filter(|p| !p.syscall_fallback) {
            assert!(
                p.methods
                    .iter()
                    .any(|m| matches!(m.method, Method::Tracepoint | Method::RawTracepoint)),
                "{}/{} has no tracepoint method",
                p.family.name(),
                p.hook
            );
        }
    }

    #[test]
    fn syscall_tracepoint_names_follow_the_kernel() {
        let names = syscalls::each_syscall("enter");
        assert!(names.contains(&"sys_enter_sendfile64".to_string()));
        assert!(names.contains(&"sys_enter_copy_file_range".to_string()));
        assert!(names.contains(&"sys_enter_io_uring_enter".to_string()));
        assert!(!names.iter().any(|n| n.contains("io_uring_read")));
        let syscalls = copyscope_common::syscalls::SYSCALLS
            .iter()
            .filter(|s| s.has_number())
            .count();
        assert_eq!(names.len(), syscalls);
    }

    #[test]
    fn each_family_declares_its_own_probes_and_each_global_once() {
        let mut seen = std::collections::BTreeSet::new();
        for f in Family::ALL {
            let u = unit(f);
            assert_eq!(u.family, f);
            assert!(!u.probes.is_empty(), "{} has no probes", f.name());
            for p in u.probes {
                assert_eq!(p.family, f, "{} is declared in {}", p.hook, f.name());
            }
            for o in u.offsets {
                assert!(seen.insert(o.global), "{} is declared twice", o.global);
            }
            assert_eq!(Family::from_name(f.name()), Some(f));
        }
        for o in offsets() {
            match o.need {
                Need::Unless(other) => {
                    assert!(
                        seen.contains(other),
                        "{} waits on an unknown {other}",
                        o.global
                    )
                }
                Need::Group(g) => {
                    // Each group, and each parent of a group, has members.
                    let mut g = g;
                    loop {
                        assert!(
                            offsets().any(|x| matches!(x.need, Need::Group(h) if h == g)),
                            "group {g} has no member"
                        );
                        match g.rsplit_once('/') {
                            Some((parent, _)) => g = parent,
                            None => break,
                        }
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_families_that_can_be_turned_off() {
        let names: Vec<_> = optional_families().map(Family::name).collect();
        assert_eq!(names, ["sched", "pagecache", "copies", "uring"]);
    }

    #[test]
    fn a_missing_source_is_said_in_words() {
        let o = unit(Family::Uring)
            .offsets
            .iter()
            .find(|o| o.global == copyscope_common::globals::OFF_URING_CPL_REQ)
            .unwrap();
        assert_eq!(o.from.describe(), "io_uring:io_uring_complete's req field");
        assert_eq!(
            Source::Helper("task_pt_regs").describe(),
            "BPF helper bpf_task_pt_regs"
        );
        assert_eq!(
            Source::Member(&[("folio", "_nr_pages"), ("folio", "_folio_nr_pages")], 0).describe(),
            "struct folio's _nr_pages or struct folio's _folio_nr_pages"
        );
    }
}
