//! The shapes of a snapshot as the JSON output, the metrics and the TUI read them.

use std::{borrow::Cow, collections::BTreeMap};

use copyscope_common::{CopyStats, PagecacheStats};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeRow {
    pub name: String,
    pub family: String,
    pub hook: String,
    pub method: Option<String>,
    pub attached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyscallRow {
    /// Borrowed from the syscall table (owned when read back from JSON).
    pub syscall: Cow<'static, str>,
    /// `file`, `file_direct`, `socket`, `pipe`, `other`, or `IN->OUT` for two-fd calls.
    pub fd_kind: Cow<'static, str>,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuCopy {
    pub to_user: u64,
    pub from_user: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessRow {
    pub pid: u32,
    pub comm: String,
    /// The process exited during the window; its counts are final.
    pub exited: bool,
    pub syscalls: Vec<SyscallRow>,
    pub calls: u64,
    /// User/kernel mode switches: two per syscall (entry and return).
    pub mode_switches: u64,
    /// Bytes the CPU copied: measured at the copy's source where the copies family is
    /// attached (see `cpu_copy_method`), else derived from the syscalls.
    pub cpu_copy_bytes: CpuCopy,
    /// The same figure derived from the syscalls alone, for comparison.
    pub cpu_copy_bytes_syscalls: CpuCopy,
    /// What the copies family measured at each source (zero where it is not attached).
    pub cpu_copy_at_source: CopyStats,
    pub zero_copy_bytes: u64,
    pub direct_io_bytes: u64,
    pub syscall_seconds: f64,
    pub context_switches: SchedRow,
    #[serde(rename = "page_cache")]
    pub pagecache: PagecacheRow,
    /// The container the process runs in (from /proc/PID/cgroup), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The container's pod, when the Kubernetes API named it (`run --kube-node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// A container's place in a Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct PodRef {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SchedRow {
    pub voluntary: u64,
    pub involuntary: u64,
    /// Switches while inside a counted I/O syscall (the task blocked in read(), say).
    pub in_io: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct PagecacheRow {
    pub lookups: u64,
    /// lookups - misses, never negative.
    pub hits: u64,
    /// Read misses: pages a read (its readahead, or a fault) had to bring into the cache.
    pub misses: u64,
    /// Pages added to the cache by writes: not misses.
    #[serde(default)]
    pub added_by_writes: u64,
    /// hits / lookups, from reads alone; null when nothing was looked up.
    pub hit_ratio: Option<f64>,
    pub mmap_faults: u64,
    /// Pages dirtied by writes.
    pub dirtied: u64,
}

impl PagecacheRow {
    pub fn from_stats(s: &PagecacheStats) -> PagecacheRow {
        // A page added and dirtied in the same window counts in both kernel figures; the
        // two are read in one pass, so the difference is never more than the read misses.
        let misses = s.added.saturating_sub(s.write_added);
        let hits = s.lookups.saturating_sub(misses);
        PagecacheRow {
            lookups: s.lookups,
            hits,
            misses,
            added_by_writes: s.write_added,
            hit_ratio: (s.lookups > 0).then(|| hits as f64 / s.lookups as f64),
            mmap_faults: s.mmap_faults,
            dirtied: s.dirtied,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// The window's real length (not the nominal interval): rates divide by it.
    pub duration_seconds: f64,
    /// When the window ended, in seconds since the Unix epoch.
    #[serde(default)]
    pub end_unix_seconds: f64,
    /// The host name of the machine counted.
    #[serde(default)]
    pub host: String,
    pub kernel: String,
    pub probes: Vec<ProbeRow>,
    pub processes: Vec<ProcessRow>,
    /// What the kernel side could not count in this window, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// How each CPU-copy figure was measured: a copies-family method, or `syscalls`.
    pub cpu_copy_method: BTreeMap<String, String>,
    /// Per-program run count and time in this window (`--bpf-stats`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bpf_stats: Vec<crate::loader::ProgramStat>,
    /// `snapshot -- COMMAND`: the command's pid and exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRun>,
    /// This host's memory-copy bandwidth and syscall cost, which the savings are based on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The zero-copy advisor's findings, biggest estimated saving first.
    pub advice: Vec<ProcessAdvice>,
}

/// This host's cost of the work zero-copy avoids, measured at start-up.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Bytes one CPU copies per second (memcpy of buffers larger than the caches).
    pub memcpy_bytes_per_second: f64,
    /// Seconds of one system call round trip (two mode switches).
    pub syscall_seconds: f64,
}

/// Why the advisor made a finding: the window and its figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub window_seconds: f64,
    /// One sentence with the figures that triggered the finding.
    pub summary: String,
    /// The same figures by name (bytes per second, ratios, counts).
    #[serde(flatten)]
    pub figures: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// Stable identifier: `sendfile`, `mmap_sendfile`, `splice_socket_to_socket`,
    /// `splice_socket_to_file`, `copy_file_range`, `direct_io`, `zero_copy`.
    pub pattern: String,
    pub recommendation: String,
    pub evidence: Evidence,
    pub estimated_cpu_seconds_saved_per_second: f64,
    /// The saving is under the minimum (`--advise-min-saving`): listed only when asked
    /// for (`--advise-all`), never exported as a metric. Never set on `zero_copy`
    /// ("already zero-copy: nothing to change"), which saves nothing by definition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub below_threshold: bool,
}

/// One advisor finding for a process (snapshot) or a workload (`run`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessAdvice {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(flatten)]
    pub finding: Finding,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandRun {
    pub pid: u32,
    pub exit_code: i32,
}

impl ProcessRow {
    /// A row with nothing counted yet.
    pub fn empty(pid: u32, comm: String, exited: bool) -> ProcessRow {
        ProcessRow {
            pid,
            comm,
            exited,
            syscalls: vec![],
            calls: 0,
            mode_switches: 0,
            cpu_copy_bytes: CpuCopy::default(),
            cpu_copy_bytes_syscalls: CpuCopy::default(),
            cpu_copy_at_source: CopyStats::default(),
            zero_copy_bytes: 0,
            direct_io_bytes: 0,
            syscall_seconds: 0.0,
            context_switches: SchedRow::default(),
            pagecache: PagecacheRow::default(),
            container_id: None,
            pod: None,
        }
    }
}
