//! syscalls family: calls, bytes, errors and time of the data-path syscalls, per process,
//! syscall and fd kind.
//!
//! Preferred: the sys_enter/sys_exit tracepoints (include/trace/events/syscalls.h) as BTF
//! tracepoints (enter) or raw tracepoints, one program each for every syscall. Fallback:
//! the per-syscall `syscalls:sys_enter_*`
//! / `sys_exit_*` tracepoints (kernel/trace/trace_syscalls.c), whose record layout is read
//! from tracefs.
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::debug;
use copyscope_common::{
    Counter, FdKind, Inflight, SyscallKey, SyscallStats, limits,
    syscalls::{
        AIO_READ, AIO_WRITE, IO_GETEVENTS, MSG_ZEROCOPY, NOT_BYTES, NOT_COUNTED, RECVMMSG,
        RECVMMSG_MESSAGES, RECVMSG, SEND_FLAGS, SENDMMSG, SENDMMSG_MESSAGES, SYSCALLS,
        ZEROCOPY_COPIED, ZEROCOPY_NOTIFICATIONS, zerocopy_row,
    },
    test_reject,
};

use crate::{
    field, global,
    maps::{
        BPF_NOEXIST, COUNTERS, INFLIGHT, INFLIGHT_SPILL, SYSCALL_INDEX, SYSCALL_STATS, WATCHED,
        bump, count,
    },
};

mod batch;
mod fd;

use batch::add_calls;
pub(crate) use fd::classify_file;
use fd::{classify, classify_btf, load};

#[unsafe(no_mangle)]
static OFF_TASK_FILES: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FILES_FDT: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FDT_MAX_FDS: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FDT_FD: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FILE_INODE: u64 = 0;
#[unsafe(no_mangle)]
static OFF_FILE_FLAGS: u64 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_MODE: u64 = 0;
#[unsafe(no_mangle)]
static OFF_INODE_RDEV: u64 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_ARG0: u64 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_ARG1: u64 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_ARG2: u64 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_ARG3: u64 = 0;
#[unsafe(no_mangle)]
static FUNC_TASK_PT_REGS: u64 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_NR: u64 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_EXIT_ARG0: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TP_NR: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TP_EXIT_NR: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TP_ARGS: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TP_RET: u64 = 0;
#[unsafe(no_mangle)]
pub(crate) static DEBUG_LOG: u8 = 0;
#[unsafe(no_mangle)]
pub(crate) static WATCH_ONLY: u8 = 0;

const SLOT_MASK: u32 = limits::INFLIGHT_SLOTS - 1;

