//! The calls whose results count entries of an array in user memory: io_submit (iocbs),
//! io_getevents (io_events), sendmmsg and recvmmsg (mmsghdrs). Their loops over that
//! array live here, one small program on each call's own `syscalls:sys_exit_*`
//! tracepoint, and not in the shared exit programs, which the verifier walks once for
//! every counted syscall. The shared exit counts the call itself (its time, 0 bytes);
//! these add what the array says to the same rows. The arguments come from the task's
//! saved registers (bpf_task_pt_regs, 5.15+); on older kernels these are not attached.

use super::*;

// fs/aio.c: io_submit(ctx_id, nr, iocbpp).
#[tracepoint]
pub fn syscalls_iosubm(ctx: TracePointContext) -> i32 {
    let Some((regs, n, tgid)) = batch_exit(&ctx) else {
        return 0;
    };
    aio_submitted(exit_arg(regs, 2), n, tgid);
    0
}

// fs/aio.c: io_getevents(ctx_id, min_nr, nr, events, timeout).
#[tracepoint]
pub fn syscalls_ioevts(ctx: TracePointContext) -> i32 {
    let Some((regs, n, tgid)) = batch_exit(&ctx) else {
        return 0;
    };
    let bytes = aio_completed(exit_arg(regs, 3), n);
    add_bytes(call_key(regs, tgid, IO_GETEVENTS), bytes);
    0
}

// net/socket.c: sendmmsg(fd, msgvec, vlen, flags).
#[tracepoint]
pub fn syscalls_sendmm(ctx: TracePointContext) -> i32 {
    mmsg_exit(&ctx, SENDMMSG, SENDMMSG_MESSAGES);
    0
}

// net/socket.c: recvmmsg(fd, msgvec, vlen, flags, timeout).
#[tracepoint]
pub fn syscalls_recvmm(ctx: TracePointContext) -> i32 {
    mmsg_exit(&ctx, RECVMMSG, RECVMMSG_MESSAGES);
    0
}

/// At the exit of a batched call that succeeded in a counted process: the task's saved
/// registers, the call's result (entries done) and the process.
#[inline(always)]
fn batch_exit(ctx: &TracePointContext) -> Option<(*const u8, u64, u32)> {
    // Set by the agent only when the kernel has bpf_task_pt_regs (it never loads these
    // programs otherwise).
    if global(&FUNC_TASK_PT_REGS) == 0 {
        return None;
    }
    let ret: i64 = field(ctx, global(&OFF_TP_RET));
    if ret <= 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !watched(pid_tgid) {
        return None;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf() as *mut _) } as *const u8;
    if regs.is_null() {
        return None;
    }
    Some((regs, ret as u64, (pid_tgid >> 32) as u32))
}

/// Argument `i` of the syscall at its exit (on arm64 the first is kept in `orig_x0`).
#[inline(always)]
fn exit_arg(regs: *const u8, i: u8) -> u64 {
    match i {
        0 => read_reg_at(regs, global(&OFF_REGS_EXIT_ARG0)),
        3 => read_reg_at(regs, global(&OFF_REGS_ARG3)),
        _ => read_reg(regs, i),
    }
}

/// The row the shared exit program counts this call in: the kind of its first argument
/// (an fd, or an AIO context id that no fd is), no output fd.
#[inline(always)]
fn call_key(regs: *const u8, tgid: u32, syscall: u8) -> SyscallKey {
    SyscallKey {
        tgid,
        syscall,
        fd_in: classify(exit_arg(regs, 0)).unwrap_or(FdKind::Other) as u8,
        fd_out: FdKind::None as u8,
        _pad: 0,
    }
}

/// sendmmsg or recvmmsg: the bytes of the messages into the call's row, and the messages
/// into their own row.
#[inline(always)]
fn mmsg_exit(ctx: &TracePointContext, call: u8, messages: u8) {
    let Some((regs, n, tgid)) = batch_exit(ctx) else {
        return;
    };
    let mut key = call_key(regs, tgid, call);
    if let Some((flags, row)) = zerocopy_row(call)
        && exit_arg(regs, flags) & MSG_ZEROCOPY != 0
    {
        // Counted in its zero-copy row by the shared programs.
        key.syscall = row;
    }
    add_bytes(key, mmsg_bytes(exit_arg(regs, 1), n));
    add_calls(
        SyscallKey {
            syscall: messages,
            ..key
        },
        n,
    );
}

/// The entries of one call's array that are read; the rest are counted as unread.
const BATCH_MAX: u64 = 64;

/// A copy of `n` (a call's entry count) for a loop to stop at. The verifier sees no link
/// between the two, so the test that ends the loop at entry `i` narrows only the copy,
/// and the paths that leave the loop after 1, 2, ... 64 entries reach the code after it
/// alike: it is verified once instead of once per entry (an ALU operation other than an
/// add gives its result a register id of its own; a plain copy would share it).
#[inline(always)]
fn loop_bound(n: u64) -> u64 {
    let mut bound = n;
    // SAFETY: an or with 0, on a register.
    unsafe {
        core::arch::asm!("{b} |= 0", b = inout(reg) bound, options(pure, nomem, nostack));
    }
    bound
}

