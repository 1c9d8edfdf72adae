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
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::TpBtf => "tp_btf",
            Method::RawTracepoint => "raw_tracepoint",
            Method::Tracepoint => "tracepoint",
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
}

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
        methods: &[
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
            Attach {
                method: Method::Tracepoint,
                program: programs::SYSCALLS_TP_ENTER,
                target: Target::EachSyscall("enter"),
            },
        ],
        required: true,
    },
    ProbeSpec {
        family: "syscalls",
        hook: "sys_exit",
        methods: &[
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
                assert!(
                    m.program.len() <= 15,
                    "{} is longer than 15 characters",
                    m.program
                );
            }
        }
    }

    #[test]
    fn every_probe_has_a_tracepoint_path() {
        // This host class has no kprobes and no fentry: every probe needs a tracepoint method.
        for p in PROBES {
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
