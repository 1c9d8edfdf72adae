//! Every map is bounded; what does not fit is counted in COUNTERS.
//!
//! Memory is sized for the node, not for its CPU count: the rows are shared by every CPU
//! and counted with atomic adds, so a 192-CPU node holds the same maps as a 2-CPU one.
//! Only COUNTERS (a handful of u64) is per CPU.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use copyscope_common::{
    CopyStats, Counter, Exited, Inflight, PagecacheStats, PinMeta, SchedStats, SyscallKey,
    SyscallStats, limits,
};

/// Syscall number -> `copyscope_common::syscalls::index_entry` (0: not counted).
#[map]
pub static SYSCALL_INDEX: Array<u16> = Array::with_max_entries(limits::SYSCALL_NR_MAX, 0);

#[map]
pub static SYSCALL_STATS: HashMap<SyscallKey, SyscallStats> =
    HashMap::with_max_entries(limits::SYSCALL_STATS_ENTRIES, 0);

/// Syscalls in flight, one slot per thread id modulo the size.
#[map]
pub static INFLIGHT: Array<Inflight> = Array::with_max_entries(limits::INFLIGHT_SLOTS, 0);

/// In-flight syscalls whose slot was held by another live thread, by thread id.
#[map]
pub static INFLIGHT_SPILL: HashMap<u32, Inflight> =
    HashMap::with_max_entries(limits::INFLIGHT_SPILL_ENTRIES, 0);

/// Processes whose last thread exited since the agent's last harvest, by tgid.
#[map]
pub static EXITED: HashMap<u32, Exited> = HashMap::with_max_entries(limits::EXITED_ENTRIES, 0);

/// Processes followed by `snapshot -- COMMAND` (a command and its descendants), by tgid.
/// BPF_F_NO_PREALLOC: empty, and no memory, unless a command is watched.
#[map]
pub static WATCHED: HashMap<u32, u8> =
    HashMap::with_max_entries(limits::WATCHED_ENTRIES, BPF_F_NO_PREALLOC);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
pub static SCHED_STATS: HashMap<u32, SchedStats> =
    HashMap::with_max_entries(limits::PROC_STATS_ENTRIES, 0);

#[map]
pub static PAGECACHE_STATS: HashMap<u32, PagecacheStats> =
    HashMap::with_max_entries(limits::PROC_STATS_ENTRIES, 0);

#[map]
pub static COPY_STATS: HashMap<u32, CopyStats> =
    HashMap::with_max_entries(limits::PROC_STATS_ENTRIES, 0);

/// The programs never touch the two maps below: they are declared here so that the agent's
/// pinned state lives in maps created, pinned and checked like the others.
#[map]
pub static PIN_META: Array<PinMeta> = Array::with_max_entries(1, 0);

/// Chunks of the agent's saved totals. BPF_F_NO_PREALLOC: memory only for chunks in use.
#[map]
pub static AGENT_STATE: HashMap<u32, [u8; limits::STATE_CHUNK]> =
    HashMap::with_max_entries(limits::STATE_ENTRIES, BPF_F_NO_PREALLOC);

/// include/uapi/linux/bpf.h: map flags and update flags.
const BPF_F_NO_PREALLOC: u32 = 1;
pub const BPF_NOEXIST: u64 = 1;

/// The current process's row of a per-process map, created on first use. BPF_NOEXIST:
/// when another CPU creates the row first, its counts are kept and this one adds to it.
#[inline(always)]
pub fn proc_row<V: Default>(map: &HashMap<u32, V>, tgid: u32) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(&tgid) {
        return Some(v);
    }
    let _ = map.insert(&tgid, &V::default(), BPF_NOEXIST);
    let row = map.get_ptr_mut(&tgid);
    if row.is_none() {
        count(Counter::ProcStatsFull);
    }
    row
}

/// Add to a counter in a row every CPU shares: atomic, so that no increment is lost to
/// another CPU, nor to another task on this CPU (on preemptible kernels, e.g.
/// CONFIG_PREEMPT_LAZY, the syscall tracepoints and BPF trampolines run with only
/// migration disabled). Written as the BPF
/// atomic add without fetch (BPF_XADD), which every BPF kernel supports; Rust's bpf target
/// has no 64-bit atomic types.
#[inline(always)]
pub fn bump(p: *mut u64, v: u64) {
    // SAFETY: p points into a map value the verifier has checked is 8 bytes and aligned.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        )
    }
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(v) = COUNTERS.get_ptr_mut(c as u32) {
        bump(v, 1);
    }
}
