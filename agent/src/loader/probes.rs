//! The probe table: one declarative list of every hook copyscope uses, the attach methods
//! for each in order of preference, and whether the agent can run without it.

use copyscope_common::{programs, syscalls::SYSCALLS};

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

const fn tp(program: &'static str, category: &'static str, name: &'static str) -> Attach {
    Attach {
        method: Method::Tracepoint,
        program,
        target: Target::Tracepoint(category, name),
    }
}

const fn func(method: Method, program: &'static str, names: &'static [&'static str]) -> Attach {
    Attach {
        method,
        program,
        target: Target::Function(names),
    }
}

/// Folio-era names first, then the pre-5.16 ones.
const ACCESSED: &[&str] = &["folio_mark_accessed", "mark_page_accessed"];
const ADDED: &[&str] = &["filemap_add_folio", "add_to_page_cache_lru"];

#[derive(Debug, Clone, Copy)]
pub struct Attach {
    pub method: Method,
    pub program: &'static str,
    pub target: Target,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub family: &'static str,
    pub hook: &'static str,
    /// Methods in order of preference; the first that loads and attaches is used.
    pub methods: &'static [Attach],
    /// A required probe that cannot attach is an error; an optional one is skipped with a reason.
    pub required: bool,
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        family: "syscalls",
        hook: "sys_enter",
        // The per-syscall tracepoints first: a program on them runs for the counted
        // syscalls only, so every other system call on the node pays nothing but the
        // kernel's syscall-tracepoint slow path. On `sys_enter` a program runs for every
        // system call of every process (`cargo xtask bench overhead`, getppid row).
        methods: &[
            Attach {
                method: Method::Tracepoint,
                program: programs::SYSCALLS_TP_BTF_ENTER,
                target: Target::EachSyscall("enter"),
            },
            Attach {
                method: Method::Tracepoint,
                program: programs::SYSCALLS_TP_ENTER,
                target: Target::EachSyscall("enter"),
            },
            Attach {
                method: Method::TpBtf,
                program: programs::SYSCALLS_BTF_ENTER,
                target: Target::Raw("sys_enter"),
            },
            Attach {
                method: Method::RawTracepoint,
                program: programs::SYSCALLS_ENTER,
                target: Target::Raw("sys_enter"),
            },
        ],
        required: true,
    },
    ProbeSpec {
        family: "syscalls",
        hook: "sys_exit",
        methods: &[
            Attach {
                method: Method::Tracepoint,
                program: programs::SYSCALLS_TP_EXIT_REGS,
                target: Target::EachSyscall("exit"),
            },
            Attach {
                method: Method::RawTracepoint,
                program: programs::SYSCALLS_EXIT,
                target: Target::Raw("sys_exit"),
            },
            Attach {
                method: Method::Tracepoint,
                program: programs::SYSCALLS_TP_EXIT,
                target: Target::EachSyscall("exit"),
            },
        ],
        required: true,
    },
    ProbeSpec {
        family: "process",
        hook: "sched_process_exit",
        methods: &[Attach {
            method: Method::Tracepoint,
            program: programs::PROCESS_EXIT,
            target: Target::Tracepoint("sched", "sched_process_exit"),
        }],
        required: true,
    },
    ProbeSpec {
        family: "process",
        hook: "sched_process_fork",
        methods: &[Attach {
            method: Method::RawTracepoint,
            program: programs::PROCESS_FORK,
            target: Target::Raw("sched_process_fork"),
        }],
        required: false,
    },
    ProbeSpec {
        family: "sched",
        hook: "sched_switch",
        methods: &[
            Attach {
                method: Method::TpBtf,
                program: programs::SCHED_SWITCH_BTF,
                target: Target::Raw("sched_switch"),
            },
            tp(programs::SCHED_SWITCH, "sched", "sched_switch"),
        ],
        required: false,
    },
    ProbeSpec {
        family: "pagecache",
        hook: "lookups",
        methods: &[
            tp(
                programs::PAGECACHE_LOOKUP_TP,
                "filemap",
                "mm_filemap_get_pages",
            ),
            func(Method::FEntry, programs::PAGECACHE_LOOKUP_FENTRY, ACCESSED),
            func(Method::KProbe, programs::PAGECACHE_LOOKUP_KPROBE, ACCESSED),
        ],
        required: false,
    },
    ProbeSpec {
        family: "pagecache",
        hook: "misses",
        methods: &[
            tp(
                programs::PAGECACHE_ADD_TP,
                "filemap",
                "mm_filemap_add_to_page_cache",
            ),
            func(Method::FEntry, programs::PAGECACHE_ADD_FENTRY, ADDED),
            func(Method::KProbe, programs::PAGECACHE_ADD_KPROBE, ADDED),
        ],
        required: false,
    },
    ProbeSpec {
        family: "pagecache",
        hook: "mmap_faults",
        methods: &[tp(
            programs::PAGECACHE_FAULT_TP,
            "filemap",
            "mm_filemap_fault",
        )],
        required: false,
    },
    ProbeSpec {
        family: "pagecache",
        hook: "dirtied",
        methods: &[
            Attach {
                method: Method::TpBtf,
                program: programs::PAGECACHE_DIRTY_BTF,
                target: Target::Raw("writeback_dirty_folio"),
            },
            tp(
                programs::PAGECACHE_DIRTY_TP,
                "writeback",
                "writeback_dirty_folio",
            ),
            tp(
                programs::PAGECACHE_DIRTY_TP,
                "writeback",
                "writeback_dirty_page",
            ),
        ],
        required: false,
    },
    ProbeSpec {
        family: "copies",
        hook: "socket_recv",
        methods: &[
            tp(programs::COPIES_SOCK_RECV_TP, "sock", "sock_recv_length"),
            func(
                Method::FExit,
                programs::COPIES_SOCK_RECV_FEXIT,
                &["sock_recvmsg"],
            ),
            func(
                Method::KRetProbe,
                programs::COPIES_SOCK_RECV_KRET,
                &["sock_recvmsg"],
            ),
        ],
        required: false,
    },
    ProbeSpec {
        family: "copies",
        hook: "socket_send",
        methods: &[
            tp(programs::COPIES_SOCK_SEND_TP, "sock", "sock_send_length"),
            Attach {
                method: Method::FExit,
                program: programs::COPIES_SEND_INET,
                target: Target::EveryFunction(&[
                    ("inet_sendmsg", programs::COPIES_SEND_INET),
                    ("inet6_sendmsg", programs::COPIES_SEND_INET6),
                    ("unix_stream_sendmsg", programs::COPIES_SEND_UNIX_STREAM),
                    ("unix_dgram_sendmsg", programs::COPIES_SEND_UNIX_DGRAM),
                ]),
            },
            Attach {
                method: Method::KRetProbe,
                program: programs::COPIES_SOCK_SEND_KRET,
                target: Target::EveryFunction(&[
                    ("inet_sendmsg", programs::COPIES_SOCK_SEND_KRET),
                    ("inet6_sendmsg", programs::COPIES_SOCK_SEND_KRET),
                    ("unix_stream_sendmsg", programs::COPIES_SOCK_SEND_KRET),
                    ("unix_dgram_sendmsg", programs::COPIES_SOCK_SEND_KRET),
                ]),
            },
        ],
        required: false,
    },
    ProbeSpec {
        family: "copies",
        hook: "file_read",
        methods: &[
            func(
                Method::FExit,
                programs::COPIES_FILE_FEXIT,
                &["filemap_read"],
            ),
            func(
                Method::KRetProbe,
                programs::COPIES_FILE_KRET,
                &["filemap_read"],
            ),
        ],
        required: false,
    },
    ProbeSpec {
        family: "copies",
        hook: "pipe_read",
        methods: &[
            func(
                Method::FExit,
                programs::COPIES_PIPE_READ_FEXIT,
                &["pipe_read"],
            ),
            func(
                Method::KRetProbe,
                programs::COPIES_PIPE_READ_KRET,
                &["pipe_read"],
            ),
        ],
        required: false,
    },
    ProbeSpec {
        family: "copies",
        hook: "pipe_write",
        methods: &[
            func(
                Method::FExit,
                programs::COPIES_PIPE_WRITE_FEXIT,
                &["pipe_write"],
            ),
            func(
                Method::KRetProbe,
                programs::COPIES_PIPE_WRITE_KRET,
                &["pipe_write"],
            ),
        ],
        required: false,
    },
];

