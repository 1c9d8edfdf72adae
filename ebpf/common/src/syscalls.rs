//! The syscalls copyscope counts, and how each one moves bytes.

/// How a syscall moves the bytes it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Kernel -> user buffer (read, recv): the CPU copies unless the fd is O_DIRECT.
    ToUser,
    /// User buffer -> kernel (write, send): the CPU copies unless the fd is O_DIRECT.
    FromUser,
    /// Kernel -> kernel without passing through user memory (sendfile, splice, ...).
    ZeroCopy,
    /// Moves no bytes of its own; its result is not a byte count (io_uring_enter).
    Control,
}

/// How a row of the table is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A system call, at its enter and exit: two mode switches a call.
    Syscall,
    /// Asynchronous operations (io_uring opcodes at their completion, Linux AIO iocbs at
    /// their submission): no mode switch of their own (the `io_uring_enter` and
    /// `io_submit` calls that submit them are counted as syscalls).
    Operation,
    /// A system call counted in a row of its own when its flags say so (a send with
    /// MSG_ZEROCOPY): two mode switches a call, like [`Via::Syscall`], but no number and
    /// no tracepoints of its own (its call's are used).
    Flagged,
}

/// One counted syscall: its name, where its fds are among the arguments, and its flow.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    /// Argument index of the input fd (or the only fd).
    pub fd_in_arg: u8,
    /// Argument index of the output fd of two-fd calls.
    pub fd_out_arg: Option<u8>,
    pub flow: Flow,
    pub via: Via,
    /// Syscall numbers: x86_64, aarch64 (0 for io_uring operations).
    pub nr_x86_64: u16,
    pub nr_aarch64: u16,
}

impl Spec {
    /// Whether this row counts system calls (two mode switches each).
    pub const fn is_syscall(&self) -> bool {
        matches!(self.via, Via::Syscall | Via::Flagged)
    }

    /// Whether this row is a system call with a number, and tracepoints, of its own.
    pub const fn has_number(&self) -> bool {
        matches!(self.via, Via::Syscall)
    }
}

const fn one(name: &'static str, flow: Flow, x86: u16, arm: u16) -> Spec {
    Spec {
        name,
        fd_in_arg: 0,
        fd_out_arg: None,
        flow,
        via: Via::Syscall,
        nr_x86_64: x86,
        nr_aarch64: arm,
    }
}

const fn two(name: &'static str, fd_in: u8, fd_out: u8, x86: u16, arm: u16) -> Spec {
    Spec {
        name,
        fd_in_arg: fd_in,
        fd_out_arg: Some(fd_out),
        flow: Flow::ZeroCopy,
        via: Via::Syscall,
        nr_x86_64: x86,
        nr_aarch64: arm,
    }
}

/// Asynchronous operations of one kind: io_uring opcodes (fd kind from the request's
/// file) or Linux AIO iocbs (fd kind from the iocb's fd).
const fn op(name: &'static str, flow: Flow) -> Spec {
    Spec {
        name,
        fd_in_arg: 0,
        fd_out_arg: None,
        flow,
        via: Via::Operation,
        nr_x86_64: 0,
        nr_aarch64: 0,
    }
}

/// A send call with MSG_ZEROCOPY, counted apart from its call (zero-copy).
const fn flagged(name: &'static str) -> Spec {
    Spec {
        via: Via::Flagged,
        ..op(name, Flow::ZeroCopy)
    }
}

