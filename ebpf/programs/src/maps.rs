//! Every map is bounded; what does not fit is counted in COUNTERS.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use copyscope_common::{
    CacheStats, CopyStats, Counter, Exited, Inflight, PinMeta, SchedStats, SyscallKey,
    SyscallStats, limits,
};

/// Syscall number -> `copyscope_common::syscalls::index_entry` (0: not counted).
#[map]
pub static SYSCALL_INDEX: Array<u16> = Array::with_max_entries(limits::SYSCALL_NR_MAX, 0);

#[map]
pub static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStats> =
    PerCpuHashMap::with_max_entries(limits::SYSCALL_STATS_ENTRIES, 0);

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
#[map]
pub static WATCHED: HashMap<u32, u8> = HashMap::with_max_entries(limits::WATCHED_ENTRIES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map]
pub static SCHED_STATS: PerCpuHashMap<u32, SchedStats> =
    PerCpuHashMap::with_max_entries(limits::PROC_STATS_ENTRIES, 0);

#[map]
pub static CACHE_STATS: PerCpuHashMap<u32, CacheStats> =
    PerCpuHashMap::with_max_entries(limits::PROC_STATS_ENTRIES, 0);

#[map]
pub static COPY_STATS: PerCpuHashMap<u32, CopyStats> =
    PerCpuHashMap::with_max_entries(limits::PROC_STATS_ENTRIES, 0);

/// The programs never touch the two maps below: they are declared here so that the agent's
/// pinned state lives in maps created, pinned and checked like the others.
#[map]
pub static PIN_META: Array<PinMeta> = Array::with_max_entries(1, 0);

/// Chunks of the agent's saved totals. BPF_F_NO_PREALLOC: memory only for chunks in use.
#[map]
pub static AGENT_STATE: HashMap<u32, [u8; limits::STATE_CHUNK]> =
    HashMap::with_max_entries(limits::STATE_ENTRIES, 1);

/// The current process's row of a per-process per-CPU map, created on first use.
#[inline(always)]
pub fn proc_row<V: Default>(map: &PerCpuHashMap<u32, V>, tgid: u32) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(&tgid) {
        return Some(v);
    }
    if map.insert(&tgid, &V::default(), 0).is_err() {
        count(Counter::ProcStatsFull);
        return None;
    }
    map.get_ptr_mut(&tgid)
}

/// Add to a counter in a per-CPU row. Atomic, because on preemptible kernels (e.g.
/// CONFIG_PREEMPT_LAZY, where the syscall tracepoints and BPF trampolines run with only
/// migration disabled) another task can run the same program on this CPU between a plain
/// load and store, and one of the two increments would be lost. Written as the BPF
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
