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
    /// The git commit and the rustc version copyscope was built from.
    build: BuildInfo,
    /// Where the `process_*` metrics of copyscope itself come from.
    self_stats: SelfStats,
    /// The kernel's page size.
    page_size: u64,
}

/// What `copyscope_build_info` says besides the version and kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The git commit built (`unknown` outside a git tree).
    pub revision: String,
    /// The rustc version that compiled copyscope.
    pub rustc: String,
}

impl BuildInfo {
    /// This binary's, as agent/build.rs found them.
    pub fn of_this_build() -> BuildInfo {
        BuildInfo {
            revision: env!("COPYSCOPE_REVISION").to_string(),
            rustc: env!("COPYSCOPE_RUSTC_VERSION").to_string(),
        }
    }
}

/// The standard `process_*` figures of a process (what the Prometheus client libraries
/// export for themselves).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

#[derive(Debug, Clone, Copy)]
enum SelfStats {
    /// Read from /proc/self at each rendering.
    Live,
    /// Fixed figures (tests of the exposition).
    Fixed(ProcessStats),
}

/// The kernel's page size, in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Ticks per second of the times in /proc/PID/stat.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

impl ProcessStats {
    /// This process's, from /proc/self and getrlimit; None when /proc cannot be read.
    pub fn of_self() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        let max_fds = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
            && limit.rlim_cur != libc::RLIM_INFINITY)
            .then_some(limit.rlim_cur);
        let mut p = parse_stat(&stat, clock_ticks(), page_size(), btime)?;
        // The directory's own descriptor, open while it was read, is not counted.
        p.open_fds = open_fds.saturating_sub(1);
        p.max_fds = max_fds;
        Some(p)
    }
}

/// The figures of /proc/PID/stat: CPU time (utime + stime), virtual and resident size,
/// start time (ticks after boot, plus the boot time `btime`).
fn parse_stat(stat: &str, ticks: f64, page: u64, btime: u64) -> Option<ProcessStats> {
    // The comm, in parentheses, may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state): field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu = (field(14)? + field(15)?) as f64 / ticks;
    Some(ProcessStats {
        cpu_seconds: cpu,
        start_time_seconds: btime as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: 0,
        max_fds: None,
    })
}

/// The boot time (Unix seconds) from /proc/stat.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
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
            build: BuildInfo::of_this_build(),
            self_stats: SelfStats::Live,
            page_size: page_size(),
        }
    }

    /// The same exporter with fixed build information (for tests of the exposition).
    pub fn with_build_info(self, build: BuildInfo) -> Exporter {
        Exporter { build, ..self }
    }

    /// The same exporter with fixed `process_*` figures instead of /proc/self's, and a
    /// fixed page size (for tests of the exposition).
    pub fn with_process_stats(self, p: ProcessStats, page_size: u64) -> Exporter {
        Exporter {
            self_stats: SelfStats::Fixed(p),
            page_size,
            ..self
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
            &[
                ("version", &self.version),
                ("revision", &self.build.revision),
                ("rustc", &self.build.rustc),
                ("kernel", &self.kernel),
            ],
            1.0,
        );
        f.gauge(PAGE_SIZE, &[], self.page_size as f64);
        let stats = match self.self_stats {
            SelfStats::Live => ProcessStats::of_self(),
            SelfStats::Fixed(p) => Some(p),
        };
        if let Some(p) = stats {
            f.counter(PROCESS_CPU, &[], p.cpu_seconds);
            f.gauge(PROCESS_RESIDENT, &[], p.resident_bytes as f64);
            f.gauge(PROCESS_VIRTUAL, &[], p.virtual_bytes as f64);
            f.gauge(PROCESS_OPEN_FDS, &[], p.open_fds as f64);
            if let Some(max) = p.max_fds {
                f.gauge(PROCESS_MAX_FDS, &[], max as f64);
            }
            f.gauge(PROCESS_START, &[], p.start_time_seconds);
        }
        for p in &self.probes {
            let l = [("family", p.family.as_str()), ("hook", p.hook.as_str())];
            f.gauge(PROBE_ATTACHED, &l, if p.attached { 1.0 } else { 0.0 });
            if let (true, Some(method)) = (p.attached, &p.method) {
                f.gauge(
                    PROBE_METHOD,
                    &[("family", &p.family), ("hook", &p.hook), ("method", method)],
                    1.0,
                );
            }
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
    "Bytes moved without a CPU copy through user memory (sendfile, splice, tee, vmsplice, copy_file_range, io_uring SEND_ZC, SENDMSG_ZC, SPLICE and TEE, and sends with MSG_ZEROCOPY).",
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
    "copyscope's version, the git commit and rustc it was built from, and the kernel it runs on (value 1).",
);
const PAGE_SIZE: Spec = (
    "copyscope_page_size_bytes",
    "The kernel's page size: the page-cache figures count pages of this size.",
);
const PROBE_ATTACHED: Spec = (
    "copyscope_probe_attached",
    "1 if the probe is attached, 0 if no method could attach (the method: copyscope_probe_method_info).",
);
const PROBE_METHOD: Spec = (
    "copyscope_probe_method_info",
    "The method an attached probe uses (value 1).",
);
const PROCESS_CPU: Spec = (
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
);
const PROCESS_RESIDENT: Spec = (
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
);
const PROCESS_VIRTUAL: Spec = (
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
);
const PROCESS_OPEN_FDS: Spec = ("process_open_fds", "Number of open file descriptors.");
const PROCESS_MAX_FDS: Spec = (
    "process_max_fds",
    "Maximum number of open file descriptors.",
);
const PROCESS_START: Spec = (
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
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

#[cfg(test)]
mod tests {
    use prometheus::{
        Encoder as _, TextEncoder,
        proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
    };

    use super::*;

    #[test]
    fn process_figures_are_read_from_stat_whatever_the_comm() {
        // A comm with spaces and parentheses; utime 250, stime 50 ticks; starttime 1000
        // ticks after boot; vsize 100 MiB; rss 300 pages.
        let stat = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 \
1000 104857600 300 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let p = parse_stat(stat, 100.0, 4096, 1_700_000_000).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.start_time_seconds, 1_700_000_010.0);
        assert_eq!(p.virtual_bytes, 100 << 20);
        assert_eq!(p.resident_bytes, 300 * 4096);
        assert!(parse_stat("4242 (truncated", 100.0, 4096, 0).is_none());
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
    }

    #[test]
    fn this_process_figures_agree_with_proc_status_and_getconf() {
        let p = ProcessStats::of_self().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .unwrap()
                * 1024
        };
        // Read moments apart: the same within a few MiB.
        let (rss, vsz) = (vm("VmRSS:"), vm("VmSize:"));
        assert!(
            p.resident_bytes.abs_diff(rss) < 8 << 20,
            "{p:?} VmRSS {rss}"
        );
        assert!(
            p.virtual_bytes.abs_diff(vsz) < 64 << 20,
            "{p:?} VmSize {vsz}"
        );
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 3600.0);
        let getconf = std::process::Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .unwrap();
        let want: u64 = String::from_utf8_lossy(&getconf.stdout)
            .trim()
            .parse()
            .unwrap();
        assert_eq!(page_size(), want);
    }

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