/// The table the kernel side indexes with [`crate::SyscallKey::syscall`]: the system calls
/// copyscope counts, then the io_uring operation groups.
/// Numbers: arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h.
pub const SYSCALLS: [Spec; 40] = [
    one("read", Flow::ToUser, 0, 63),
    one("write", Flow::FromUser, 1, 64),
    one("pread64", Flow::ToUser, 17, 67),
    one("pwrite64", Flow::FromUser, 18, 68),
    one("readv", Flow::ToUser, 19, 65),
    one("writev", Flow::FromUser, 20, 66),
    one("preadv", Flow::ToUser, 295, 69),
    one("pwritev", Flow::FromUser, 296, 70),
    one("preadv2", Flow::ToUser, 327, 286),
    one("pwritev2", Flow::FromUser, 328, 287),
    // sendfile(out_fd, in_fd, offset, count)
    two("sendfile64", 1, 0, 40, 71),
    // splice(fd_in, off_in, fd_out, off_out, len, flags)
    two("splice", 0, 2, 275, 76),
    // vmsplice(fd, iov, nr_segs, flags): user pages mapped into a pipe
    one("vmsplice", Flow::ZeroCopy, 278, 75),
    // tee(fd_in, fd_out, len, flags)
    two("tee", 0, 1, 276, 77),
    // copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)
    two("copy_file_range", 0, 2, 326, 285),
    one("recvfrom", Flow::ToUser, 45, 207),
    one("sendto", Flow::FromUser, 44, 206),
    one("recvmsg", Flow::ToUser, 47, 212),
    one("sendmsg", Flow::FromUser, 46, 211),
    // io_uring_enter(fd, to_submit, min_complete, flags, ...): submissions and waits; the
    // operations it submits are the io_uring rows below.
    one("io_uring_enter", Flow::Control, 426, 426),
    // include/uapi/linux/io_uring.h opcodes, grouped by [`uring_row`].
    op("io_uring_read", Flow::ToUser),
    op("io_uring_write", Flow::FromUser),
    op("io_uring_recv", Flow::ToUser),
    op("io_uring_send", Flow::FromUser),
    op("io_uring_send_zc", Flow::ZeroCopy),
    op("io_uring_splice", Flow::ZeroCopy),
    op("io_uring_other", Flow::Control),
    // io_submit(ctx_id, nr, iocbpp): its iocbs are the aio rows below, with the bytes
    // they ask for; io_getevents(ctx_id, min_nr, nr, events, timeout): its bytes are the
    // completed bytes of the events it returns. Their fd kind is `other` (a context id).
    one("io_submit", Flow::Control, 209, 2),
    one("io_getevents", Flow::Control, 208, 4),
    // IOCB_CMD_PREAD/PREADV and IOCB_CMD_PWRITE/PWRITEV submitted (bytes: PREAD's and
    // PWRITE's aio_nbytes; a vectored iocb counts as an operation of 0 bytes).
    op("aio_read", Flow::ToUser),
    op("aio_write", Flow::FromUser),
    // sendmmsg(fd, msgvec, vlen, flags), recvmmsg(fd, msgvec, vlen, flags, timeout): the
    // result counts messages; the bytes are the `msg_len` of each message sent or
    // received, and the messages are the mmsg rows below.
    one("sendmmsg", Flow::FromUser, 307, 269),
    one("recvmmsg", Flow::ToUser, 299, 243),
    op("sendmmsg_messages", Flow::Control),
    op("recvmmsg_messages", Flow::Control),
    // sendto(fd, buf, len, flags, ...), sendmsg(fd, msg, flags), sendmmsg(fd, msgvec,
    // vlen, flags) with MSG_ZEROCOPY in their flags (Documentation/networking/
    // msg_zerocopy.rst): the same calls, counted in these rows instead, zero-copy.
    flagged("sendto_zerocopy"),
    flagged("sendmsg_zerocopy"),
    flagged("sendmmsg_zerocopy"),
    // recvmsg(fd, msg, MSG_ERRQUEUE) that read a MSG_ZEROCOPY completion (a `struct
    // sock_extended_err` of origin SO_EE_ORIGIN_ZEROCOPY, result 0): the notifications,
    // and the sends they report the kernel copied after all (SO_EE_CODE_ZEROCOPY_COPIED:
    // loopback, or a device that cannot send from user pages). Operations of 0 bytes.
    op("zerocopy_notifications", Flow::Control),
    op("zerocopy_copied", Flow::Control),
];

