//! One collection window after another: harvest the maps, build the window's snapshot
//! with container ids and advice, free what exited. `copyscope run` and `copyscope top`
//! sample with it; `snapshot` builds its one window with the same functions.

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use anyhow::Result;
use copyscope_common::{limits, maps};

use crate::{
    advisor::{self, Calibration, Thresholds},
    collect::syscalls::{Collector, proc_comm},
    loader::{self, ProgramStat},
    model::{self, Counts, ProbeRow, Snapshot},
    pods::{PodRef, Pods},
    workload,
};

/// Samples windows from loaded programs: each [`Sampler::sample`] covers the time since
/// the previous one (measured, not nominal).
pub struct Sampler {
    collector: Collector,
    prev: Counts,
    prev_stats: Vec<ProgramStat>,
    started: Instant,
    /// Container ids of the pids seen, looked up once per pid while it lives.
    containers: HashMap<u32, Option<String>>,
    calibration: Calibration,
    thresholds: Thresholds,
    /// Pod names for container ids, when the Kubernetes API is watched.
    pods: Option<Pods>,
}

/// One window and the state of the programs and maps at its end.
pub struct Sample {
    pub snapshot: Snapshot,
    /// Cumulative run counts of every program.
    pub programs: Vec<ProgramStat>,
    /// Entries in use and capacity of the per-process kernel maps.
    pub map_entries: BTreeMap<&'static str, (u64, u64)>,
    /// With a watch of the node's pods: container id -> pod, as the window used them, and
    /// whether the API server answered.
    pub pods: Option<(BTreeMap<String, PodRef>, bool)>,
}

impl Sampler {
    /// Start counting now; the first sample covers the time from here.
    pub fn new(
        loaded: &mut loader::Loaded,
        calibration: Calibration,
        thresholds: Thresholds,
    ) -> Result<Sampler> {
        let mut collector = Collector::new(loaded)?;
        let prev = collector.harvest()?;
        Ok(Sampler {
            collector,
            prev,
            prev_stats: loader::program_stats(&loaded.ebpf),
            started: Instant::now(),
            containers: HashMap::new(),
            calibration,
            thresholds,
            pods: None,
        })
    }

    /// Name the containers' pods in the snapshots, from this watch of the node's pods.
    pub fn set_pods(&mut self, pods: Pods) {
        self.pods = Some(pods);
    }

    /// The window since the previous sample.
    pub fn sample(&mut self, loaded: &loader::Loaded) -> Result<Sample> {
        let mut after = self.collector.harvest()?;
        let elapsed = self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
        let programs = loader::program_stats(&loaded.ebpf);
        let missed: u64 = loader::program_stats_since(&self.prev_stats, programs.clone())
            .iter()
            .map(|s| s.missed_runs)
            .sum();
        self.prev_stats = programs.clone();
        let mut snapshot = window_snapshot(
            loaded,
            &self.prev,
            &after,
            elapsed,
            &|_| true,
            false,
            missed,
        );
        snapshot.calibration = Some(self.calibration);
        for p in &mut snapshot.processes {
            p.container_id = self
                .containers
                .entry(p.pid)
                .or_insert_with(|| {
                    std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid))
                        .ok()
                        .and_then(|c| workload::container_id(&c))
                })
                .clone();
        }
        let pods = self.pods.as_ref().map(|pods| {
            // In a pod the host name is the pod's: the node's name says more.
            snapshot.host = pods.node().to_string();
            let known = pods.containers();
            for p in &mut snapshot.processes {
                p.pod = p.container_id.as_ref().and_then(|c| known.get(c).cloned());
            }
            (known, pods.up())
        });
        snapshot.advice = advice(&snapshot, &self.calibration, &self.thresholds);
        let map_entries = map_entries(&after);
        let gone = self.collector.forget_retired();
        for pid in &gone {
            self.containers.remove(pid);
        }
        after.forget(&gone);
        self.prev = after;
        if self.containers.len() > 65_536 {
            self.containers.clear();
        }
        Ok(Sample {
            snapshot,
            programs,
            map_entries,
            pods,
        })
    }
}