// include/trace/events/syscalls.h: TRACE_EVENT_FN(sys_enter, TP_PROTO(struct pt_regs *regs, long id))
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscalls_enter(ctx: RawTracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_ENTER);
    let nr: u64 = ctx.arg(1);
    let regs: *const u8 = ctx.arg(0);
    match try_enter(nr, |i| read_reg(regs, i)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

// include/trace/events/syscalls.h: sys_enter as a BTF-typed tracepoint: the arguments and
// the current task are typed pointers, so the first hops of the fd walk are plain loads
// instead of bpf_probe_read_kernel calls.
#[btf_tracepoint(function = "sys_enter")]
pub fn syscalls_tpbtf(ctx: BtfTracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_ENTER);
    let regs: *const u8 = ctx.arg(0);
    let nr: u64 = ctx.arg(1);
    match try_enter_with(
        nr,
        |i| unsafe { load::<u64>(regs, reg_offset(i)) },
        classify_btf,
    ) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

// include/trace/events/syscalls.h: TRACE_EVENT_FN(sys_exit, TP_PROTO(struct pt_regs *regs, long ret))
// The registers still hold the syscall number and its arguments, so a call whose enter
// run the kernel skipped is still counted, with its fds classified here.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscalls_exit(ctx: RawTracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_EXIT);
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr =
        unsafe { bpf_probe_read_kernel(regs.add(global(&OFF_REGS_NR) as usize) as *const u32) }
            .map(|n| n as u64)
            .unwrap_or(u64::MAX);
    let arg = |i: u8| match i {
        0 => read_reg_at(regs, global(&OFF_REGS_EXIT_ARG0)),
        _ => read_reg(regs, i),
    };
    match try_exit(&ctx, nr, ret, Some(arg)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

// kernel/trace/trace_syscalls.c: ftrace_syscall_enter -> perf_syscall_enter (record: nr,
// args[6]). The fd walk starts from the BTF-typed current task (5.11+), so its first hops
// are plain loads; kernels without bpf_get_current_task_btf load `syscalls_tp_ent`.
#[tracepoint]
pub fn syscalls_tp_enb(ctx: TracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_ENTER);
    let nr: i32 = field(&ctx, global(&OFF_TP_NR));
    match try_enter_with(nr as u64, |i| record_arg(&ctx, i), classify_btf) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[tracepoint]
pub fn syscalls_tp_ent(ctx: TracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_ENTER);
    let nr: i32 = field(&ctx, global(&OFF_TP_NR));
    match try_enter(nr as u64, |i| record_arg(&ctx, i)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// Argument `i` (0-2: the fd positions; 3: a send's flags) of a syscall enter record.
/// The kernel refuses to attach a program that loads from its record past the end of any
/// record it is attached to (`read` has three arguments), so the fourth, read only for
/// the calls that have one, is copied with bpf_probe_read_kernel instead of loaded.
#[inline(always)]
fn record_arg(ctx: &TracePointContext, i: u8) -> u64 {
    let base = global(&OFF_TP_ARGS);
    match i {
        0 => field(ctx, base),
        1 => field(ctx, base + 8),
        2 => field(ctx, base + 16),
        _ => unsafe {
            bpf_probe_read_kernel((ctx.as_ptr() as *const u8).add(base as usize + 24) as *const u64)
        }
        .unwrap_or(0),
    }
}

// kernel/trace/trace_syscalls.c: perf_syscall_exit (record: nr, ret). The record has no
// arguments; the task's saved user registers (bpf_task_pt_regs, 5.15+) still hold them, so
// a call whose enter run was skipped is counted, with its fds classified here, as on the
// raw sys_exit. Kernels without that helper refuse this program and use the raw sys_exit.
#[tracepoint]
pub fn syscalls_tp_exr(ctx: TracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_EXIT);
    let ret: i64 = field(&ctx, global(&OFF_TP_RET));
    let nr: i32 = field(&ctx, global(&OFF_TP_EXIT_NR));
    // Only on the rare path (no record from enter): the helper is not free.
    let arg = |i: u8| {
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf() as *mut _) } as *const u8;
        if regs.is_null() {
            return u64::MAX;
        }
        match i {
            0 => read_reg_at(regs, global(&OFF_REGS_EXIT_ARG0)),
            _ => read_reg(regs, i),
        }
    };
    match try_exit(&ctx, nr as u64, ret, Some(arg)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

// The same without the registers, for kernels where neither of the above loads: a call
// whose enter run was skipped is not counted here (only in `syscall_time_unknown`).
#[tracepoint]
pub fn syscalls_tp_ext(ctx: TracePointContext) -> i32 {
    crate::rejected_when_asked(test_reject::SYSCALLS_EXIT);
    let ret: i64 = field(&ctx, global(&OFF_TP_RET));
    let nr: i32 = field(&ctx, global(&OFF_TP_EXIT_NR));
    match try_exit(&ctx, nr as u64, ret, None::<fn(u8) -> u64>) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

#[inline(always)]
fn reg_offset(i: u8) -> u64 {
    match i {
        0 => global(&OFF_REGS_ARG0),
        1 => global(&OFF_REGS_ARG1),
        2 => global(&OFF_REGS_ARG2),
        _ => global(&OFF_REGS_ARG3),
    }
}

#[inline(always)]
fn read_reg(regs: *const u8, i: u8) -> u64 {
    read_reg_at(regs, reg_offset(i))
}

#[inline(always)]
fn read_reg_at(regs: *const u8, off: u64) -> u64 {
    unsafe { bpf_probe_read_kernel(regs.add(off as usize) as *const u64) }.unwrap_or(u64::MAX)
}

#[inline(always)]
fn try_enter(nr: u64, arg: impl Fn(u8) -> u64) -> Result<(), i32> {
    try_enter_with(nr, arg, classify)
}

#[inline(always)]
fn try_enter_with(
    nr: u64,
    arg: impl Fn(u8) -> u64,
    classify: impl Fn(u64) -> Result<FdKind, i64>,
) -> Result<(), i32> {
    let Some((idx, fds)) = counted(nr) else {
        return Ok(());
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if !watched(pid_tgid) {
        return Ok(());
    }
    let idx = flagged_row(idx, fds, &arg);
    let (fd_in, fd_out) = fd_kinds(fds, arg, classify);
    let rec = Inflight {
        tid,
        syscall: idx,
        fd_in,
        fd_out,
        _pad: 0,
        start_ns: unsafe { bpf_ktime_get_ns() },
        lookup_ino: 0,
        lookup_end: 0,
    };
    let slot = INFLIGHT.get_ptr_mut(tid & SLOT_MASK).ok_or(1)?;
    let held = unsafe { (*slot).tid };
    if held == tid {
        // This thread's previous call never reached the exit program (its run was
        // skipped): count it as a call whose bytes are unknown.
        let stale = unsafe { *slot };
        count_unfinished(&stale, (pid_tgid >> 32) as u32);
    }
    if held == 0 || held == tid {
        unsafe { *slot = rec };
    } else {
        // Another live thread is inside a counted syscall on this slot.
        count(Counter::InflightSpilled);
        if INFLIGHT_SPILL.insert(&tid, &rec, 0).is_err() {
            count(Counter::InflightLost);
        }
    }
    Ok(())
}

/// The table entry of a counted syscall number: its index into `SYSCALLS` and its fd
/// argument positions, with `NOT_BYTES` in bit 7 (see
/// `copyscope_common::syscalls::index_entry`).
#[inline(always)]
fn counted(nr: u64) -> Option<(u8, u8)> {
    if nr >= limits::SYSCALL_NR_MAX as u64 {
        return None;
    }
    let entry = match SYSCALL_INDEX.get(nr as u32) {
        Some(&e) if e != NOT_COUNTED => e,
        _ => return None,
    };
    let idx = (entry as u8).wrapping_sub(1);
    if idx as usize >= SYSCALLS.len() {
        return None;
    }
    Some((idx, (entry >> 8) as u8))
}

/// The row a call counts in: a send with MSG_ZEROCOPY in its flags counts in its
/// zero-copy row. Only the send calls ([`SEND_FLAGS`]) have their flags read.
#[inline(always)]
fn flagged_row(idx: u8, fds: u8, arg: &impl Fn(u8) -> u64) -> u8 {
    if fds & (SEND_FLAGS >> 8) as u8 == 0 {
        return idx;
    }
    match zerocopy_row(idx) {
        Some((flags, row)) if arg(flags) & MSG_ZEROCOPY != 0 => row,
        _ => idx,
    }
}

/// Whether this process is counted (always, unless only watched processes are).
#[inline(always)]
pub(crate) fn watched(pid_tgid: u64) -> bool {
    global(&WATCH_ONLY) == 0 || unsafe { WATCHED.get(&((pid_tgid >> 32) as u32)) }.is_some()
}

/// The kinds of a call's input and output fds.
#[inline(always)]
fn fd_kinds(
    fds: u8,
    arg: impl Fn(u8) -> u64,
    classify: impl Fn(u64) -> Result<FdKind, i64>,
) -> (u8, u8) {
    let fd_kind = |fd: u64| classify(fd).unwrap_or(FdKind::Other) as u8;
    let fd_in = fd_kind(arg(fds & 0x7));
    let fd_out = match (fds >> 4) & 0x7 {
        0 => FdKind::None as u8,
        a => fd_kind(arg(a - 1)),
    };
    (fd_in, fd_out)
}

/// Count a call recorded at enter whose exit run the kernel skipped.
#[inline(always)]
fn count_unfinished(rec: &Inflight, tgid: u32) {
    count(Counter::BytesUnknown);
    add_call(
        SyscallKey {
            tgid,
            syscall: rec.syscall,
            fd_in: rec.fd_in,
            fd_out: rec.fd_out,
            _pad: 0,
        },
        0,
        0,
        0,
    );
}

#[inline(always)]
fn try_exit<C: EbpfContext>(
    ctx: &C,
    nr: u64,
    ret: i64,
    regs: Option<impl Fn(u8) -> u64>,
) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    let slot = INFLIGHT.get_ptr_mut(tid & SLOT_MASK).ok_or(1)?;
    let mut rec = if unsafe { (*slot).tid } == tid {
        let rec = unsafe { *slot };
        unsafe { (*slot).tid = 0 };
        Some(rec)
    } else {
        // Rare: only when this thread's syscall was spilled.
        match unsafe { INFLIGHT_SPILL.get(&tid) } {
            Some(r) => {
                let rec = *r;
                let _ = INFLIGHT_SPILL.remove(&tid);
                Some(rec)
            }
            None => None,
        }
    };
    let this = counted(nr);
    if let Some(r) = rec
        && this.is_none_or(|(idx, _)| idx != r.syscall && !is_flagged(idx, r.syscall))
    {
        // The record is an earlier call's, whose exit run was skipped.
        count_unfinished(&r, tgid);
        rec = None;
    }
    let Some((idx, fds)) = this else {
        return Ok(());
    };
    let (row, fd_in, fd_out, nanos) = match rec {
        Some(r) => {
            let now = unsafe { bpf_ktime_get_ns() };
            (r.syscall, r.fd_in, r.fd_out, now.saturating_sub(r.start_ns))
        }
        None => {
            // The enter run was skipped (or the call began before copyscope attached).
            let Some(arg) = &regs else {
                count(Counter::TimeUnknown);
                return Ok(());
            };
            if !watched(pid_tgid) {
                return Ok(());
            }
            count(Counter::TimeUnknown);
            let row = flagged_row(idx, fds, arg);
            let (i, o) = fd_kinds(fds, arg, classify);
            (row, i, o, 0)
        }
    };
    let key = SyscallKey {
        tgid,
        syscall: row,
        fd_in,
        fd_out,
        _pad: 0,
    };
    // A recvmsg that returns 0 bytes (rare: end of stream, or a message of the error
    // queue) may have read a MSG_ZEROCOPY completion.
    if ret == 0
        && idx == RECVMSG
        && let Some(arg) = &regs
    {
        zerocopy_notification(arg(1), key);
    }
    let (bytes, errors) = match ret {
        r if r < 0 => (0, 1),
        // The result is not a byte count (io_uring_enter: SQEs submitted).
        _ if fds & (NOT_BYTES >> 8) as u8 != 0 => (0, 0),
        r => (r as u64, 0),
    };
    if !add_call(key, bytes, errors, nanos) && global(&DEBUG_LOG) != 0 {
        debug!(
            ctx,
            "syscall stats map full: dropped a call of tgid {}", key.tgid
        );
    }
    Ok(())
}

/// Whether `row` is the zero-copy row of the send call `idx`.
#[inline(always)]
fn is_flagged(idx: u8, row: u8) -> bool {
    matches!(zerocopy_row(idx), Some((_, r)) if r == row)
}

/// include/uapi/linux/socket.h `struct user_msghdr`: msg_control, msg_controllen, msg_flags.
const MSG_CONTROL: u64 = 32;
const MSG_FLAGS: u64 = 48;
/// include/linux/socket.h.
const MSG_ERRQUEUE: u32 = 0x2000;

/// The first control message of an error-queue read: `struct cmsghdr` (include/linux/
/// socket.h), then `struct sock_extended_err` (include/uapi/linux/errqueue.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct ErrCmsg {
    len: u64,
    level: i32,
    kind: i32,
    errno: u32,
    origin: u8,
    ee_type: u8,
    code: u8,
    pad: u8,
    /// The first and last send the notification reports (a range of sends).
    info: u32,
    data: u32,
}

/// Count a MSG_ZEROCOPY completion a recvmsg (`msg`: its `struct user_msghdr`) read from
/// the error queue: the notification, and the sends it reports copied by the kernel.
/// Read from the message the call filled in: msg_flags holds MSG_ERRQUEUE, and the first
/// control message is IP_RECVERR or IPV6_RECVERR of origin SO_EE_ORIGIN_ZEROCOPY.
#[inline(always)]
fn zerocopy_notification(msg: u64, key: SyscallKey) {
    const SOL_IP: i32 = 0;
    const IP_RECVERR: i32 = 11;
    const SOL_IPV6: i32 = 41;
    const IPV6_RECVERR: i32 = 25;
    const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
    const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
    let Ok(flags) = (unsafe { bpf_probe_read_user((msg + MSG_FLAGS) as *const u32) }) else {
        return;
    };
    if flags & MSG_ERRQUEUE == 0 {
        return;
    }
    let Ok(control) = (unsafe { bpf_probe_read_user((msg + MSG_CONTROL) as *const u64) }) else {
        return;
    };
    let Ok(c) = (unsafe { bpf_probe_read_user(control as *const ErrCmsg) }) else {
        return;
    };
    if !matches!(
        (c.level, c.kind),
        (SOL_IP, IP_RECVERR) | (SOL_IPV6, IPV6_RECVERR)
    ) || c.origin != SO_EE_ORIGIN_ZEROCOPY
    {
        return;
    }
    add_call(
        SyscallKey {
            syscall: ZEROCOPY_NOTIFICATIONS,
            ..key
        },
        0,
        0,
        0,
    );
    if c.code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
        add_calls(
            SyscallKey {
                syscall: ZEROCOPY_COPIED,
                ..key
            },
            c.data.wrapping_sub(c.info) as u64 + 1,
        );
    }
}

/// Add one call to its row; false when the row could not be created (map full, counted).
#[inline(always)]
pub(crate) fn add_call(key: SyscallKey, bytes: u64, errors: u64, nanos: u64) -> bool {
    let mut row = SYSCALL_STATS.get_ptr_mut(&key);
    if row.is_none() {
        let v = SyscallStats {
            calls: 1,
            bytes,
            errors,
            nanos,
        };
        // BPF_NOEXIST: when another CPU created the row first, add to it below.
        if SYSCALL_STATS.insert(&key, &v, BPF_NOEXIST).is_ok() {
            return true;
        }
        row = SYSCALL_STATS.get_ptr_mut(&key);
    }
    match row {
        Some(v) => unsafe {
            bump(&raw mut (*v).calls, 1);
            bump(&raw mut (*v).bytes, bytes);
            if errors != 0 {
                bump(&raw mut (*v).errors, errors);
            }
            bump(&raw mut (*v).nanos, nanos);
            true
        },
        None => {
            count(Counter::StatsFull);
            false
        }
    }
}
