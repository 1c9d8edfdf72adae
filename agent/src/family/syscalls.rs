//! The syscalls family: calls, bytes, errors and time of the data-path system calls, per
//! process, syscall and fd kind (kernel side: `ebpf/programs/src/syscalls.rs`).

use copyscope_common::{globals as g, programs, syscalls::SYSCALLS};

use super::{Attach, Family, Method, Need, Offset, ProbeSpec, Source, Target, Unit, record, tp};

pub static UNIT: Unit = Unit {
    family: Family::Syscalls,
    probes: PROBES,
    offsets: OFFSETS,
};

const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        family: Family::Syscalls,
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
        syscall_fallback: false,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Syscalls,
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
        syscall_fallback: false,
        needs: &[],
    },
    // The calls whose arrays in user memory say what they did (iocbs, io_events,
    // mmsghdrs): one small program on each call's own exit tracepoint, so that the shared
    // exit programs above stay small for the verifier. Without them these calls are still
    // counted, by the shared programs, with 0 bytes.
    ProbeSpec {
        family: Family::Syscalls,
        hook: "sys_exit_io_submit",
        methods: &[tp(
            programs::SYSCALLS_IO_SUBMIT,
            "syscalls",
            "sys_exit_io_submit",
        )],
        required: false,
        syscall_fallback: false,
        needs: TASK_REGS,
    },
    ProbeSpec {
        family: Family::Syscalls,
        hook: "sys_exit_io_getevents",
        methods: &[tp(
            programs::SYSCALLS_IO_GETEVENTS,
            "syscalls",
            "sys_exit_io_getevents",
        )],
        required: false,
        syscall_fallback: false,
        needs: TASK_REGS,
    },
    ProbeSpec {
        family: Family::Syscalls,
        hook: "sys_exit_sendmmsg",
        methods: &[tp(
            programs::SYSCALLS_SENDMMSG,
            "syscalls",
            "sys_exit_sendmmsg",
        )],
        required: false,
        syscall_fallback: false,
        needs: TASK_REGS,
    },
    ProbeSpec {
        family: Family::Syscalls,
        hook: "sys_exit_recvmmsg",
        methods: &[tp(
            programs::SYSCALLS_RECVMMSG,
            "syscalls",
            "sys_exit_recvmmsg",
        )],
        required: false,
        syscall_fallback: false,
        needs: TASK_REGS,
    },
];

/// The per-call programs read the call's arguments from the task's saved registers.
const TASK_REGS: &[&str] = &[g::FUNC_TASK_PT_REGS];

/// The first three argument registers, then the syscall number and the first argument as
/// they stand at syscall exit, then the fourth argument register
/// (arch/*/include/asm/ptrace.h).
const REGS: [(&[(&str, &str)], u64); 6] = if cfg!(target_arch = "aarch64") {
    [
        (&[("user_pt_regs", "regs")], 0),
        (&[("user_pt_regs", "regs")], 8),
        (&[("user_pt_regs", "regs")], 16),
        (&[("pt_regs", "syscallno")], 0),
        (&[("pt_regs", "orig_x0")], 0),
        (&[("user_pt_regs", "regs")], 24),
    ]
} else {
    [
        (&[("pt_regs", "di")], 0),
        (&[("pt_regs", "si")], 0),
        (&[("pt_regs", "dx")], 0),
        (&[("pt_regs", "orig_ax")], 0),
        (&[("pt_regs", "di")], 0),
        // The syscall ABI's fourth argument is r10 (rcx holds the return address).
        (&[("pt_regs", "r10")], 0),
    ]
};

const fn required(global: &'static str, member: &'static [(&'static str, &'static str)]) -> Offset {
    Offset {
        global,
        from: Source::Member(member, 0),
        need: Need::Required,
    }
}

const fn reg(
    global: &'static str,
    (member, plus): (&'static [(&'static str, &'static str)], u64),
) -> Offset {
    Offset {
        global,
        from: Source::Member(member, plus),
        need: Need::Required,
    }
}

/// Any counted syscall's records share one layout; `read`'s stands for all.
const ENTER: &[(&str, &str)] = &[("syscalls", "sys_enter_read")];
const EXIT: &[(&str, &str)] = &[("syscalls", "sys_exit_read")];

const OFFSETS: &[Offset] = &[
    // The fd walk: task->files->fdt->fd[fd]->f_inode->i_mode (and i_rdev), f_flags.
    required(g::OFF_TASK_FILES, &[("task_struct", "files")]),
    required(g::OFF_FILES_FDT, &[("files_struct", "fdt")]),
    required(g::OFF_FDT_MAX_FDS, &[("fdtable", "max_fds")]),
    required(g::OFF_FDT_FD, &[("fdtable", "fd")]),
    required(g::OFF_FILE_INODE, &[("file", "f_inode")]),
    required(g::OFF_FILE_FLAGS, &[("file", "f_flags")]),
    required(g::OFF_INODE_MODE, &[("inode", "i_mode")]),
    required(g::OFF_INODE_RDEV, &[("inode", "i_rdev")]),
    reg(g::OFF_REGS_ARG0, REGS[0]),
    reg(g::OFF_REGS_ARG1, REGS[1]),
    reg(g::OFF_REGS_ARG2, REGS[2]),
    reg(g::OFF_REGS_NR, REGS[3]),
    reg(g::OFF_REGS_EXIT_ARG0, REGS[4]),
    reg(g::OFF_REGS_ARG3, REGS[5]),
    Offset {
        global: g::FUNC_TASK_PT_REGS,
        from: Source::Helper("task_pt_regs"),
        need: Need::Optional,
    },
    record(g::OFF_TP_NR, ENTER, "__syscall_nr"),
    record(g::OFF_TP_ARGS, ENTER, "fd"),
    record(g::OFF_TP_RET, EXIT, "ret"),
    record(g::OFF_TP_EXIT_NR, EXIT, "__syscall_nr"),
];

/// The tracepoint names `EachSyscall(prefix)` expands to.
pub fn each_syscall(prefix: &str) -> Vec<String> {
    SYSCALLS
        .iter()
        .filter(|s| s.has_number())
        .map(|s| format!("sys_{prefix}_{}", s.name))
        .collect()
}
