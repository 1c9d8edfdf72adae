//! Plain data: cumulative counts from the kernel, and the `Snapshot` derived from two of
//! them. Pure: no maps, no I/O except the comm lookup passed in.

use std::{borrow::Cow, collections::BTreeMap};

use foldhash::{HashMap, HashSet};

use copyscope_common::{
    CopyStats, Counter, FdKind, PagecacheStats, SchedStats, SyscallKey, SyscallStats,
    syscalls::{Flow, SYSCALLS},
};
use serde::{Deserialize, Serialize};

/// Cumulative counts since the programs were loaded: live processes from the kernel maps
/// plus the final counts of processes that exited. The per-process tables are sorted by
/// key, each key once, so that two harvests compare in one pass over both (the tgid leads
/// a syscall row's key: a process's rows are adjacent).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub rows: Vec<(SyscallKey, SyscallStats)>,
    /// Processes known to have exited, with their last comm.
    pub exited: HashMap<u32, String>,
    /// Processes known to have exited, with the cgroup v2 id they exited in (when the
    /// kernel gave one).
    pub exited_cgroups: HashMap<u32, u64>,
    /// Kernel-side drops, by [`Counter`].
    pub drops: [u64; Counter::COUNT as usize],
    /// Per process (tgid): context switches, page-cache activity, copies at their source.
    pub sched: Vec<(u32, SchedStats)>,
    pub pagecache: Vec<(u32, PagecacheStats)>,
    pub copy: Vec<(u32, CopyStats)>,
}

impl Counts {
    /// Leave these processes out (exited and reported).
    pub fn forget(&mut self, tgids: &HashSet<u32>) {
        if tgids.is_empty() {
            return;
        }
        self.rows.retain(|(k, _)| !tgids.contains(&k.tgid));
        self.sched.retain(|(t, _)| !tgids.contains(t));
        self.pagecache.retain(|(t, _)| !tgids.contains(t));
        self.copy.retain(|(t, _)| !tgids.contains(t));
        self.exited.retain(|t, _| !tgids.contains(t));
        self.exited_cgroups.retain(|t, _| !tgids.contains(t));
    }
}

/// Sort a table by key and add up the entries of a key that occurs more than once.
pub fn sorted<K: Ord + Copy, V: Tally>(mut t: Vec<(K, V)>) -> Vec<(K, V)> {
    t.sort_unstable_by_key(|(k, _)| *k);
    t.dedup_by(|(k, v), (kept, into)| {
        if k == kept {
            into.add(v);
            true
        } else {
            false
        }
    });
    t
}

/// The entry of `key` in a table sorted by key.
pub fn lookup<'a, K: Ord, V>(t: &'a [(K, V)], key: &K) -> Option<&'a V> {
    t.binary_search_by(|(k, _)| k.cmp(key))
        .ok()
        .map(|i| &t[i].1)
}

/// [`Counts`] in a form serde writes (maps with struct keys become lists).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CountsSaved {
    pub rows: Vec<(SyscallKey, SyscallStats)>,
    pub exited: Vec<(u32, String)>,
    #[serde(default)]
    pub exited_cgroups: Vec<(u32, u64)>,
    pub drops: Vec<u64>,
    pub sched: Vec<(u32, SchedStats)>,
    /// Saved as `cache` by earlier versions.
    #[serde(alias = "cache")]
    pub pagecache: Vec<(u32, PagecacheStats)>,
    pub copy: Vec<(u32, CopyStats)>,
}

impl From<&Counts> for CountsSaved {
    fn from(c: &Counts) -> CountsSaved {
        fn list<K: Copy, V: Clone>(m: &HashMap<K, V>) -> Vec<(K, V)> {
            m.iter().map(|(k, v)| (*k, v.clone())).collect()
        }
        CountsSaved {
            rows: c.rows.clone(),
            exited: list(&c.exited),
            exited_cgroups: list(&c.exited_cgroups),
            drops: c.drops.to_vec(),
            sched: c.sched.clone(),
            pagecache: c.pagecache.clone(),
            copy: c.copy.clone(),
        }
    }
}

