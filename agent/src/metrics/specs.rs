//! The name and help of each metric family, and the list of all the names.

use std::collections::BTreeSet;

pub(super) type Spec = (&'static str, &'static str);

pub(super) const SYSCALLS: Spec = (
    "copyscope_syscalls_total",
    "System calls made, by syscall and the kind of file descriptor (IN->OUT for two-fd calls).",
);
pub(super) const SYSCALL_BYTES: Spec = (
    "copyscope_syscall_bytes_total",
    "Bytes the system calls returned as transferred.",
);
pub(super) const SYSCALL_ERRORS: Spec = (
    "copyscope_syscall_errors_total",
    "System calls that returned an error.",
);
pub(super) const SYSCALL_SECONDS: Spec = (
    "copyscope_syscall_seconds_total",
    "Wall-clock seconds spent inside the system calls, blocked time included.",
);
pub(super) const MODE_SWITCHES: Spec = (
    "copyscope_mode_switches_total",
    "User/kernel mode switches of the counted system calls (two per call).",
);
pub(super) const CONTEXT_SWITCHES: Spec = (
    "copyscope_context_switches_total",
    "Scheduler context switches away from the workload: voluntary (blocked) or involuntary (preempted).",
);
pub(super) const CONTEXT_SWITCHES_IN_IO: Spec = (
    "copyscope_context_switches_in_io_total",
    "Context switches that happened inside a counted I/O system call (also counted by kind).",
);
pub(super) const CPU_COPY_BYTES: Spec = (
    "copyscope_cpu_copy_bytes_total",
    "Bytes the CPU copied between kernel and user memory, by direction (see copyscope_cpu_copy_method_info).",
);
pub(super) const ZERO_COPY_BYTES: Spec = (
    "copyscope_zero_copy_bytes_total",
    "Bytes moved without a CPU copy through user memory (sendfile, splice, tee, vmsplice, copy_file_range, io_uring SEND_ZC, SENDMSG_ZC, SPLICE and TEE, and sends with MSG_ZEROCOPY).",
);
pub(super) const DIRECT_IO_BYTES: Spec = (
    "copyscope_direct_io_bytes_total",
    "Bytes read or written with O_DIRECT (DMA to user memory, no page-cache copy).",
);
pub(super) const PAGECACHE_LOOKUPS: Spec = (
    "copyscope_page_cache_lookups_total",
    "Pages looked up in the page cache by buffered reads.",
);
pub(super) const PAGECACHE_HITS: Spec = (
    "copyscope_page_cache_hits_total",
    "Pages found in the page cache (lookups - misses, never negative, per collection window).",
);
pub(super) const PAGECACHE_MISSES: Spec = (
    "copyscope_page_cache_misses_total",
    "Read misses: pages a read, its readahead or a fault brought into the page cache.",
);
pub(super) const PAGECACHE_WRITE_ADDED: Spec = (
    "copyscope_page_cache_write_added_pages_total",
    "Pages added to the page cache by writes (not read misses).",
);
pub(super) const PAGECACHE_DIRTIED: Spec = (
    "copyscope_page_cache_dirtied_pages_total",
    "Page-cache pages dirtied by writes.",
);
pub(super) const PAGECACHE_MMAP: Spec = (
    "copyscope_page_cache_mmap_fault_pages_total",
    "Pages of file mappings faulted in.",
);
pub(super) const ADVICE_SAVED: Spec = (
    "copyscope_advice_estimated_cpu_saved_seconds_total",
    "CPU seconds the advisor estimates zero-copy would have saved, by pattern.",
);
pub(super) const ADVICE_INFO: Spec = (
    "copyscope_advice_info",
    "A finding of the zero-copy advisor in the last collection window (value 1).",
);
pub(super) const ADVICE_SAVING: Spec = (
    "copyscope_advice_estimated_cpu_saved_ratio",
    "CPU seconds per second the finding estimates zero-copy would save, in the last window.",
);
pub(super) const CONTAINER_INFO: Spec = (
    "copyscope_container_info",
    "The pod, namespace and container of a container id (value 1; names need --kube-node). container_id=\"\" stands for the processes outside containers.",
);
pub(super) const KUBE_UP: Spec = (
    "copyscope_kubernetes_api_up",
    "Whether the Kubernetes API answered the last request for this node's pods (only with --kube-node).",
);
pub(super) const BUILD_INFO: Spec = (
    "copyscope_build_info",
    "copyscope's version, the git commit and rustc it was built from, and the kernel it runs on (value 1).",
);
pub(super) const PAGE_SIZE: Spec = (
    "copyscope_page_size_bytes",
    "The kernel's page size: the page-cache figures count pages of this size.",
);
pub(super) const PROBE_ATTACHED: Spec = (
    "copyscope_probe_attached",
    "1 if the probe is attached, 0 if no method could attach (the method: copyscope_probe_method_info).",
);
pub(super) const PROBE_METHOD: Spec = (
    "copyscope_probe_method_info",
    "The method an attached probe uses (value 1).",
);
pub(super) const PROCESS_CPU: Spec = (
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
);
pub(super) const PROCESS_RESIDENT: Spec = (
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
);
pub(super) const PROCESS_VIRTUAL: Spec = (
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
);
pub(super) const PROCESS_OPEN_FDS: Spec = ("process_open_fds", "Number of open file descriptors.");
pub(super) const PROCESS_MAX_FDS: Spec = (
    "process_max_fds",
    "Maximum number of open file descriptors.",
);
pub(super) const PROCESS_START: Spec = (
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
);
pub(super) const COPY_METHOD: Spec = (
    "copyscope_cpu_copy_method_info",
    "How each CPU-copy figure is measured: a copies-family method, or derived from syscalls (value 1).",
);
pub(super) const KERNEL_DROPS: Spec = (
    "copyscope_kernel_drops_total",
    "Events the kernel side could not count, by reason (map full, in-flight lost, program runs the kernel skipped).",
);
pub(super) const PROGRAM_MISSED: Spec = (
    "copyscope_bpf_program_missed_runs_total",
    "Runs the kernel skipped because the program was already running on that CPU (recursion_misses).",
);
pub(super) const PROGRAM_RUNS: Spec = (
    "copyscope_bpf_program_runs_total",
    "Runs of each eBPF program (kernel BPF stats, with --bpf-stats).",
);
pub(super) const PROGRAM_SECONDS: Spec = (
    "copyscope_bpf_program_run_seconds_total",
    "CPU seconds spent in each eBPF program (kernel BPF stats, with --bpf-stats).",
);
pub(super) const MAP_ENTRIES: Spec = (
    "copyscope_map_entries",
    "Entries in use in each kernel map at the last collection.",
);
pub(super) const MAP_MAX_ENTRIES: Spec =
    ("copyscope_map_max_entries", "Capacity of each kernel map.");
