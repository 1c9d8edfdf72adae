//! Prometheus metrics: cumulative per-workload counters built from each collection
//! window, the advisor's findings, and copyscope's own health. Pure apart from the
//! container lookup passed in; rendered as the Prometheus text format.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, hash_map::Entry},
};

use crate::{
    advisor::{self, Calibration, Thresholds},
    loader::ProgramStat,
    model::{PodRef, ProcessAdvice, ProcessRow, Snapshot},
    workload::{self, OTHER, WorkloadKey},
};

/// How workloads are labelled and bounded.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// At most this many workloads get their own series; the rest are summed under
    /// `comm="other"`.
    pub max_workloads: usize,
    /// Label series with the pid too (high cardinality: opt-in).
    pub pid_labels: bool,
    /// Windows a workload may stay idle before its series are dropped.
    pub idle_windows: u64,
}

/// One workload's counts since copyscope started.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Totals {
    row: ProcessRow,
    /// Estimated CPU seconds zero-copy would have saved, by pattern.
    saved: BTreeMap<String, f64>,
    last_active: u64,
}

impl Totals {
    /// A workload seen first in `row`, with nothing counted yet.
    fn new(row: &ProcessRow) -> Totals {
        Totals {
            row: ProcessRow::empty(row.pid, row.comm.clone(), row.exited),
            saved: BTreeMap::new(),
            last_active: 0,
        }
    }
}

/// The exporter's cumulative figures, saved with a pin so that a restarted agent's
/// counters continue instead of starting from zero.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ExporterSaved {
    workloads: Vec<(WorkloadKey, Totals)>,
    windows: u64,
    folded: u64,
    #[serde(default)]
    evicted_idle: u64,
    drops: BTreeMap<String, u64>,
}

/// A workload's labels borrowed from a window: comm, container id, pid (with pid labels).
type Labels<'a> = (&'a str, String, Option<u32>);

/// Everything `/metrics` shows.
pub struct Exporter {
    opts: Options,
    thresholds: Thresholds,
    calibration: Calibration,
    version: String,
    kernel: String,
    workloads: BTreeMap<WorkloadKey, Totals>,
    windows: u64,
    folded: u64,
    /// Workloads whose series were dropped after --workload-ttl idle.
    evicted_idle: u64,
    advice: Vec<ProcessAdvice>,
    probes: Vec<crate::model::ProbeRow>,
    copy_methods: BTreeMap<String, String>,
    drops: BTreeMap<String, u64>,
    programs: BTreeMap<String, ProgramStat>,
    bpf_stats: bool,
    map_entries: BTreeMap<&'static str, (u64, u64)>,
    /// Kernel memory of each map, in bytes.
    map_memory: BTreeMap<String, u64>,
    /// copyscope's own resident set, in bytes.
    resident_bytes: Option<u64>,
    last_collection_seconds: f64,
    /// Harvests made between two windows because exited processes were filling the maps.
    early_harvests: u64,
    /// Container id -> pod, as the Kubernetes API last said.
    pods: BTreeMap<String, PodRef>,
    /// Whether the API server answered; None without --kube-node.
    kube_up: Option<bool>,
}

impl Exporter {
    pub fn new(
        opts: Options,
        thresholds: Thresholds,
        calibration: Calibration,
        kernel: &str,
        bpf_stats: bool,
    ) -> Exporter {
        Exporter {
            opts,
            thresholds,
            calibration,
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: kernel.to_string(),
            workloads: BTreeMap::new(),
            windows: 0,
            folded: 0,
            evicted_idle: 0,
            advice: Vec::new(),
            probes: Vec::new(),
            copy_methods: BTreeMap::new(),
            drops: BTreeMap::new(),
            programs: BTreeMap::new(),
            bpf_stats,
            map_entries: BTreeMap::new(),
            map_memory: BTreeMap::new(),
            resident_bytes: None,
            last_collection_seconds: 0.0,
            early_harvests: 0,
            pods: BTreeMap::new(),
            kube_up: None,
        }
    }