/// Rows the kernel side fills in itself.
pub const IO_SUBMIT: u8 = match index_of("io_submit") {
    Some(i) => i,
    None => panic!("no io_submit row"),
};
pub const IO_GETEVENTS: u8 = match index_of("io_getevents") {
    Some(i) => i,
    None => panic!("no io_getevents row"),
};
pub const AIO_READ: u8 = match index_of("aio_read") {
    Some(i) => i,
    None => panic!("no aio_read row"),
};
pub const AIO_WRITE: u8 = match index_of("aio_write") {
    Some(i) => i,
    None => panic!("no aio_write row"),
};
pub const SENDMMSG: u8 = match index_of("sendmmsg") {
    Some(i) => i,
    None => panic!("no sendmmsg row"),
};
pub const RECVMMSG: u8 = match index_of("recvmmsg") {
    Some(i) => i,
    None => panic!("no recvmmsg row"),
};
pub const SENDMMSG_MESSAGES: u8 = match index_of("sendmmsg_messages") {
    Some(i) => i,
    None => panic!("no sendmmsg_messages row"),
};
pub const RECVMMSG_MESSAGES: u8 = match index_of("recvmmsg_messages") {
    Some(i) => i,
    None => panic!("no recvmmsg_messages row"),
};

pub const SENDTO: u8 = match index_of("sendto") {
    Some(i) => i,
    None => panic!("no sendto row"),
};
pub const SENDMSG: u8 = match index_of("sendmsg") {
    Some(i) => i,
    None => panic!("no sendmsg row"),
};
pub const RECVMSG: u8 = match index_of("recvmsg") {
    Some(i) => i,
    None => panic!("no recvmsg row"),
};
pub const SENDTO_ZEROCOPY: u8 = match index_of("sendto_zerocopy") {
    Some(i) => i,
    None => panic!("no sendto_zerocopy row"),
};
pub const SENDMSG_ZEROCOPY: u8 = match index_of("sendmsg_zerocopy") {
    Some(i) => i,
    None => panic!("no sendmsg_zerocopy row"),
};
pub const SENDMMSG_ZEROCOPY: u8 = match index_of("sendmmsg_zerocopy") {
    Some(i) => i,
    None => panic!("no sendmmsg_zerocopy row"),
};
pub const ZEROCOPY_NOTIFICATIONS: u8 = match index_of("zerocopy_notifications") {
    Some(i) => i,
    None => panic!("no zerocopy_notifications row"),
};
pub const ZEROCOPY_COPIED: u8 = match index_of("zerocopy_copied") {
    Some(i) => i,
    None => panic!("no zerocopy_copied row"),
};

/// include/linux/socket.h: send from user pages without a copy (with SO_ZEROCOPY set).
pub const MSG_ZEROCOPY: u64 = 0x0400_0000;

/// For a send call whose flags may hold MSG_ZEROCOPY: the argument index of its flags and
/// the row such a send counts in.
pub const fn zerocopy_row(idx: u8) -> Option<(u8, u8)> {
    match idx {
        SENDTO => Some((3, SENDTO_ZEROCOPY)),
        SENDMSG => Some((2, SENDMSG_ZEROCOPY)),
        SENDMMSG => Some((3, SENDMMSG_ZEROCOPY)),
        _ => None,
    }
}

