//! copies family: bytes the CPU copies between kernel and user space, counted where the
//! copy happens. The copy routines themselves (_copy_to_user, _copy_to_iter,
//! copy_page_to_iter) are notrace in every kernel measured, so the programs sit on their
//! callers: filemap_read (page cache -> user), sock_recvmsg and the protocols' sendmsg operations (or the
//! sock:sock_*_length tracepoints from 6.12), pipe_read and pipe_write.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fexit, kretprobe, tracepoint},
    programs::{FExitContext, RetProbeContext, TracePointContext},
};
use copyscope_common::{CopyStats, limits, syscalls::ZERO_COPY_MASK};

use crate::{
    field, global,
    maps::{COPY_STATS, INFLIGHT, bump, current_tgid, proc_row},
};

#[unsafe(no_mangle)]
static OFF_SOCKLEN_RET: u64 = 0;
#[unsafe(no_mangle)]
static OFF_SOCKLEN_FLAGS: u64 = 0;

/// include/linux/socket.h: pages handed over by splice/sendfile, not copied.
const MSG_SPLICE_PAGES: i32 = 0x0800_0000;
/// include/linux/socket.h: user pages pinned and sent without a copy.
const MSG_ZEROCOPY: i32 = 0x0400_0000;

#[inline(always)]
fn add(bytes: i64, f: impl FnOnce(&mut CopyStats, u64)) {
    if bytes <= 0 {
        return;
    }
    if let Some(v) = proc_row(&COPY_STATS, current_tgid()) {
        f(unsafe { &mut *v }, bytes as u64);
    }
}

#[inline(always)]
fn socklen(ctx: &TracePointContext) -> (i64, i32) {
    let ret: i32 = field(&ctx, global(&OFF_SOCKLEN_RET));
    let flags: i32 = field(&ctx, global(&OFF_SOCKLEN_FLAGS));
    (ret as i64, flags)
}

/// Whether the current thread is inside a zero-copy syscall (sendfile, splice, ...): the
/// socket send it makes hands over pages and copies nothing from user memory.
#[inline(always)]
fn in_zero_copy_syscall() -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    INFLIGHT
        .get(tid & (limits::INFLIGHT_SLOTS - 1))
        .is_some_and(|s| {
            s.tid == tid && (s.syscall as u32) < 64 && ZERO_COPY_MASK & (1u64 << s.syscall) != 0
        })
}

// net/socket.c: sock_sendmsg_nosec() -> trace_sock_send_length(sk, ret, 0). The flags are
// always 0 here, so MSG_SPLICE_PAGES (sendfile, splice) is recognised by the syscall in
// flight instead.
#[tracepoint]
pub fn copies_sk_send(ctx: TracePointContext) -> i32 {
    let (ret, flags) = socklen(&ctx);
    if flags & (MSG_SPLICE_PAGES | MSG_ZEROCOPY) == 0 && !in_zero_copy_syscall() {
        add(ret, |s, b| bump(&raw mut s.socket_from_user, b));
    }
    0
}

// net/socket.c: sock_recvmsg_nosec() -> trace_sock_recv_length(sk, ret, flags)
#[tracepoint]
pub fn copies_sk_recv(ctx: TracePointContext) -> i32 {
    let (ret, _) = socklen(&ctx);
    add(ret, |s, b| bump(&raw mut s.socket_to_user, b));
    0
}

// The protocols' sendmsg operations, e.g. net/ipv4/af_inet.c:
// int inet_sendmsg(struct socket *sock, struct msghdr *msg, size_t size).
// sock_sendmsg() itself is no good: before 6.5 the compiler inlines it into __sys_sendto()
// and sock_write_iter(), so a program on its out-of-line copy misses most sends. The
// operations are called through sock->ops and cannot be inlined. They return int: only the
// low 32 bits of the saved return register are defined, so the value is read as i32.
#[inline(always)]
fn sent(ret: i64) {
    if !in_zero_copy_syscall() {
        add(ret as i32 as i64, |s, b| {
            bump(&raw mut s.socket_from_user, b)
        });
    }
}

#[fexit]
pub fn copies_snd_inet(ctx: FExitContext) -> i32 {
    sent(ctx.arg::<i64>(3));
    0
}

#[fexit]
pub fn copies_snd_in6(ctx: FExitContext) -> i32 {
    sent(ctx.arg::<i64>(3));
    0
}

#[fexit]
pub fn copies_snd_unst(ctx: FExitContext) -> i32 {
    sent(ctx.arg::<i64>(3));
    0
}

#[fexit]
pub fn copies_snd_undg(ctx: FExitContext) -> i32 {
    sent(ctx.arg::<i64>(3));
    0
}

/// One program for every protocol: kprobes bind at attach time.
#[kretprobe]
pub fn copies_sk_snd_k(ctx: RetProbeContext) -> u32 {
    sent(ctx.ret::<i64>());
    0
}

// net/socket.c: int sock_recvmsg(struct socket *sock, struct msghdr *msg, int flags)
// sock_recvmsg() calls sock_recvmsg_nosec() and is not inlined into its callers on the
// kernels measured (5.10 to 7.2), so the receive side needs one program only.
#[fexit]
pub fn copies_sk_rcv_f(ctx: FExitContext) -> i32 {
    add(ctx.arg::<i64>(3) as i32 as i64, |s, b| {
        bump(&raw mut s.socket_to_user, b)
    });
    0
}

#[kretprobe]
pub fn copies_sk_rcv_k(ctx: RetProbeContext) -> u32 {
    add(ctx.ret::<i64>() as i32 as i64, |s, b| {
        bump(&raw mut s.socket_to_user, b)
    });
    0
}

// mm/filemap.c: ssize_t filemap_read(struct kiocb *iocb, struct iov_iter *iter, ssize_t already_read)
#[fexit]
pub fn copies_file_f(ctx: FExitContext) -> i32 {
    add(ctx.arg::<i64>(3), |s, b| bump(&raw mut s.file_to_user, b));
    0
}

#[kretprobe]
pub fn copies_file_k(ctx: RetProbeContext) -> u32 {
    add(ctx.ret::<i64>(), |s, b| bump(&raw mut s.file_to_user, b));
    0
}

// fs/pipe.c: static ssize_t pipe_read(struct kiocb *iocb, struct iov_iter *to)
#[fexit]
pub fn copies_pipe_r_f(ctx: FExitContext) -> i32 {
    add(ctx.arg::<i64>(2), |s, b| bump(&raw mut s.pipe_to_user, b));
    0
}

#[kretprobe]
pub fn copies_pipe_r_k(ctx: RetProbeContext) -> u32 {
    add(ctx.ret::<i64>(), |s, b| bump(&raw mut s.pipe_to_user, b));
    0
}

// fs/pipe.c: static ssize_t pipe_write(struct kiocb *iocb, struct iov_iter *from)
#[fexit]
pub fn copies_pipe_w_f(ctx: FExitContext) -> i32 {
    add(ctx.arg::<i64>(2), |s, b| bump(&raw mut s.pipe_from_user, b));
    0
}

#[kretprobe]
pub fn copies_pipe_w_k(ctx: RetProbeContext) -> u32 {
    add(ctx.ret::<i64>(), |s, b| bump(&raw mut s.pipe_from_user, b));
    0
}