    /// Fold one collection window in. `container_of` gives a process's container id;
    /// `file_sizes` gives the sizes of the files a pid has open (for the O_DIRECT advice).
    /// The window's findings per workload are kept for `copyscope_advice_*`.
    pub fn observe(
        &mut self,
        s: &Snapshot,
        container_of: &mut dyn FnMut(&ProcessRow) -> Option<String>,
        file_sizes: &mut dyn FnMut(u32) -> Vec<u64>,
    ) {
        self.windows += 1;
        self.probes = s.probes.clone();
        self.copy_methods = s.cpu_copy_method.clone();
        for (k, v) in &s.dropped {
            *self.drops.entry(k.clone()).or_default() += v;
        }
        // Grouped by borrowed labels: a workload of one process (the common case) is that
        // process's row itself, copied only when a second process joins it.
        let mut index: foldhash::HashMap<Labels<'_>, usize> =
            foldhash::HashMapExt::with_capacity(s.processes.len());
        let mut groups: Vec<(Labels<'_>, Cow<'_, ProcessRow>)> =
            Vec::with_capacity(s.processes.len());
        for p in &s.processes {
            let key = (
                p.comm.as_str(),
                container_of(p).unwrap_or_default(),
                self.opts.pid_labels.then_some(p.pid),
            );
            match index.entry(key) {
                Entry::Occupied(e) => workload::merge(groups[*e.get()].1.to_mut(), p),
                Entry::Vacant(e) => {
                    groups.push((e.key().clone(), Cow::Borrowed(p)));
                    e.insert(groups.len() - 1);
                }
            }
        }
        drop(index);
        // Busiest first: they keep or win the workload slots (labels break ties). Sorted
        // by a key laid out once, so that a comparison reads no row.
        let mut order: Vec<((u64, u64), &Labels<'_>, usize)> = groups
            .iter()
            .enumerate()
            .map(|(i, (l, r))| (workload::activity(r), l, i))
            .collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut advice = Vec::new();
        let mut tracked = self.tracked();
        // The workload the others are summed under, taken out while the window is folded
        // in (one lookup, not one per process beyond the cap).
        let other_key = WorkloadKey::other(self.opts.pid_labels);
        let mut other = self.workloads.remove(&other_key);
        let is_other = |(comm, container_id, pid): &Labels<'_>| {
            *comm == other_key.comm
                && *container_id == other_key.container_id
                && *pid == other_key.pid
        };
        // Which groups have series already, by borrowed labels: a group beyond the cap
        // is folded into the others without a key of its own being built.
        let known: foldhash::HashSet<(&str, &str, Option<u32>)> = self
            .workloads
            .keys()
            .map(|k| (k.comm.as_str(), k.container_id.as_str(), k.pid))
            .collect();
        // The others' workload exists once a group is folded into it.
        let mut other_exists = other.is_some();
        let owned: Vec<bool> = order
            .iter()
            .map(|(_, labels, _)| {
                let known = if is_other(labels) {
                    other_exists
                } else {
                    known.contains(&(labels.0, labels.1.as_str(), labels.2))
                };
                let own = known || tracked < self.opts.max_workloads;
                if own && !known && labels.0 != OTHER {
                    tracked += 1;
                }
                other_exists |= !own || is_other(labels);
                own
            })
            .collect();
        drop(known);
        for ((_, _, i), own) in order.into_iter().zip(owned) {
            let row: &ProcessRow = &groups[i].1;
            if !own {
                self.folded += 1;
                let t = other.get_or_insert_with(|| Totals::new(row));
                workload::merge(&mut t.row, row);
                t.last_active = self.windows;
                continue;
            }
            let (comm, container_id, pid) = &groups[i].0;
            let key = WorkloadKey {
                comm: comm.to_string(),
                container_id: container_id.clone(),
                pid: *pid,
            };
            let sizes = if row.pagecache.misses > 0 {
                file_sizes(row.pid)
            } else {
                Vec::new()
            };
            let findings = advisor::advise(
                row,
                s.duration_seconds,
                &sizes,
                &self.calibration,
                &self.thresholds,
            );
            let t = if key == other_key {
                other.get_or_insert_with(|| Totals::new(row))
            } else {
                self.workloads
                    .entry(key.clone())
                    .or_insert_with(|| Totals::new(row))
            };
            workload::merge(&mut t.row, row);
            t.last_active = self.windows;
            // Findings under the minimum saving are never exported.
            for f in findings.into_iter().filter(|f| !f.below_threshold) {
                *t.saved.entry(f.pattern.clone()).or_default() +=
                    f.estimated_cpu_seconds_saved_per_second * s.duration_seconds;
                advice.push(ProcessAdvice {
                    pid: key.pid,
                    comm: key.comm.clone(),
                    container_id: Some(key.container_id.clone()).filter(|c| !c.is_empty()),
                    finding: f,
                });
            }
        }
        if let Some(t) = other {
            self.workloads.insert(other_key, t);
        }
        let now = self.windows;
        let idle = self.opts.idle_windows;
        let before = self.workloads.len();
        self.workloads
            .retain(|_, t| now.saturating_sub(t.last_active) <= idle);
        self.evicted_idle += (before - self.workloads.len()) as u64;
        advice.sort_by(|a, b| {
            b.finding
                .estimated_cpu_seconds_saved_per_second
                .total_cmp(&a.finding.estimated_cpu_seconds_saved_per_second)
        });
        self.advice = advice;
    }

