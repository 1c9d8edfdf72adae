//! Every map is bounded; what does not fit is counted in COUNTERS.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use copyscope_common::{Counter, Exited, Inflight, SyscallKey, SyscallStats, limits};

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

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(v) = COUNTERS.get_ptr_mut(c as u32) {
        unsafe { *v += 1 };
    }
}
