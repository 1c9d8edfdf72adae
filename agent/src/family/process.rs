//! The process family: process exits, which hand a finished process's rows to the agent,
//! and forks, which let `snapshot -- COMMAND` follow the command's descendants (kernel
//! side: `ebpf/programs/src/process.rs`).

use copyscope_common::{globals as g, programs};

use super::{Attach, Family, Method, Need, Offset, ProbeSpec, Source, Target, Unit, tp};

pub static UNIT: Unit = Unit {
    family: Family::Process,
    probes: &[
        ProbeSpec {
            family: Family::Process,
            hook: "sched_process_exit",
            methods: &[tp(programs::PROCESS_EXIT, "sched", "sched_process_exit")],
            required: true,
            syscall_fallback: false,
            needs: &[],
        },
        ProbeSpec {
            family: Family::Process,
            hook: "sched_process_fork",
            methods: &[Attach {
                method: Method::RawTracepoint,
                program: programs::PROCESS_FORK,
                target: Target::Raw("sched_process_fork"),
            }],
            required: false,
            syscall_fallback: false,
            needs: &[],
        },
    ],
    offsets: &[
        // The child's ids, read from the task the fork tracepoint passes.
        Offset {
            global: g::OFF_TASK_TGID,
            from: Source::Member(&[("task_struct", "tgid")], 0),
            need: Need::Required,
        },
        Offset {
            global: g::OFF_TASK_PID,
            from: Source::Member(&[("task_struct", "pid")], 0),
            need: Need::Required,
        },
        // The process's name at exit: its group leader's comm (both or neither).
        Offset {
            global: g::OFF_TASK_GROUP_LEADER,
            from: Source::Member(&[("task_struct", "group_leader")], 0),
            need: Need::Group("leader"),
        },
        Offset {
            global: g::OFF_TASK_COMM,
            from: Source::Member(&[("task_struct", "comm")], 0),
            need: Need::Group("leader"),
        },
        // Whether the exiting thread was its process's last (6.16+; before, the leader's
        // exit stands for it).
        Offset {
            global: g::OFF_EXIT_GROUP_DEAD,
            from: Source::Field(&[("sched", "sched_process_exit")], "group_dead"),
            need: Need::Optional,
        },
    ],
};