    /// What [`Exporter::restore`] needs.
    pub fn save(&self) -> ExporterSaved {
        ExporterSaved {
            workloads: self
                .workloads
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect(),
            windows: self.windows,
            folded: self.folded,
            evicted_idle: self.evicted_idle,
            drops: self.drops.clone(),
        }
    }

    /// Continue an earlier agent's counters.
    pub fn restore(&mut self, s: ExporterSaved) {
        self.workloads = s.workloads.into_iter().collect();
        self.windows = s.windows;
        self.folded = s.folded;
        self.evicted_idle = s.evicted_idle;
        self.drops = s.drops;
    }

    fn tracked(&self) -> usize {
        self.workloads.keys().filter(|k| k.comm != OTHER).count()
    }

    /// Cumulative run counts and times of the programs (the kernel's, since load).
    pub fn set_programs(&mut self, stats: &[ProgramStat]) {
        self.programs = stats.iter().map(|p| (p.name.clone(), p.clone())).collect();
    }

    /// Entries in use and capacity of the kernel maps, as of the last collection.
    pub fn set_map_entries(&mut self, entries: BTreeMap<&'static str, (u64, u64)>) {
        self.map_entries = entries;
    }

    /// Kernel memory of each map (bytes, by map name) and copyscope's resident set.
    pub fn set_memory(&mut self, maps: BTreeMap<String, u64>, resident_bytes: Option<u64>) {
        self.map_memory = maps;
        self.resident_bytes = resident_bytes;
    }

    pub fn set_collection_seconds(&mut self, s: f64) {
        self.last_collection_seconds = s;
    }

    /// Harvests made so far between two windows (exits filling the kernel maps).
    pub fn set_early_harvests(&mut self, n: u64) {
        self.early_harvests = n;
    }

    /// The pods this node runs (container id -> pod), and whether the API server answered.
    pub fn set_pods(&mut self, pods: BTreeMap<String, PodRef>, up: bool) {
        self.pods = pods;
        self.kube_up = Some(up);
    }

    /// One `copyscope_container_info` per container id: those the workloads and the pods
    /// name, and "" for the processes outside containers, so that joins keep those too.
    fn container_info(&self) -> BTreeMap<String, PodRef> {
        let mut info: BTreeMap<String, PodRef> = self
            .workloads
            .keys()
            .map(|k| (k.container_id.clone(), PodRef::default()))
            .collect();
        info.insert(String::new(), PodRef::default());
        info.extend(self.pods.iter().map(|(id, m)| (id.clone(), m.clone())));
        info
    }

    /// The Prometheus text exposition (version 0.0.4), written directly: byte for byte
    /// what the `prometheus` crate's text encoder writes for the same families.
    pub fn render(&self) -> String {
        self.families().finish()
    }

