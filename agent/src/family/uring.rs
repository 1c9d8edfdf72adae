//! The uring family: io_uring operations, counted at their completion in the syscalls
//! family's io_uring rows, by opcode group and fd kind (kernel side:
//! `ebpf/programs/src/uring.rs`).

use copyscope_common::{globals as g, programs};

use super::{Family, Need, Offset, ProbeSpec, Source, Unit, record, tp};

const COMPLETE: &[(&str, &str)] = &[("io_uring", "io_uring_complete")];

pub static UNIT: Unit = Unit {
    family: Family::Uring,
    probes: &[ProbeSpec {
        family: Family::Uring,
        hook: "io_uring_complete",
        methods: &[tp(
            programs::URING_COMPLETE,
            "io_uring",
            "io_uring_complete",
        )],
        required: false,
        syscall_fallback: false,
        // Before 5.18 the record has no request, so no opcode and no file.
        needs: &[
            g::OFF_URING_CPL_REQ,
            g::OFF_URING_CPL_CFLAGS,
            g::OFF_KIOCB_OPCODE,
            g::OFF_KIOCB_FILE,
        ],
    }],
    offsets: &[
        Offset {
            global: g::OFF_URING_CPL_REQ,
            from: Source::Field(COMPLETE, "req"),
            need: Need::Optional,
        },
        record(g::OFF_URING_CPL_RES, COMPLETE, "res"),
        Offset {
            global: g::OFF_URING_CPL_CFLAGS,
            from: Source::Field(COMPLETE, "cflags"),
            need: Need::Optional,
        },
        Offset {
            global: g::OFF_KIOCB_OPCODE,
            from: Source::Member(&[("io_kiocb", "opcode")], 0),
            need: Need::Optional,
        },
        Offset {
            global: g::OFF_KIOCB_FILE,
            from: Source::Member(&[("io_kiocb", "file")], 0),
            need: Need::Optional,
        },
    ],
};
