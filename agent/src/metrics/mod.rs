//! Prometheus metrics: cumulative per-workload counters built from each collection
//! window, the advisor's findings, and copyscope's own health. Pure apart from the
//! container lookup passed in; rendered as the Prometheus text format.

use std::collections::BTreeMap;

use crate::{
    advisor::{Calibration, Thresholds},
    loader::ProgramStat,
    model::{PodRef, ProcessAdvice, ProcessRow},
    workload::{OTHER, WorkloadKey},
};

mod exposition;
mod observe;
mod process;
mod series;
mod specs;
#[cfg(test)]
mod tests;

pub use process::{ProcessStats, page_size};
pub use specs::names;

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

#[derive(Debug, Clone, Copy)]
enum SelfStats {
    /// Read from /proc/self at each rendering.
    Live,
    /// Fixed figures (tests of the exposition).
    Fixed(ProcessStats),
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
}