pub(super) const MAP_MEMORY: Spec = (
    "copyscope_map_memory_bytes",
    "Kernel memory each map holds (memlock in the map's fdinfo; memory in use since Linux 6.5).",
);
pub(super) const RESIDENT: Spec = (
    "copyscope_agent_resident_memory_bytes",
    "copyscope's own resident memory (VmRSS), at the last collection.",
);
pub(super) const COLLECTIONS: Spec = (
    "copyscope_collections_total",
    "Collection windows completed.",
);
pub(super) const EARLY_HARVESTS: Spec = (
    "copyscope_early_harvests_total",
    "Harvests made between two windows because exited processes were filling the kernel maps.",
);
pub(super) const COLLECTION_SECONDS: Spec = (
    "copyscope_collection_duration_seconds",
    "Seconds the last collection took (reading the maps and updating the metrics).",
);
pub(super) const WORKLOADS: Spec = ("copyscope_workloads", "Workloads with their own series.");
pub(super) const MAX_WORKLOADS: Spec = (
    "copyscope_max_workloads",
    "The cardinality cap: workloads beyond it are summed under comm=\"other\".",
);
pub(super) const FOLDED: Spec = (
    "copyscope_workloads_folded_total",
    "Workload windows summed under comm=\"other\" because the cap was reached.",
);
pub(super) const EVICTED: Spec = (
    "copyscope_workloads_evicted_total",
    "Workloads whose series were dropped, by reason: idle (no activity for --workload-ttl). Windows summed under comm=\"other\" by the cap are copyscope_workloads_folded_total.",
);
pub(super) const CAL_MEMCPY: Spec = (
    "copyscope_calibration_memcpy_bytes_per_second",
    "This host's memory-copy bandwidth, measured at start-up (the advisor's basis).",
);
pub(super) const CAL_SYSCALL: Spec = (
    "copyscope_calibration_syscall_seconds",
    "Seconds of one system call on this host, measured at start-up (two mode switches).",
);

/// Every metric family name (the README lists each; a test checks).
pub fn names() -> BTreeSet<&'static str> {
    [
        SYSCALLS,
        SYSCALL_BYTES,
        SYSCALL_ERRORS,
        SYSCALL_SECONDS,
        MODE_SWITCHES,
        CONTEXT_SWITCHES,
        CONTEXT_SWITCHES_IN_IO,
        CPU_COPY_BYTES,
        ZERO_COPY_BYTES,
        DIRECT_IO_BYTES,
        PAGECACHE_LOOKUPS,
        PAGECACHE_HITS,
        PAGECACHE_MISSES,
        PAGECACHE_WRITE_ADDED,
        PAGECACHE_DIRTIED,
        PAGECACHE_MMAP,
        ADVICE_SAVED,
        ADVICE_INFO,
        ADVICE_SAVING,
        BUILD_INFO,
        PAGE_SIZE,
        CONTAINER_INFO,
        KUBE_UP,
        PROBE_ATTACHED,
        PROBE_METHOD,
        PROCESS_CPU,
        PROCESS_RESIDENT,
        PROCESS_VIRTUAL,
        PROCESS_OPEN_FDS,
        PROCESS_MAX_FDS,
        PROCESS_START,
        COPY_METHOD,
        KERNEL_DROPS,
        PROGRAM_MISSED,
        PROGRAM_RUNS,
        PROGRAM_SECONDS,
        MAP_ENTRIES,
        MAP_MAX_ENTRIES,
        MAP_MEMORY,
        RESIDENT,
        COLLECTIONS,
        COLLECTION_SECONDS,
        EARLY_HARVESTS,
        WORKLOADS,
        MAX_WORKLOADS,
        FOLDED,
        EVICTED,
        CAL_MEMCPY,
        CAL_SYSCALL,
    ]
    .iter()
    .map(|s| s.0)
    .collect()
}