/// Probes whose figure falls back to the syscalls family when no method attaches: the
/// copy routines' callers have no tracepoint, so a kernel without kprobes and fentry
/// (like a 6.18 built without CONFIG_KPROBES) counts those copies from the syscalls.
pub const SYSCALL_FALLBACK: &[(&str, &str)] = &[
    ("copies", "file_read"),
    ("copies", "pipe_read"),
    ("copies", "pipe_write"),
];

/// The tracepoint names `EachSyscall(prefix)` expands to.
pub fn each_syscall(prefix: &str) -> Vec<String> {
    SYSCALLS
        .iter()
        .map(|s| format!("sys_{prefix}_{}", s.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_name_fits_the_kernel_limit() {
        for p in PROBES {
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
        for p in PROBES
            .iter()
            .filter(|p| !SYSCALL_FALLBACK.contains(&(p.family, p.hook)))
        {
            assert!(
                p.methods
                    .iter()
                    .any(|m| matches!(m.method, Method::Tracepoint | Method::RawTracepoint)),
                "{}/{} has no tracepoint method",
                p.family,
                p.hook
            );
        }
    }

    #[test]
    fn syscall_tracepoint_names_follow_the_kernel() {
        let names = each_syscall("enter");
        assert!(names.contains(&"sys_enter_sendfile64".to_string()));
        assert!(names.contains(&"sys_enter_copy_file_range".to_string()));
        assert_eq!(names.len(), SYSCALLS.len());
    }
}