    fn families(&self) -> Families {
        let mut f = Families::default();
        for (k, t) in &self.workloads {
            let r = &t.row;
            let pid = k.pid.map(|p| p.to_string());
            let mut base: Vec<(&str, &str)> =
                vec![("comm", &k.comm), ("container_id", &k.container_id)];
            if let Some(pid) = &pid {
                base.push(("pid", pid));
            }
            let with = |extra: &[(&str, &str)], f: &mut Families, spec, v: f64| {
                f.add(spec, "counter", &base, extra, v);
            };
            for s in &r.syscalls {
                let l = [("syscall", &*s.syscall), ("fd_kind", &*s.fd_kind)];
                with(&l, &mut f, SYSCALLS, s.calls as f64);
                with(&l, &mut f, SYSCALL_BYTES, s.bytes as f64);
                with(&l, &mut f, SYSCALL_ERRORS, s.errors as f64);
                with(&l, &mut f, SYSCALL_SECONDS, s.seconds);
            }
            with(&[], &mut f, MODE_SWITCHES, r.mode_switches as f64);
            let cs = &r.context_switches;
            for (kind, v) in [("voluntary", cs.voluntary), ("involuntary", cs.involuntary)] {
                with(&[("kind", kind)], &mut f, CONTEXT_SWITCHES, v as f64);
            }
            with(&[], &mut f, CONTEXT_SWITCHES_IN_IO, cs.in_io as f64);
            for (dir, v) in [
                ("to_user", r.cpu_copy_bytes.to_user),
                ("from_user", r.cpu_copy_bytes.from_user),
            ] {
                with(&[("direction", dir)], &mut f, CPU_COPY_BYTES, v as f64);
            }
            with(&[], &mut f, ZERO_COPY_BYTES, r.zero_copy_bytes as f64);
            with(&[], &mut f, DIRECT_IO_BYTES, r.direct_io_bytes as f64);
            let pc = &r.pagecache;
            with(&[], &mut f, PAGECACHE_LOOKUPS, pc.lookups as f64);
            with(&[], &mut f, PAGECACHE_HITS, pc.hits as f64);
            with(&[], &mut f, PAGECACHE_MISSES, pc.misses as f64);
            with(
                &[],
                &mut f,
                PAGECACHE_WRITE_ADDED,
                pc.added_by_writes as f64,
            );
            with(&[], &mut f, PAGECACHE_DIRTIED, pc.dirtied as f64);
            with(&[], &mut f, PAGECACHE_MMAP, pc.mmap_faults as f64);
            for (pattern, secs) in &t.saved {
                with(
                    &[("pattern", pattern.as_str())],
                    &mut f,
                    ADVICE_SAVED,
                    *secs,
                );
            }
        }
        for a in &self.advice {
            let container = a.container_id.clone().unwrap_or_default();
            let pid = a.pid.map(|p| p.to_string());
            let mut l: Vec<(&'static str, &str)> =
                vec![("comm", &a.comm), ("container_id", &container)];
            if let Some(pid) = &pid {
                l.push(("pid", pid));
            }
            l.push(("pattern", &a.finding.pattern));
            // The rule's stable id, not the sentence: its figures would make a new
            // series every window.
            l.push((
                "recommendation",
                crate::advisor::recommendation_id(&a.finding.pattern),
            ));
            f.gauge(ADVICE_INFO, &l, 1.0);
            l.truncate(l.len() - 1);
            f.gauge(
                ADVICE_SAVING,
                &l,
                a.finding.estimated_cpu_seconds_saved_per_second,
            );
        }
        // copyscope itself.
        f.gauge(
            BUILD_INFO,
            &[("version", &self.version), ("kernel", &self.kernel)],
            1.0,
        );
        for p in &self.probes {
            f.gauge(
                PROBE_ATTACHED,
                &[
                    ("family", &p.family),
                    ("hook", &p.hook),
                    ("method", p.method.as_deref().unwrap_or("none")),
                ],
                if p.attached { 1.0 } else { 0.0 },
            );
        }
        for (figure, method) in &self.copy_methods {
            f.gauge(COPY_METHOD, &[("figure", figure), ("method", method)], 1.0);
        }
        for (reason, v) in &self.drops {
            f.counter(KERNEL_DROPS, &[("reason", reason)], *v as f64);
        }
        for (name, p) in &self.programs {
            let l = [("program", name.as_str())];
            f.counter(PROGRAM_MISSED, &l, p.missed_runs as f64);
            if self.bpf_stats {
                f.counter(PROGRAM_RUNS, &l, p.run_count as f64);
                f.counter(PROGRAM_SECONDS, &l, p.run_time_ns as f64 / 1e9);
            }
        }
        for (map, (used, max)) in &self.map_entries {
            f.gauge(MAP_ENTRIES, &[("map", map)], *used as f64);
            f.gauge(MAP_MAX_ENTRIES, &[("map", map)], *max as f64);
        }
        for (map, bytes) in &self.map_memory {
            f.gauge(MAP_MEMORY, &[("map", map)], *bytes as f64);
        }
        if let Some(b) = self.resident_bytes {
            f.gauge(RESIDENT, &[], b as f64);
        }
        for (id, m) in self.container_info() {
            f.gauge(
                CONTAINER_INFO,
                &[
                    ("container_id", &id),
                    ("pod", &m.pod),
                    ("namespace", &m.namespace),
                    ("container", &m.container),
                ],
                1.0,
            );
        }
        if let Some(up) = self.kube_up {
            f.gauge(KUBE_UP, &[], if up { 1.0 } else { 0.0 });
        }
        f.counter(COLLECTIONS, &[], self.windows as f64);
        f.gauge(COLLECTION_SECONDS, &[], self.last_collection_seconds);
        f.counter(EARLY_HARVESTS, &[], self.early_harvests as f64);
        f.gauge(WORKLOADS, &[], self.tracked() as f64);
        f.gauge(MAX_WORKLOADS, &[], self.opts.max_workloads as f64);
        f.counter(FOLDED, &[], self.folded as f64);
        f.counter(EVICTED, &[("reason", "idle")], self.evicted_idle as f64);
        f.gauge(CAL_MEMCPY, &[], self.calibration.memcpy_bytes_per_second);
        f.gauge(CAL_SYSCALL, &[], self.calibration.syscall_seconds);
        f
    }
}

type Spec = (&'static str, &'static str);

const SYSCALLS: Spec = (
    "copyscope_syscalls_total",
    "System calls made, by syscall and the kind of file descriptor (IN->OUT for two-fd calls).",
);
const SYSCALL_BYTES: Spec = (
    "copyscope_syscall_bytes_total",
    "Bytes the system calls returned as transferred.",
);
const SYSCALL_ERRORS: Spec = (
    "copyscope_syscall_errors_total",
    "System calls that returned an error.",
);
const SYSCALL_SECONDS: Spec = (
    "copyscope_syscall_seconds_total",
    "Wall-clock seconds spent inside the system calls, blocked time included.",
);
const MODE_SWITCHES: Spec = (
    "copyscope_mode_switches_total",
    "User/kernel mode switches of the counted system calls (two per call).",
);
const CONTEXT_SWITCHES: Spec = (
    "copyscope_context_switches_total",
    "Scheduler context switches away from the workload: voluntary (blocked) or involuntary (preempted).",
);
const CONTEXT_SWITCHES_IN_IO: Spec = (
    "copyscope_context_switches_in_io_total",
    "Context switches that happened inside a counted I/O system call (also counted by kind).",
);
const CPU_COPY_BYTES: Spec = (
    "copyscope_cpu_copy_bytes_total",
    "Bytes the CPU copied between kernel and user memory, by direction (see copyscope_cpu_copy_method_info).",
);
const ZERO_COPY_BYTES: Spec = (
    "copyscope_zero_copy_bytes_total",
    "Bytes moved without a CPU copy through user memory (sendfile, splice, tee, vmsplice, copy_file_range).",
);
const DIRECT_IO_BYTES: Spec = (
    "copyscope_direct_io_bytes_total",
    "Bytes read or written with O_DIRECT (DMA to user memory, no page-cache copy).",
);
const PAGECACHE_LOOKUPS: Spec = (
    "copyscope_page_cache_lookups_total",
    "Pages looked up in the page cache by buffered reads.",
);
const PAGECACHE_HITS: Spec = (
    "copyscope_page_cache_hits_total",
    "Pages found in the page cache (lookups - misses, never negative, per collection window).",
);
const PAGECACHE_MISSES: Spec = (
    "copyscope_page_cache_misses_total",
    "Read misses: pages a read, its readahead or a fault brought into the page cache.",
);
const PAGECACHE_WRITE_ADDED: Spec = (
    "copyscope_page_cache_write_added_pages_total",
    "Pages added to the page cache by writes (not read misses).",
);
const PAGECACHE_DIRTIED: Spec = (
    "copyscope_page_cache_dirtied_pages_total",
    "Page-cache pages dirtied by writes.",
);
const PAGECACHE_MMAP: Spec = (
    "copyscope_page_cache_mmap_fault_pages_total",
    "Pages of file mappings faulted in.",
);
const ADVICE_SAVED: Spec = (
    "copyscope_advice_estimated_cpu_saved_seconds_total",
    "CPU seconds the advisor estimates zero-copy would have saved, by pattern.",
);
const ADVICE_INFO: Spec = (
    "copyscope_advice_info",
    "A finding of the zero-copy advisor in the last collection window (value 1).",
);
const ADVICE_SAVING: Spec = (
    "copyscope_advice_estimated_cpu_saved_ratio",
    "CPU seconds per second the finding estimates zero-copy would save, in the last window.",
);
const CONTAINER_INFO: Spec = (
    "copyscope_container_info",
    "The pod, namespace and container of a container id (value 1; names need --kube-node). container_id=\"\" stands for the processes outside containers.",
);
const KUBE_UP: Spec = (
    "copyscope_kubernetes_api_up",
    "Whether the Kubernetes API answered the last request for this node's pods (only with --kube-node).",
);
const BUILD_INFO: Spec = (
    "copyscope_build_info",
    "copyscope's version and the kernel it runs on (value 1).",
);
const PROBE_ATTACHED: Spec = (
    "copyscope_probe_attached",
    "1 if the probe is attached with this method, 0 if no method could attach.",
);
const COPY_METHOD: Spec = (
    "copyscope_cpu_copy_method_info",
    "How each CPU-copy figure is measured: a copies-family method, or derived from syscalls (value 1).",
);
const KERNEL_DROPS: Spec = (
    "copyscope_kernel_drops_total",
    "Events the kernel side could not count, by reason (map full, in-flight lost, program runs the kernel skipped).",
);
const PROGRAM_MISSED: Spec = (
    "copyscope_bpf_program_missed_runs_total",
    "Runs the kernel skipped because the program was already running on that CPU (recursion_misses).",
);
const PROGRAM_RUNS: Spec = (
    "copyscope_bpf_program_runs_total",
    "Runs of each eBPF program (kernel BPF stats, with --bpf-stats).",
);
const PROGRAM_SECONDS: Spec = (
    "copyscope_bpf_program_run_seconds_total",
    "CPU seconds spent in each eBPF program (kernel BPF stats, with --bpf-stats).",
);
const MAP_ENTRIES: Spec = (
    "copyscope_map_entries",
    "Entries in use in each kernel map at the last collection.",
);
const MAP_MAX_ENTRIES: Spec = ("copyscope_map_max_entries", "Capacity of each kernel map.");
const MAP_MEMORY: Spec = (
    "copyscope_map_memory_bytes",
    "Kernel memory each map holds (memlock in the map's fdinfo; memory in use since Linux 6.5).",
);
const RESIDENT: Spec = (
    "copyscope_agent_resident_memory_bytes",
    "copyscope's own resident memory (VmRSS), at the last collection.",
);
const COLLECTIONS: Spec = (
    "copyscope_collections_total",
    "Collection windows completed.",
);
const EARLY_HARVESTS: Spec = (
    "copyscope_early_harvests_total",
    "Harvests made between two windows because exited processes were filling the kernel maps.",
);
const COLLECTION_SECONDS: Spec = (
    "copyscope_collection_duration_seconds",
    "Seconds the last collection took (reading the maps and updating the metrics).",
);
const WORKLOADS: Spec = ("copyscope_workloads", "Workloads with their own series.");
const MAX_WORKLOADS: Spec = (
    "copyscope_max_workloads",
    "The cardinality cap: workloads beyond it are summed under comm=\"other\".",
);
const FOLDED: Spec = (
    "copyscope_workloads_folded_total",
    "Workload windows summed under comm=\"other\" because the cap was reached.",
);
const EVICTED: Spec = (
    "copyscope_workloads_evicted_total",
    "Workloads whose series were dropped, by reason: idle (no activity for --workload-ttl). Windows summed under comm=\"other\" by the cap are copyscope_workloads_folded_total.",
);
const CAL_MEMCPY: Spec = (
    "copyscope_calibration_memcpy_bytes_per_second",
    "This host's memory-copy bandwidth, measured at start-up (the advisor's basis).",
);
const CAL_SYSCALL: Spec = (
    "copyscope_calibration_syscall_seconds",
    "Seconds of one system call on this host, measured at start-up (two mode switches).",
);

/// The families of an exposition, each with its samples already written, in the order
/// they were added; written out by name.
#[derive(Default)]
struct Families {
    by_name: BTreeMap<&'static str, (Spec, &'static str, String)>,
}

