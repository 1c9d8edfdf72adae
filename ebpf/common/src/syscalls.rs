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
    /// Syscall numbers: x86_64, aarch64.
    pub nr_x86_64: u16,
    pub nr_aarch64: u16,
}

const fn one(name: &'static str, flow: Flow, x86: u16, arm: u16) -> Spec {
    Spec {
        name,
        fd_in_arg: 0,
        fd_out_arg: None,
        flow,
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
        nr_x86_64: x86,
        nr_aarch64: arm,
    }
}

/// The table the kernel side indexes with [`crate::SyscallKey::syscall`].
/// Numbers: arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h.
pub const SYSCALLS: [Spec; 19] = [
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
];

/// Index of a syscall by name.
pub fn index_of(name: &str) -> Option<u8> {
    let mut i = 0;
    while i < SYSCALLS.len() {
        if str_eq(SYSCALLS[i].name, name) {
            return Some(i as u8);
        }
        i += 1;
    }
    None
}

fn str_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().iter().zip(b.as_bytes()).all(|(x, y)| x == y)
}

/// The value `SYSCALL_INDEX` holds for numbers that are not counted (see [`index_entry`]),
/// so that the zero-filled map counts nothing until the agent fills it.
pub const NOT_COUNTED: u16 = 0;

/// What `SYSCALL_INDEX` holds for a counted syscall number: low byte 1 + the index into
/// [`SYSCALLS`]; high byte the fd argument positions (low nibble: the input fd's argument
/// index; high nibble: 1 + the output fd's argument index, 0 when there is none). One map
/// lookup gives the kernel side everything, with no table indexed by a computed value.
pub const fn index_entry(idx: u8) -> u16 {
    let s = &SYSCALLS[idx as usize];
    let out = match s.fd_out_arg {
        Some(a) => a + 1,
        None => 0,
    };
    let fds = s.fd_in_arg | (out << 4);
    (idx as u16 + 1) | ((fds as u16) << 8)
}

/// Bit i set: `SYSCALLS[i]` moves bytes without a CPU copy (sendfile, splice, ...).
pub const ZERO_COPY_MASK: u32 = {
    let mut m = 0u32;
    let mut i = 0;
    while i < SYSCALLS.len() {
        if matches!(SYSCALLS[i].flow, Flow::ZeroCopy) {
            m |= 1 << i;
        }
        i += 1;
    }
    m
};