impl From<CountsSaved> for Counts {
    fn from(s: CountsSaved) -> Counts {
        let mut drops = [0; Counter::COUNT as usize];
        for (d, v) in drops.iter_mut().zip(s.drops) {
            *d = v;
        }
        // Sorted again: an earlier version saved its tables in hash order.
        Counts {
            rows: sorted(s.rows),
            exited: s.exited.into_iter().collect(),
            exited_cgroups: s.exited_cgroups.into_iter().collect(),
            drops,
            sched: sorted(s.sched),
            pagecache: sorted(s.pagecache),
            copy: sorted(s.copy),
        }
    }
}

/// Counters that add and subtract field by field.
pub trait Tally: Copy + Default {
    fn add(&mut self, o: &Self);
    fn sub(&self, o: &Self) -> Self;
    fn is_zero(&self) -> bool;
}

macro_rules! tally {
    ($t:ty { $($f:ident),+ }) => {
        impl Tally for $t {
            fn add(&mut self, o: &Self) {
                $(self.$f += o.$f;)+
            }
            fn sub(&self, o: &Self) -> Self {
                Self { $($f: self.$f.saturating_sub(o.$f)),+ }
            }
            fn is_zero(&self) -> bool {
                $(self.$f == 0)&&+
            }
        }
    };
}

tally!(SyscallStats {
    calls,
    bytes,
    errors,
    nanos
});
tally!(SchedStats {
    voluntary,
    involuntary,
    in_io
});
tally!(PagecacheStats {
    lookups,
    added,
    write_added,
    mmap_faults,
    dirtied
});
tally!(CopyStats {
    file_to_user,
    socket_to_user,
    socket_from_user,
    pipe_to_user,
    pipe_from_user
});

/// What changed from `before` to `after`, two tables sorted by key, in one pass over
/// both: `after`'s entries less `before`'s for the same key, those `keep` refuses left out.
fn delta_sorted<K: Ord + Copy, V: Tally>(
    before: &[(K, V)],
    after: &[(K, V)],
    keep: impl Fn(&V) -> bool,
) -> Vec<(K, V)> {
    let mut out = Vec::with_capacity(after.len());
    let mut b = before.iter().peekable();
    for (k, v) in after {
        while b.next_if(|(bk, _)| bk < k).is_some() {}
        let d = match b.next_if(|(bk, _)| bk == k) {
            Some((_, bv)) => v.sub(bv),
            None => *v,
        };
        if keep(&d) {
            out.push((*k, d));
        }
    }
    out
}

/// Per-process differences of two cumulative tables, idle processes left out.
pub fn delta_by_pid<V: Tally>(before: &[(u32, V)], after: &[(u32, V)]) -> Vec<(u32, V)> {
    delta_sorted(before, after, |v| !v.is_zero())
}

pub fn add(a: &mut SyscallStats, b: &SyscallStats) {
    a.calls += b.calls;
    a.bytes += b.bytes;
    a.errors += b.errors;
    a.nanos += b.nanos;
}

/// Counts that happened between `before` and `after`, by row, sorted by key.
pub fn delta(before: &Counts, after: &Counts) -> Vec<(SyscallKey, SyscallStats)> {
    delta_sorted(&before.rows, &after.rows, |v| v.calls > 0)
}

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

/// The fd-kind label of a row: `IN` or `IN->OUT`, built once per pair of kinds.
pub fn fd_label(key: &SyscallKey) -> Cow<'static, str> {
    static PAIRS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..FdKind::COUNT * FdKind::COUNT)
            .map(|i| {
                let fin = FdKind::from_u8((i / FdKind::COUNT) as u8);
                let fout = FdKind::from_u8((i % FdKind::COUNT) as u8);
                format!("{}->{}", fin.name(), fout.name())
            })
            .collect()
    });
    let fin = FdKind::from_u8(key.fd_in);
    let fout = FdKind::from_u8(key.fd_out);
    if fout == FdKind::None {
        Cow::Borrowed(fin.name())
    } else {
        Cow::Borrowed(&PAIRS[fin as usize * FdKind::COUNT + fout as usize])
    }
}