impl Families {
    /// One sample, labelled with `labels` then `extra`.
    fn add(
        &mut self,
        spec: Spec,
        kind: &'static str,
        labels: &[(&str, &str)],
        extra: &[(&str, &str)],
        v: f64,
    ) {
        let out = &mut self
            .by_name
            .entry(spec.0)
            .or_insert_with(|| (spec, kind, String::new()))
            .2;
        out.push_str(spec.0);
        let mut sep = '{';
        for (k, v) in labels.iter().chain(extra) {
            out.push(sep);
            out.push_str(k);
            out.push_str("=\"");
            escape(out, v, true);
            out.push('"');
            sep = ',';
        }
        if sep == ',' {
            out.push('}');
        }
        out.push(' ');
        write_value(out, v);
        out.push('\n');
    }

    fn counter(&mut self, spec: Spec, labels: &[(&str, &str)], v: f64) {
        self.add(spec, "counter", labels, &[], v)
    }

    fn gauge(&mut self, spec: Spec, labels: &[(&str, &str)], v: f64) {
        self.add(spec, "gauge", labels, &[], v)
    }

    fn finish(self) -> String {
        let len = self.by_name.values().map(|(_, _, b)| b.len() + 256).sum();
        let mut out = String::with_capacity(len);
        for ((name, help), kind, body) in self.by_name.into_values() {
            if !help.is_empty() {
                out.push_str("# HELP ");
                out.push_str(name);
                out.push(' ');
                escape(&mut out, help, false);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            out.push_str(&body);
        }
        out
    }
}

/// The text format's escapes: `\\` and a new line always, `"` in label values.
fn escape(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A sample value as Rust's `Display` writes an f64 (what the text encoder uses), whole
/// numbers the fast way.
fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write as _;
    // Below 2^53 every whole f64 is exact in a u64 and displays as its digits.
    if v.fract() == 0.0 && v.is_sign_positive() && v < 9_007_199_254_740_992.0 {
        let mut buf = [0u8; 20];
        let mut n = v as u64;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
    } else {
        let _ = write!(out, "{v}");
    }
}

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
        CONTAINER_INFO,
        KUBE_UP,
        PROBE_ATTACHED,
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

#[cfg(test)]
mod tests {
    use prometheus::{
        Encoder as _, TextEncoder,
        proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
    };

