//! sched family: voluntary and involuntary context switches per process, and those that
//! happened inside a counted I/O syscall.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use copyscope_common::limits;

use crate::{
    global,
    maps::{INFLIGHT, SCHED_STATS, bump, proc_row},
};

#[unsafe(no_mangle)]
static OFF_SWITCH_PREV_STATE: u64 = 0;
#[unsafe(no_mangle)]
static SWITCH_STATE_ARG: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_STATE: u64 = 0;

/// `prev_state` carries TASK_REPORT_MAX when the task was preempted
/// (include/trace/events/sched.h: __trace_sched_switch_state).
const TASK_REPORT_MAX: i64 = 0x100;

// include/trace/events/sched.h: TRACE_EVENT(sched_switch, ...), fired from __schedule();
// the current task is `prev`.
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

// include/trace/events/sched.h: sched_switch as a BTF tracepoint, TP_PROTO(bool preempt,
// struct task_struct *prev, struct task_struct *next, unsigned int prev_state) (5.18+;
// no prev_state before). No record is built for it, and the arguments are plain loads.
// Voluntary as in __schedule()'s nvcsw: not a preemption, and prev was not runnable.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switchbtf(ctx: BtfTracePointContext) -> i32 {
    let preempt: u64 = ctx.arg(0);
    let state: u64 = if global(&SWITCH_STATE_ARG) != 0 {
        let state: u64 = ctx.arg(3);
        state & 0xffff_ffff
    } else {
        let prev: *const u8 = ctx.arg(1);
        if prev.is_null() {
            return 0;
        }
        unsafe { core::ptr::read(prev.add(global(&OFF_TASK_STATE) as usize) as *const u32) as u64 }
    };
    count_switch(preempt & 1 == 0 && state != 0);
    0
}

fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
    let state: i64 =
        unsafe { ctx.read_at(global(&OFF_SWITCH_PREV_STATE) as usize) }.map_err(|e| e as i64)?;
    count_switch(state & (TASK_REPORT_MAX - 1) != 0 && state & TASK_REPORT_MAX == 0);
    Ok(())
}

/// Count one switch away from the current task.
#[inline(always)]
fn count_switch(voluntary: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid == 0 {
        return; // the idle task
    }
    let in_io = INFLIGHT
        .get(tid & (limits::INFLIGHT_SLOTS - 1))
        .is_some_and(|slot| slot.tid == tid);
    let Some(v) = proc_row(&SCHED_STATS, (pid_tgid >> 32) as u32) else {
        return;
    };
    unsafe {
        if voluntary {
            bump(&raw mut (*v).voluntary, 1);
        } else {
            bump(&raw mut (*v).involuntary, 1);
        }
        if in_io {
            bump(&raw mut (*v).in_io, 1);
        }
    }
}
