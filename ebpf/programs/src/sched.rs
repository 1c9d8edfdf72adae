//! sched family: voluntary and involuntary context switches per process, and those that
//! happened inside a counted I/O syscall.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use copyscope_common::limits;

use crate::{
    global,
    maps::{INFLIGHT, SCHED_STATS, bump, proc_row},
};

#[unsafe(no_mangle)]
static OFF_SWITCH_PREV_STATE: u64 = 0;

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

fn try_sched_switch(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid == 0 {
        return Ok(()); // the idle task
    }
    let state: i64 =
        unsafe { ctx.read_at(global(&OFF_SWITCH_PREV_STATE) as usize) }.map_err(|e| e as i64)?;
    let voluntary = state & (TASK_REPORT_MAX - 1) != 0 && state & TASK_REPORT_MAX == 0;
    let in_io = INFLIGHT
        .get(tid & (limits::INFLIGHT_SLOTS - 1))
        .is_some_and(|slot| slot.tid == tid);
    let Some(v) = proc_row(&SCHED_STATS, (pid_tgid >> 32) as u32) else {
        return Ok(());
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
    Ok(())
}