    use super::*;

    #[test]
    fn exposition_is_byte_for_byte_what_the_prometheus_text_encoder_writes() {
        let values = [
            0.0,
            1.0,
            42.0,
            0.1,
            1e-7,
            123_456_789.125,
            1e21,
            9_007_199_254_740_992.0,
            9_007_199_254_740_994.0,
            -3.5,
            -0.0,
            -7.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let texts = ["plain", "a\"b", "back\\slash", "new\nline", "ünïcode", ""];
        let specs: [(Spec, MetricType); 3] = [
            (
                ("b_total", "Help with a \\ and a\nnew line."),
                MetricType::COUNTER,
            ),
            (("a_gauge", ""), MetricType::GAUGE),
            (("c_gauge", "Plain \"help\"."), MetricType::GAUGE),
        ];
        let mut ours = Families::default();
        let mut theirs: BTreeMap<&str, MetricFamily> = BTreeMap::new();
        for (i, v) in values.iter().enumerate() {
            let (spec, t) = specs[i % specs.len()];
            let text = texts[i % texts.len()];
            let labels: Vec<(&str, &str)> = match i % 3 {
                0 => vec![],
                1 => vec![("l", text)],
                _ => vec![("l", text), ("m", "x")],
            };
            match t {
                MetricType::COUNTER => ours.counter(spec, &labels, *v),
                _ => ours.gauge(spec, &labels, *v),
            }
            let mut m = Metric::default();
            m.set_label(
                labels
                    .iter()
                    .map(|(k, v)| {
                        let mut p = LabelPair::default();
                        p.set_name(k.to_string());
                        p.set_value(v.to_string());
                        p
                    })
                    .collect(),
            );
            if t == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(*v);
                m.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(*v);
                m.set_gauge(g);
            }
            let fam = theirs.entry(spec.0).or_insert_with(|| {
                let mut f = MetricFamily::default();
                f.set_name(spec.0.to_string());
                f.set_help(spec.1.to_string());
                f.set_field_type(t);
                f
            });
            fam.mut_metric().push(m);
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&theirs.into_values().collect::<Vec<_>>(), &mut buf)
            .unwrap();
        assert_eq!(ours.finish(), String::from_utf8(buf).unwrap());
    }
}