/// include/uapi/linux/aio_abi.h: `struct iocb` from `aio_lio_opcode` to `aio_nbytes`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IocbHead {
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
}

/// Offset of [`IocbHead`] in `struct iocb` (after aio_data, aio_key, aio_rw_flags).
const IOCB_HEAD: u64 = 16;

/// Count the first `n` iocbs an io_submit call submitted (`iocbpp`: their pointers) as
/// aio_read and aio_write operations, with the bytes they ask for, by the kind of their fd.
#[inline(always)]
fn aio_submitted(iocbpp: u64, n: u64, tgid: u32) {
    const PREAD: u16 = 0;
    const PWRITE: u16 = 1;
    const PREADV: u16 = 7;
    const PWRITEV: u16 = 8;
    let bound = loop_bound(n);
    for i in 0..BATCH_MAX {
        if i >= bound {
            return;
        }
        let Ok(p) = (unsafe { bpf_probe_read_user((iocbpp + 8 * i) as *const u64) }) else {
            continue;
        };
        let Ok(h) = (unsafe { bpf_probe_read_user((p + IOCB_HEAD) as *const IocbHead) }) else {
            continue;
        };
        let (row, bytes) = match h.opcode {
            PREAD => (AIO_READ, h.nbytes),
            PWRITE => (AIO_WRITE, h.nbytes),
            // aio_nbytes counts iovecs here, not bytes.
            PREADV => (AIO_READ, 0),
            PWRITEV => (AIO_WRITE, 0),
            _ => continue,
        };
        let kind = classify(h.fildes as u64).unwrap_or(FdKind::Other);
        add_call(
            SyscallKey {
                tgid,
                syscall: row,
                fd_in: kind as u8,
                fd_out: FdKind::None as u8,
                _pad: 0,
            },
            bytes,
            0,
            0,
        );
    }
    count_unread(Counter::AioUnread, n);
}

/// The bytes of the first `n` messages of a sendmmsg or recvmmsg call (`msgvec`): each
/// `struct mmsghdr`'s msg_len (include/uapi/linux/socket.h: a 56-byte msghdr, then it).
#[inline(always)]
fn mmsg_bytes(msgvec: u64, n: u64) -> u64 {
    const MMSGHDR: u64 = 64;
    const MSG_LEN: u64 = 56;
    let mut total = 0;
    let bound = loop_bound(n);
    for i in 0..BATCH_MAX {
        if i >= bound {
            return total;
        }
        if let Ok(len) =
            unsafe { bpf_probe_read_user((msgvec + MMSGHDR * i + MSG_LEN) as *const u32) }
        {
            total += len as u64;
        }
    }
    count_unread(Counter::MmsgUnread, n);
    total
}

/// The bytes the first `n` io_events an io_getevents call returned completed (`res`, when
/// not an error).
#[inline(always)]
fn aio_completed(events: u64, n: u64) -> u64 {
    /// include/uapi/linux/aio_abi.h: `struct io_event` is data, obj, res, res2 (8 bytes each).
    const EVENT: u64 = 32;
    const RES: u64 = 16;
    let mut total = 0;
    let bound = loop_bound(n);
    for i in 0..BATCH_MAX {
        if i >= bound {
            return total;
        }
        if let Ok(res) = unsafe { bpf_probe_read_user((events + EVENT * i + RES) as *const i64) }
            && res > 0
        {
            total += res as u64;
        }
    }
    count_unread(Counter::AioUnread, n);
    total
}

/// The entries of a call past the first [`BATCH_MAX`], in their drop counter.
#[inline(always)]
fn count_unread(c: Counter, n: u64) {
    if n > BATCH_MAX
        && let Some(v) = COUNTERS.get_ptr_mut(c as u32)
    {
        bump(v, n - BATCH_MAX);
    }
}

/// Add `n` operations of no bytes to a row (the messages of an mmsg call).
#[inline(always)]
pub(super) fn add_calls(key: SyscallKey, n: u64) {
    if !add_call(key, 0, 0, 0) {
        return;
    }
    if n > 1
        && let Some(v) = SYSCALL_STATS.get_ptr_mut(&key)
    {
        unsafe { bump(&raw mut (*v).calls, n - 1) };
    }
}

/// Add bytes to a call's row without counting a call: the shared exit program counts the
/// call itself, before or after this (the order of programs on one tracepoint is not
/// fixed), so a row this creates holds no call until it does.
#[inline(always)]
fn add_bytes(key: SyscallKey, bytes: u64) {
    if bytes == 0 {
        return;
    }
    let mut row = SYSCALL_STATS.get_ptr_mut(&key);
    if row.is_none() {
        let v = SyscallStats {
            calls: 0,
            bytes,
            errors: 0,
            nanos: 0,
        };
        if SYSCALL_STATS.insert(&key, &v, BPF_NOEXIST).is_ok() {
            return;
        }
        row = SYSCALL_STATS.get_ptr_mut(&key);
    }
    match row {
        Some(v) => unsafe { bump(&raw mut (*v).bytes, bytes) },
        None => count(Counter::StatsFull),
    }
}