/// The row of [`SYSCALLS`] an io_uring opcode counts in (include/uapi/linux/io_uring.h).
pub const fn uring_row(opcode: u8) -> u8 {
    const READV: u8 = 1;
    const WRITEV: u8 = 2;
    const READ_FIXED: u8 = 4;
    const WRITE_FIXED: u8 = 5;
    const SENDMSG: u8 = 9;
    const RECVMSG: u8 = 10;
    const READ: u8 = 22;
    const WRITE: u8 = 23;
    const SEND: u8 = 26;
    const RECV: u8 = 27;
    const SPLICE: u8 = 30;
    const TEE: u8 = 33;
    const SEND_ZC: u8 = 47;
    const SENDMSG_ZC: u8 = 48;
    const FIRST: u8 = 20;
    FIRST
        + match opcode {
            READ | READV | READ_FIXED => 0,
            WRITE | WRITEV | WRITE_FIXED => 1,
            RECV | RECVMSG => 2,
            SEND | SENDMSG => 3,
            SEND_ZC | SENDMSG_ZC => 4,
            SPLICE | TEE => 5,
            _ => 6,
        }
}

/// Index of a syscall by name.
pub const fn index_of(name: &str) -> Option<u8> {
    let mut i = 0;
    while i < SYSCALLS.len() {
        if str_eq(SYSCALLS[i].name, name) {
            return Some(i as u8);
        }
        i += 1;
    }
    None
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The value `SYSCALL_INDEX` holds for numbers that are not counted (see [`index_entry`]),
/// so that the zero-filled map counts nothing until the agent fills it.
pub const NOT_COUNTED: u16 = 0;

/// What `SYSCALL_INDEX` holds for a counted syscall number: low byte 1 + the index into
/// [`SYSCALLS`]; high byte the fd argument positions (bits 8-10: the input fd's argument
/// index; bits 12-14: 1 + the output fd's argument index, 0 when there is none), in bit
/// 11 [`SEND_FLAGS`] and in bit 15 [`NOT_BYTES`]. One map lookup gives the kernel side everything, with no table
/// indexed by a computed value.
pub const fn index_entry(idx: u8) -> u16 {
    let s = &SYSCALLS[idx as usize];
    let out = match s.fd_out_arg {
        Some(a) => a + 1,
        None => 0,
    };
    let fds = s.fd_in_arg | (out << 4);
    // The mmsg calls' results count messages: their bytes are read from the messages.
    let not_bytes = match (s.flow, s.nr_x86_64) {
        (Flow::Control, _) | (_, 307) | (_, 299) => NOT_BYTES,
        _ => 0,
    };
    let send_flags = match zerocopy_row(idx) {
        Some(_) => SEND_FLAGS,
        None => 0,
    };
    (idx as u16 + 1) | ((fds as u16) << 8) | not_bytes | send_flags
}

/// Bit of an [`index_entry`]: a send whose flags may hold MSG_ZEROCOPY ([`zerocopy_row`]);
/// only these calls have their flags read.
pub const SEND_FLAGS: u16 = 1 << 11;

/// Bit of an [`index_entry`]: the call's result is not a byte count (0 bytes are counted).
pub const NOT_BYTES: u16 = 1 << 15;

/// Bit i set: `SYSCALLS[i]` moves bytes without a CPU copy (sendfile, splice, ...).
pub const ZERO_COPY_MASK: u64 = {
    let mut m = 0u64;
    let mut i = 0;
    while i < SYSCALLS.len() {
        if matches!(SYSCALLS[i].flow, Flow::ZeroCopy) {
            m |= 1 << i;
        }
        i += 1;
    }
    m
};

// The rows [`uring_row`] names, where it names them.
const _: () = {
    assert!(matches!(index_of("io_uring_read"), Some(20)));
    assert!(matches!(index_of("io_uring_write"), Some(21)));
    assert!(matches!(index_of("io_uring_recv"), Some(22)));
    assert!(matches!(index_of("io_uring_send"), Some(23)));
    assert!(matches!(index_of("io_uring_send_zc"), Some(24)));
    assert!(matches!(index_of("io_uring_splice"), Some(25)));
    assert!(matches!(index_of("io_uring_other"), Some(26)));
    assert!(SYSCALLS.len() <= 64, "ZERO_COPY_MASK is a u64");
};
