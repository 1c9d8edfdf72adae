//! uring family: io_uring operations, counted at their completion, per process, opcode
//! group and fd kind, in the syscalls family's rows (`SYSCALLS`' io_uring rows). The
//! io_uring_enter calls that submit them are counted as syscalls.
//!
//! io_uring_complete runs where the completion is posted: in the submitting task, in one of
//! its io-wq workers or in its SQPOLL thread (threads of the same process, 5.12+), so the
//! current process owns the operation. Its opcode and file are read from the request.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use copyscope_common::{
    FdKind, SyscallKey,
    syscalls::{Flow, SYSCALLS, uring_row},
};

use crate::{
    field, global,
    syscalls::{add_call, classify_file, watched},
};

#[unsafe(no_mangle)]
static OFF_URING_CPL_REQ: u64 = 0;
#[unsafe(no_mangle)]
static OFF_URING_CPL_RES: u64 = 0;
#[unsafe(no_mangle)]
static OFF_URING_CPL_CFLAGS: u64 = 0;
#[unsafe(no_mangle)]
static OFF_KIOCB_OPCODE: u64 = 0;
#[unsafe(no_mangle)]
static OFF_KIOCB_FILE: u64 = 0;

/// include/uapi/linux/io_uring.h: a zero-copy send's notification that its buffer is free
/// again: not an operation of its own.
const IORING_CQE_F_NOTIF: u32 = 1 << 3;

// io_uring/io_uring.h: io_fill_cqe_req() -> trace_io_uring_complete(req->ctx, req, cqe)
// (record: ctx, req, user_data, res, cflags, ...).
#[tracepoint]
pub fn uring_complete(ctx: TracePointContext) -> i32 {
    match try_complete(&ctx) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

#[inline(always)]
fn try_complete(ctx: &TracePointContext) -> Result<(), i64> {
    let req: u64 = field(ctx, global(&OFF_URING_CPL_REQ));
    // A CQE without a request (io_post_aux_cqe) is no operation.
    if req == 0 {
        return Ok(());
    }
    let cflags: u32 = field(ctx, global(&OFF_URING_CPL_CFLAGS));
    if cflags & IORING_CQE_F_NOTIF != 0 {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !watched(pid_tgid) {
        return Ok(());
    }
    let res: i32 = field(ctx, global(&OFF_URING_CPL_RES));
    let req = req as *const u8;
    let opcode: u8 = unsafe { bpf_probe_read_kernel(req.add(global(&OFF_KIOCB_OPCODE) as usize)) }?;
    let file: *const u8 =
        unsafe { bpf_probe_read_kernel(req.add(global(&OFF_KIOCB_FILE) as usize) as *const _) }?;
    let row = uring_row(opcode);
    let kind = if file.is_null() {
        FdKind::None
    } else {
        unsafe { classify_file(file) }.unwrap_or(FdKind::Other)
    };
    let moves_bytes = SYSCALLS
        .get(row as usize)
        .is_some_and(|s| !matches!(s.flow, Flow::Control));
    let (bytes, errors) = match res {
        r if r < 0 => (0, 1),
        r if moves_bytes => (r as u64, 0),
        _ => (0, 0),
    };
    add_call(
        SyscallKey {
            tgid: (pid_tgid >> 32) as u32,
            syscall: row,
            fd_in: kind as u8,
            fd_out: FdKind::None as u8,
            _pad: 0,
        },
        bytes,
        errors,
        0,
    );
    Ok(())
}
