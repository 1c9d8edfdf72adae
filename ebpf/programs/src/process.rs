//! Process lifetime: record exited processes so the agent keeps their final counts, and
//! follow the descendants of a watched command.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use copyscope_common::{Counter, Exited, limits};

use crate::{
    global,
    maps::{EXITED, INFLIGHT, INFLIGHT_SPILL, WATCHED, count},
};

#[unsafe(no_mangle)]
static OFF_EXIT_GROUP_DEAD: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_TGID: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_PID: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_GROUP_LEADER: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_COMM: u64 = 0;

/// The process's name: its group leader's comm, which /proc/PID/comm shows. The last
/// thread to exit may be another one with a name of its own (io_uring's SQPOLL thread,
/// `iou-sqp-PID`, a worker pool's threads); without the offsets, the exiting thread's.
#[inline(always)]
fn process_comm() -> [u8; 16] {
    let (leader, comm) = (global(&OFF_TASK_GROUP_LEADER), global(&OFF_TASK_COMM));
    if leader != 0 && comm != 0 {
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let read = || -> Result<[u8; 16], i32> {
            let l: *const u8 =
                unsafe { bpf_probe_read_kernel(task.add(leader as usize) as *const _) }?;
            if l.is_null() {
                return Err(-1);
            }
            unsafe { bpf_probe_read_kernel(l.add(comm as usize) as *const [u8; 16]) }
        };
        if let Ok(c) = read() {
            return c;
        }
    }
    bpf_get_current_comm().unwrap_or([0; 16])
}

// include/trace/events/sched.h: TRACE_EVENT(sched_process_exit, ...), fired from do_exit()
#[tracepoint]
pub fn process_exit(ctx: TracePointContext) -> i32 {
    crate::rejected_when_asked(copyscope_common::test_reject::PROCESS_EXIT);
    match try_process_exit(&ctx) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

fn try_process_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    // A thread that dies inside a counted syscall never reaches sys_exit: free its slot.
    if let Some(slot) = INFLIGHT.get_ptr_mut(tid & (limits::INFLIGHT_SLOTS - 1)) {
        unsafe {
            if (*slot).tid == tid {
                (*slot).tid = 0;
            }
        }
    }
    let _ = INFLIGHT_SPILL.remove(&tid);
    let off = global(&OFF_EXIT_GROUP_DEAD);
    let group_dead = if off != 0 {
        unsafe { ctx.read_at::<u8>(off as usize) }.map_err(|e| e as i64)? != 0
    } else {
        // Kernels before 6.16 have no group_dead field: the leader's exit stands for it.
        tid == tgid
    };
    if !group_dead {
        return Ok(());
    }
    let rec = Exited {
        comm: process_comm(),
        exit_ns: unsafe { bpf_ktime_get_ns() },
        // kernel/bpf/helpers.c: bpf_get_current_cgroup_id() (4.18): the default
        // hierarchy's cgroup of the exiting task.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    if EXITED.insert(&tgid, &rec, 0).is_err() {
        count(Counter::ExitedFull);
    }
    Ok(())
}

// include/trace/events/sched.h: TRACE_EVENT(sched_process_fork, TP_PROTO(parent, child))
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn process_fork(ctx: RawTracePointContext) -> i32 {
    match try_process_fork(&ctx) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

fn try_process_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if unsafe { WATCHED.get(&parent_tgid) }.is_none() {
        return Ok(());
    }
    let child: *const u8 = ctx.arg(1);
    let tgid: u32 =
        unsafe { bpf_probe_read_kernel(child.add(global(&OFF_TASK_TGID) as usize) as *const u32) }
            .map_err(|e| e as i64)?;
    let pid: u32 =
        unsafe { bpf_probe_read_kernel(child.add(global(&OFF_TASK_PID) as usize) as *const u32) }
            .map_err(|e| e as i64)?;
    if tgid == pid && WATCHED.insert(&tgid, &1, 0).is_err() {
        count(Counter::WatchedFull);
    }
    Ok(())
}