/// Which copy figures are measured where the copy happens (the copies family attached);
/// the others are derived from the syscalls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopySources {
    pub file_read: bool,
    pub socket_recv: bool,
    pub socket_send: bool,
    pub pipe_read: bool,
    pub pipe_write: bool,
}

/// Everything counted in one window, per process: tables sorted by key, each key once.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub rows: &'a [(SyscallKey, SyscallStats)],
    pub sched: &'a [(u32, SchedStats)],
    pub pagecache: &'a [(u32, PagecacheStats)],
    pub copy: &'a [(u32, CopyStats)],
    pub exited: &'a HashMap<u32, String>,
    pub sources: CopySources,
    /// Also list processes that only switched context (for a command or one pid).
    pub include_sched_only: bool,
}

/// Bytes copied by the CPU, derived from the syscalls, by the fd kind they went through.
#[derive(Debug, Default, Clone, Copy)]
struct SyscallCopies {
    to_user: [u64; FdKind::COUNT],
    from_user: [u64; FdKind::COUNT],
}

/// Fold one row into a process's derived figures.
fn derive(p: &mut ProcessRow, c: &mut SyscallCopies, key: &SyscallKey, v: &SyscallStats) {
    let Some(spec) = SYSCALLS.get(key.syscall as usize) else {
        return;
    };
    if spec.is_syscall() {
        p.calls += v.calls;
        p.mode_switches += 2 * v.calls;
        p.syscall_seconds += v.nanos as f64 / 1e9;
    }
    let kind = FdKind::from_u8(key.fd_in);
    let k = kind as usize;
    match spec.flow {
        Flow::ToUser | Flow::FromUser if kind == FdKind::FileDirect => p.direct_io_bytes += v.bytes,
        // /dev/null and /dev/zero: a write is discarded, a read fills the buffer with
        // zeros; no byte is copied between the kernel and the user.
        Flow::ToUser | Flow::FromUser if kind == FdKind::Null => {}
        Flow::ToUser => c.to_user[k] += v.bytes,
        Flow::FromUser => c.from_user[k] += v.bytes,
        Flow::ZeroCopy => p.zero_copy_bytes += v.bytes,
        Flow::Control => {}
    }
}

