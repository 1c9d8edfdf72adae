//! The copies family: bytes the kernel copies in its socket and pipe paths, per process
//! (kernel side: `ebpf/programs/src/copies.rs`).

use copyscope_common::{globals as g, programs};

use super::{Attach, Family, Method, ProbeSpec, Target, Unit, func, record, tp};

pub static UNIT: Unit = Unit {
    family: Family::Copies,
    probes: PROBES,
    offsets: &[
        // `sock:sock_send_length` / `sock_recv_length`: return value and msg flags.
        record(g::OFF_SOCKLEN_RET, &[("sock", "sock_recv_length")], "ret"),
        record(
            g::OFF_SOCKLEN_FLAGS,
            &[("sock", "sock_recv_length")],
            "flags",
        ),
    ],
};

const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        family: Family::Copies,
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
        syscall_fallback: false,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Copies,
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
        syscall_fallback: false,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Copies,
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
        syscall_fallback: true,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Copies,
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
        syscall_fallback: true,
        needs: &[],
    },
    ProbeSpec {
        family: Family::Copies,
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
        syscall_fallback: true,
        needs: &[],
    },
];