/// The snapshot of one window between two harvests: per-process rows of the processes
/// `keep` accepts (copyscope's own harvesting is never part of it), probes, drops.
pub fn window_snapshot(
    loaded: &loader::Loaded,
    before: &model::Counts,
    after: &model::Counts,
    elapsed: f64,
    keep: &dyn Fn(u32) -> bool,
    include_sched_only: bool,
    missed_runs: u64,
) -> Snapshot {
    let mut rows = model::delta(before, after);
    let mut sched = model::delta_by_pid(&before.sched, &after.sched);
    let mut cache = model::delta_by_pid(&before.cache, &after.cache);
    let mut copy = model::delta_by_pid(&before.copy, &after.copy);
    let own = std::process::id();
    rows.retain(|k, _| k.tgid != own && keep(k.tgid));
    sched.retain(|t, _| *t != own && keep(*t));
    cache.retain(|t, _| *t != own && keep(*t));
    copy.retain(|t, _| *t != own && keep(*t));
    let (sources, cpu_copy_method) = copy_sources(&loaded.probes);
    let window = model::Window {
        rows: &rows,
        sched: &sched,
        cache: &cache,
        copy: &copy,
        exited: &after.exited,
        sources,
        include_sched_only,
    };
    Snapshot {
        duration_seconds: elapsed,
        end_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        host: hostname(),
        kernel: loaded.kernel.clone(),
        probes: loaded
            .probes
            .iter()
            .map(|p| ProbeRow {
                name: p.name.clone(),
                family: p.family.to_string(),
                hook: p.hook.to_string(),
                method: p.method.map(str::to_string),
                attached: p.attached,
            })
            .collect(),
        processes: model::processes(&window, &proc_comm),
        cpu_copy_method,
        dropped: {
            let mut d = model::dropped(before, after);
            d.insert(model::MISSED_RUNS.to_string(), missed_runs);
            d
        },
        bpf_stats: Vec::new(),
        command: None,
        calibration: None,
        advice: Vec::new(),
    }
}

/// The advisor's findings for every process of a snapshot, biggest saving first.
pub fn advice(
    s: &Snapshot,
    cal: &advisor::Calibration,
    th: &advisor::Thresholds,
) -> Vec<model::ProcessAdvice> {
    let mut out: Vec<_> = s
        .processes
        .iter()
        .flat_map(|p| {
            let sizes = if p.page_cache.misses > 0 && !p.exited {
                workload::open_file_sizes(p.pid)
            } else {
                Vec::new()
            };
            advisor::advise(p, s.duration_seconds, &sizes, cal, th)
                .into_iter()
                .map(|f| model::ProcessAdvice {
                    pid: Some(p.pid),
                    comm: p.comm.clone(),
                    container_id: p.container_id.clone(),
                    finding: f,
                })
        })
        .collect();
    out.sort_by(|a, b| {
        b.finding
            .estimated_cpu_seconds_saved_per_second
            .total_cmp(&a.finding.estimated_cpu_seconds_saved_per_second)
    });
    out
}

/// Which copy figures the attached copies-family probes measure, and how each is measured.
pub fn copy_sources(
    probes: &[loader::ProbeStatus],
) -> (
    model::CopySources,
    std::collections::BTreeMap<String, String>,
) {
    let method = |hook: &str| {
        probes
            .iter()
            .find(|p| p.family == "copies" && p.hook == hook && p.attached)
            .and_then(|p| p.method)
    };
    let mut methods = std::collections::BTreeMap::new();
    for hook in [
        "file_read",
        "socket_recv",
        "socket_send",
        "pipe_read",
        "pipe_write",
    ] {
        methods.insert(
            hook.to_string(),
            method(hook).unwrap_or("syscalls").to_string(),
        );
    }
    let on = |hook: &str| method(hook).is_some();
    let sources = model::CopySources {
        file_read: on("file_read"),
        socket_recv: on("socket_recv"),
        socket_send: on("socket_send"),
        pipe_read: on("pipe_read"),
        pipe_write: on("pipe_write"),
    };
    (sources, methods)
}
/// Entries in use (as of this harvest) and capacity of the per-process kernel maps.
fn map_entries(c: &Counts) -> BTreeMap<&'static str, (u64, u64)> {
    BTreeMap::from([
        (
            maps::SYSCALL_STATS,
            (c.rows.len() as u64, limits::SYSCALL_STATS_ENTRIES as u64),
        ),
        (
            maps::SCHED_STATS,
            (c.sched.len() as u64, limits::PROC_STATS_ENTRIES as u64),
        ),
        (
            maps::CACHE_STATS,
            (c.cache.len() as u64, limits::PROC_STATS_ENTRIES as u64),
        ),
        (
            maps::COPY_STATS,
            (c.copy.len() as u64, limits::PROC_STATS_ENTRIES as u64),
        ),
    ])
}

/// This machine's host name (in a pod without hostNetwork, the pod's: the sampler uses
/// the node's name when it knows it).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
