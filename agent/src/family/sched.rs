//! The sched family: context switches, voluntary and involuntary, per process (kernel
//! side: `ebpf/programs/src/sched.rs`).

use copyscope_common::{globals as g, programs};

use super::{Attach, Family, Method, Need, Offset, ProbeSpec, Source, Target, Unit, record, tp};

pub static UNIT: Unit = Unit {
    family: Family::Sched,
    probes: &[ProbeSpec {
        family: Family::Sched,
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
        syscall_fallback: false,
        needs: &[],
    }],
    offsets: &[
        // Where the BTF-typed program finds the previous task's state: the tracepoint's
        // fourth argument (5.18+), else `task_struct.__state` (`state` before 5.14).
        // Neither: that program stays unusable and the record-based one is used.
        Offset {
            global: g::SWITCH_STATE_ARG,
            from: Source::TracepointArgs("sched_switch", 4),
            need: Need::Optional,
        },
        Offset {
            global: g::OFF_TASK_STATE,
            from: Source::Member(&[("task_struct", "__state"), ("task_struct", "state")], 0),
            need: Need::Unless(g::SWITCH_STATE_ARG),
        },
        record(
            g::OFF_SWITCH_PREV_STATE,
            &[("sched", "sched_switch")],
            "prev_state",
        ),
    ],
};