/// Combine the syscall-derived copies with the ones measured at their source.
fn copies(c: &SyscallCopies, src: &CopyStats, s: CopySources) -> (CpuCopy, CpuCopy) {
    let (f, so, pi) = (
        FdKind::File as usize,
        FdKind::Socket as usize,
        FdKind::Pipe as usize,
    );
    let sys = CpuCopy {
        to_user: c.to_user.iter().sum(),
        from_user: c.from_user.iter().sum(),
    };
    let pick = |on: bool, measured: u64, derived: u64| if on { measured } else { derived };
    let best = CpuCopy {
        to_user: sys.to_user - c.to_user[f] - c.to_user[so] - c.to_user[pi]
            + pick(s.file_read, src.file_to_user, c.to_user[f])
            + pick(s.socket_recv, src.socket_to_user, c.to_user[so])
            + pick(s.pipe_read, src.pipe_to_user, c.to_user[pi]),
        from_user: sys.from_user - c.from_user[so] - c.from_user[pi]
            + pick(s.socket_send, src.socket_from_user, c.from_user[so])
            + pick(s.pipe_write, src.pipe_from_user, c.from_user[pi]),
    };
    (best, sys)
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

fn new_row(pid: u32, w: &Window, comm_of: &dyn Fn(u32) -> Option<String>) -> ProcessRow {
    let gone = w.exited.get(&pid);
    ProcessRow::empty(
        pid,
        gone.cloned()
            .or_else(|| comm_of(pid))
            .unwrap_or_else(|| "?".into()),
        gone.is_some(),
    )
}
/// Pass each row of `rows` (sorted by pid) with the entry of its pid in `table` (sorted
/// by pid), in one pass over both.
fn join<V>(rows: &mut [ProcessRow], table: &[(u32, V)], mut f: impl FnMut(&mut ProcessRow, &V)) {
    let mut t = table.iter().peekable();
    for p in rows {
        while t.next_if(|(pid, _)| *pid < p.pid).is_some() {}
        if let Some((_, v)) = t.next_if(|(pid, _)| *pid == p.pid) {
            f(p, v);
        }
    }
}

/// Build per-process rows from a window, busiest (most bytes through the CPU) first.
pub fn processes(w: &Window, comm_of: &dyn Fn(u32) -> Option<String>) -> Vec<ProcessRow> {
    // Rows sorted by key are grouped by process (the tgid leads the key), each process's
    // syscalls in key order.
    let keys = w.rows;
    let pids = keys
        .windows(2)
        .filter(|p| p[0].0.tgid != p[1].0.tgid)
        .count()
        + usize::from(!keys.is_empty());
    // Processes with no syscall rows but other counts, each once, in pid order (the
    // syscall rows are in pid order too).
    let mut extra: Vec<u32> = Vec::new();
    let sched: &[(u32, SchedStats)] = if w.include_sched_only { w.sched } else { &[] };
    for table in [
        &mut w.pagecache.iter().map(|(t, _)| *t) as &mut dyn Iterator<Item = u32>,
        &mut w.copy.iter().map(|(t, _)| *t),
        &mut sched.iter().map(|(t, _)| *t),
    ] {
        let mut r = keys.iter().map(|(k, _)| k.tgid).peekable();
        for pid in table {
            while r.next_if(|&q| q < pid).is_some() {}
            if r.peek() != Some(&pid) {
                extra.push(pid);
            }
        }
    }
    extra.sort_unstable();
    extra.dedup();
    let mut rows: Vec<ProcessRow> = Vec::with_capacity(pids + extra.len());
    let mut derived: Vec<SyscallCopies> = Vec::with_capacity(rows.capacity());
    let mut i = 0;
    while i < keys.len() {
        let tgid = keys[i].0.tgid;
        let n = keys[i..].iter().take_while(|(k, _)| k.tgid == tgid).count();
        let mut p = new_row(tgid, w, comm_of);
        let mut c = SyscallCopies::default();
        p.syscalls.reserve_exact(n);
        for (key, v) in &keys[i..i + n] {
            derive(&mut p, &mut c, key, v);
            p.syscalls.push(SyscallRow {
                syscall: Cow::Borrowed(SYSCALLS.get(key.syscall as usize).map_or("?", |s| s.name)),
                fd_kind: fd_label(key),
                calls: v.calls,
                bytes: v.bytes,
                errors: v.errors,
                seconds: v.nanos as f64 / 1e9,
            });
        }
        rows.push(p);
        derived.push(c);
        i += n;
    }
    let with_syscalls = rows.len();
    for pid in extra {
        rows.push(new_row(pid, w, comm_of));
        derived.push(SyscallCopies::default());
    }
    // Two runs each in pid order: those with syscall rows, then the others.
    let (with, without) = rows.split_at_mut(with_syscalls);
    for part in [with, without] {
        join(part, w.copy, |p, v| p.cpu_copy_at_source = *v);
        join(part, w.sched, |p, s| {
            p.context_switches = SchedRow {
                voluntary: s.voluntary,
                involuntary: s.involuntary,
                in_io: s.in_io,
            }
        });
        join(part, w.pagecache, |p, k| {
            p.pagecache = PagecacheRow::from_stats(k)
        });
    }
    for (p, c) in rows.iter_mut().zip(&derived) {
        (p.cpu_copy_bytes, p.cpu_copy_bytes_syscalls) = copies(c, &p.cpu_copy_at_source, w.sources);
    }
    // Sorted by a key computed once, then the rows moved once each (they are large).
    rows.sort_by_cached_key(|p| {
        (
            std::cmp::Reverse(p.cpu_copy_bytes.to_user + p.cpu_copy_bytes.from_user),
            std::cmp::Reverse(p.calls),
            p.pid,
        )
    });
    rows
}

/// The `dropped` entry for program runs the kernel skipped (`recursion_misses`): on
/// preemptible kernels a task preempted inside a program keeps it busy on that CPU, and
/// another task's event there is not counted.
pub const MISSED_RUNS: &str = "program_runs_missed";

/// Drops between two cumulative counts, by name; zero entries are kept so readers see the field.
pub fn dropped(before: &Counts, after: &Counts) -> BTreeMap<String, u64> {
    Counter::ALL
        .iter()
        .map(|c| {
            let i = *c as usize;
            (
                c.name().to_string(),
                after.drops[i].saturating_sub(before.drops[i]),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use copyscope_common::syscalls::index_of;
    use foldhash::HashMapExt as _;

    fn key(tgid: u32, name: &str, fin: FdKind, fout: FdKind) -> SyscallKey {
        SyscallKey {
            tgid,
            syscall: index_of(name).unwrap(),
            fd_in: fin as u8,
            fd_out: fout as u8,
            _pad: 0,
        }
    }

    /// A table as a window holds it: sorted by key.
    fn tbl<K: Ord + Copy, V: Tally>(m: &HashMap<K, V>) -> Vec<(K, V)> {
        sorted(m.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn win<'a>(
        rows: &'a [(SyscallKey, SyscallStats)],
        exited: &'a HashMap<u32, String>,
    ) -> Window<'a> {
        Window {
            rows,
            sched: &[],
            pagecache: &[],
            copy: &[],
            exited,
            sources: CopySources::default(),
            include_sched_only: false,
        }
    }

    fn st(calls: u64, bytes: u64) -> SyscallStats {
        SyscallStats {
            calls,
            bytes,
            errors: 0,
            nanos: calls * 100,
        }
    }

    #[test]
    fn delta_subtracts_and_drops_idle_rows() {
        let k1 = key(1, "read", FdKind::File, FdKind::None);
        let k2 = key(1, "write", FdKind::Socket, FdKind::None);
        let k3 = key(2, "read", FdKind::Pipe, FdKind::None);
        let a = Counts {
            rows: sorted(vec![(k1, st(10, 100)), (k2, st(5, 50))]),
            ..Default::default()
        };
        let b = Counts {
            rows: sorted(vec![(k1, st(15, 160)), (k2, st(5, 50)), (k3, st(1, 1))]),
            ..Default::default()
        };
        let d: HashMap<_, _> = delta(&a, &b).into_iter().collect();
        assert_eq!(
            d[&k1],
            SyscallStats {
                calls: 5,
                bytes: 60,
                errors: 0,
                nanos: 500
            }
        );
        assert!(!d.contains_key(&k2), "unchanged rows are left out");
        assert_eq!(d[&k3].calls, 1);
    }

    #[test]
    fn null_and_zero_devices_are_calls_but_not_copies() {
        // dd if=/dev/zero of=/dev/null: a read that fills memory with zeros and a write
        // that is discarded; neither copies a byte between kernel and user.
        let mut rows = HashMap::new();
        rows.insert(
            key(9, "read", FdKind::Null, FdKind::None),
            st(1000, 1 << 30),
        );
        rows.insert(
            key(9, "write", FdKind::Null, FdKind::None),
            st(1000, 1 << 30),
        );
        rows.insert(key(9, "read", FdKind::Other, FdKind::None), st(1, 32));
        let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| Some("dd".into()));
        let p = &ps[0];
        assert_eq!(p.calls, 2001);
        assert_eq!(
            p.cpu_copy_bytes,
            CpuCopy {
                to_user: 32,
                from_user: 0
            }
        );
        assert!(
            p.syscalls
                .iter()
                .any(|r| r.fd_kind == "null" && r.bytes == 1 << 30)
        );
        // The device numbers: MKDEV(1, 3) null, (1, 5) zero, (1, 7) full; (1, 8) random
        // copies its bytes, and (4, 3) is a tty.
        let dev = |major: u32, minor: u32| FdKind::classify_device(major << 20 | minor);
        assert_eq!(
            [dev(1, 3), dev(1, 5), dev(1, 7), dev(1, 8), dev(4, 3)],
            [
                FdKind::Null,
                FdKind::Null,
                FdKind::Null,
                FdKind::Other,
                FdKind::Other
            ]
        );
        assert!(FdKind::is_char_device(0o020666));
        assert!(!FdKind::is_char_device(0o100644));
    }

    #[test]
    fn derived_figures_follow_flow_and_fd_kind() {
        let mut rows = HashMap::new();
        rows.insert(key(7, "read", FdKind::File, FdKind::None), st(4, 4096));
        rows.insert(key(7, "sendto", FdKind::Socket, FdKind::None), st(2, 1000));
        rows.insert(
            key(7, "pread64", FdKind::FileDirect, FdKind::None),
            st(1, 512),
        );
        rows.insert(
            key(7, "sendfile64", FdKind::File, FdKind::Socket),
            st(1, 9000),
        );
        rows.insert(key(7, "splice", FdKind::Pipe, FdKind::Socket), st(3, 300));
        let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| Some("app".into()));
        assert_eq!(ps.len(), 1);
        let p = &ps[0];
        assert_eq!(p.comm, "app");
        assert_eq!(p.calls, 11);
        assert_eq!(p.mode_switches, 22);
        assert_eq!(
            p.cpu_copy_bytes,
            CpuCopy {
                to_user: 4096,
                from_user: 1000
            }
        );
        assert_eq!(p.direct_io_bytes, 512);
        assert_eq!(p.zero_copy_bytes, 9300);
        let labels: Vec<_> = p
            .syscalls
            .iter()
            .map(|s| (&*s.syscall, &*s.fd_kind))
            .collect();
        assert!(labels.contains(&("sendfile64", "file->socket")));
        assert!(labels.contains(&("splice", "pipe->socket")));
        assert!(labels.contains(&("pread64", "file_direct")));
    }

    #[test]
    fn exited_processes_keep_their_comm_and_are_marked() {
        let mut rows = HashMap::new();
        rows.insert(key(9, "write", FdKind::Pipe, FdKind::None), st(1, 1));
        let exited = HashMap::from_iter([(9, "short".to_string())]);
        let ps = processes(&win(&tbl(&rows), &exited), &|_| None);
        assert_eq!(ps[0].comm, "short");
        assert!(ps[0].exited);
        let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| None);
        assert_eq!(ps[0].comm, "?");
    }

    #[test]
    fn busiest_copier_sorts_first() {
        let mut rows = HashMap::new();
        rows.insert(key(1, "read", FdKind::File, FdKind::None), st(1, 10));
        rows.insert(key(2, "read", FdKind::File, FdKind::None), st(1, 1000));
        let ps = processes(&win(&tbl(&rows), &HashMap::new()), &|_| None);
        assert_eq!(ps.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn copies_measured_at_the_source_replace_only_their_own_kind() {
        let mut rows = HashMap::new();
        rows.insert(key(3, "read", FdKind::File, FdKind::None), st(1, 1000));
        rows.insert(key(3, "recvfrom", FdKind::Socket, FdKind::None), st(1, 500));
        rows.insert(key(3, "read", FdKind::Other, FdKind::None), st(1, 7));
        rows.insert(key(3, "write", FdKind::Pipe, FdKind::None), st(1, 300));
        let copy = HashMap::from_iter([(
            3,
            CopyStats {
                socket_to_user: 499,
                pipe_from_user: 1,
                file_to_user: 123_456,
                ..Default::default()
            },
        )]);
        let none = HashMap::new();
        let rows = tbl(&rows);
        let copy = tbl(&copy);
        let mut w = win(&rows, &none);
        w.copy = &copy;
        w.sources = CopySources {
            socket_recv: true,
            ..Default::default()
        };
        let p = &processes(&w, &|_| None)[0];
        // Only the socket receive is measured at its source; file, pipe and other stay derived.
        assert_eq!(
            p.cpu_copy_bytes,
            CpuCopy {
                to_user: 1000 + 499 + 7,
                from_user: 300
            }
        );
        assert_eq!(
            p.cpu_copy_bytes_syscalls,
            CpuCopy {
                to_user: 1507,
                from_user: 300
            }
        );
        w.sources = CopySources {
            file_read: true,
            pipe_write: true,
            ..Default::default()
        };
        let p = &processes(&w, &|_| None)[0];
        assert_eq!(
            p.cpu_copy_bytes,
            CpuCopy {
                to_user: 123_456 + 500 + 7,
                from_user: 1
            }
        );
    }

    #[test]
    fn page_cache_hits_are_lookups_minus_misses_never_negative() {
        let r = PagecacheRow::from_stats(&PagecacheStats {
            lookups: 100,
            added: 30,
            write_added: 0,
            mmap_faults: 2,
            dirtied: 1,
        });
        assert_eq!((r.hits, r.misses, r.hit_ratio), (70, 30, Some(0.7)));
        let r = PagecacheRow::from_stats(&PagecacheStats {
            lookups: 10,
            added: 30,
            ..Default::default()
        });
        assert_eq!((r.hits, r.hit_ratio), (0, Some(0.0)));
        assert_eq!(
            PagecacheRow::from_stats(&PagecacheStats::default()).hit_ratio,
            None
        );
    }

    #[test]
    fn pages_added_by_writes_are_not_read_misses() {
        // dd of=FILE: 16,384 pages added, all of them by its writes, and nothing read.
        let r = PagecacheRow::from_stats(&PagecacheStats {
            added: 16_384,
            write_added: 16_384,
            dirtied: 16_384,
            ..Default::default()
        });
        assert_eq!(
            (r.misses, r.added_by_writes, r.hit_ratio),
            (0, 16_384, None)
        );
        // A copy of a cached file: every page of the source found, the copy's pages added
        // by writes.
        let r = PagecacheRow::from_stats(&PagecacheStats {
            lookups: 2048,
            added: 2048,
            write_added: 2048,
            dirtied: 2048,
            ..Default::default()
        });
        assert_eq!((r.hits, r.misses, r.hit_ratio), (2048, 0, Some(1.0)));
    }

    #[test]
    fn sched_only_processes_are_listed_only_when_asked() {
        let sched = HashMap::from_iter([(
            5,
            SchedStats {
                voluntary: 1,
                involuntary: 2,
                in_io: 1,
            },
        )]);
        let none = HashMap::new();
        let sched = tbl(&sched);
        let mut w = win(&[], &none);
        w.sched = &sched;
        assert!(processes(&w, &|_| None).is_empty());
        w.include_sched_only = true;
        let p = &processes(&w, &|_| None)[0];
        assert_eq!(
            p.context_switches,
            SchedRow {
                voluntary: 1,
                involuntary: 2,
                in_io: 1
            }
        );
    }

    #[test]
    fn per_pid_deltas_leave_idle_processes_out() {
        let a = HashMap::from_iter([(
            1,
            SchedStats {
                voluntary: 1,
                involuntary: 1,
                in_io: 0,
            },
        )]);
        let b = HashMap::from_iter([
            (
                1,
                SchedStats {
                    voluntary: 1,
                    involuntary: 1,
                    in_io: 0,
                },
            ),
            (
                2,
                SchedStats {
                    voluntary: 4,
                    involuntary: 0,
                    in_io: 4,
                },
            ),
        ]);
        let d = delta_by_pid(&tbl(&a), &tbl(&b));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 2);
        assert_eq!(d[0].1.in_io, 4);
    }
}
