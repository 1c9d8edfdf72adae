//! One collection window after another: harvest the maps, build the window's snapshot
//! with container ids and advice, free what exited. `copyscope run` and `copyscope top`
//! sample with it; `snapshot` builds its one window with the same functions.

use std::{collections::BTreeMap, time::Instant};

use anyhow::Result;
use copyscope_common::{limits, maps};
use foldhash::{HashSet, HashSetExt as _};

use crate::{
    advisor::{self, Calibration, Thresholds},
    cgroups::Containers,
    collect::{
        footprint::MapMemory,
        names::Names,
        syscalls::{Collector, proc_comm},
    },
    loader::{self, ProgramStat},
    model::{self, Counts, ProbeRow, Snapshot},
    pods::{PodRef, Pods},
    workload,
};

/// Exited processes waiting in the kernel that start a harvest ahead of the window: an
/// eighth of the exit map, and with each process's few syscall rows about a quarter of
/// the syscall map at most.
pub const EARLY_HARVEST_EXITS: usize = limits::EXITED_ENTRIES as usize / 8;

/// Samples windows from loaded programs: each [`Sampler::sample`] covers the time since
/// the previous one (measured, not nominal).
pub struct Sampler {
    collector: Collector,
    /// Every map's fd, for its kernel memory.
    map_memory: MapMemory,
    /// Processes whose counts the last window deferred because they could not be named.
    unnamed: HashSet<u32>,
    prev: Counts,
    prev_stats: Vec<ProgramStat>,
    started: Instant,
    /// Container ids of the pids seen (looked up once per pid while it lives), and of the
    /// cgroups exited processes were in.
    containers: Containers,
    calibration: Calibration,
    thresholds: Thresholds,
    /// Pod names for container ids, when the Kubernetes API is watched.
    pods: Option<Pods>,
    /// Earlier agents that counted into the same pinned maps: their own harvesting is not
    /// part of any window either.
    earlier_agents: HashSet<u32>,
    /// Comms of the live processes.
    names: Names,
}

/// What a [`Sampler`] carries from one window to the next, saved with a pin so that the
/// next agent's first window starts where this one's last ended.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SamplerSaved {
    pub prev: model::CountsSaved,
    pub containers: Vec<(u32, Option<String>)>,
    pub prev_stats: Vec<ProgramStat>,
    /// This agent's pid and the earlier agents' (the last few).
    pub agents: Vec<u32>,
}

/// One window and the state of the programs and maps at its end.
pub struct Sample {
    pub snapshot: Snapshot,
    /// Cumulative run counts of every program.
    pub programs: Vec<ProgramStat>,
    /// Entries in use and capacity of the per-process kernel maps.
    pub map_entries: BTreeMap<&'static str, (u64, u64)>,
    /// Kernel memory of every map, in bytes, by map name.
    pub map_memory: BTreeMap<String, u64>,
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
        let map_memory = MapMemory::new(&loaded.ebpf);
        let mut collector = Collector::new(loaded)?;
        let prev = collector.harvest()?;
        Ok(Sampler {
            collector,
            map_memory,
            unnamed: HashSet::new(),
            prev,
            prev_stats: loader::program_stats(loaded),
            started: Instant::now(),
            containers: Containers::new(),
            calibration,
            thresholds,
            pods: None,
            earlier_agents: HashSet::new(),
            names: Names::default(),
        })
    }

    /// Continue from an earlier agent's last window (a pinned restart): counts since then,
    /// including the time no agent ran, go into the next window.
    pub fn restore(&mut self, saved: SamplerSaved) {
        self.prev = saved.prev.into();
        self.containers.restore(saved.containers);
        self.prev_stats = saved.prev_stats;
        self.earlier_agents = saved.agents.into_iter().collect();
        self.earlier_agents.remove(&std::process::id());
    }

    /// What [`Sampler::restore`] needs, as of the last sample.
    pub fn save(&self) -> SamplerSaved {
        let mut agents: Vec<u32> = self.earlier_agents.iter().copied().collect();
        agents.sort_unstable();
        // The last few are enough: an earlier agent's rows go once it has exited.
        let keep = agents.len().saturating_sub(7);
        let mut agents = agents.split_off(keep);
        agents.push(std::process::id());
        SamplerSaved {
            prev: (&self.prev).into(),
            containers: self.containers.saved(),
            prev_stats: self.prev_stats.clone(),
            agents,
        }
    }

    /// Name the containers' pods in the snapshots, from this watch of the node's pods.
    pub fn set_pods(&mut self, pods: Pods) {
        self.pods = Some(pods);
    }

    /// Between two windows: when exited processes are filling the kernel maps (a burst
    /// of short-lived processes), move their final counts out now rather than at the
    /// window's end, when the maps may have overflowed. Nothing else changes: the next
    /// window reports them as it would have. Returns whether it harvested.
    pub fn harvest_exits_if_filling(&mut self) -> Result<bool> {
        if self.collector.exits_pending()? < EARLY_HARVEST_EXITS {
            return Ok(false);
        }
        self.collector.harvest()?;
        Ok(true)
    }

    /// The window since the previous sample.
    pub fn sample(&mut self, loaded: &loader::Loaded) -> Result<Sample> {
        let mut after = self.collector.harvest()?;
        let elapsed = self.started.elapsed().as_secs_f64();
        self.started = Instant::now();
        let programs = loader::program_stats(loaded);
        let missed: u64 = loader::program_stats_since(&self.prev_stats, programs.clone())
            .iter()
            .map(|s| s.missed_runs)
            .sum();
        self.prev_stats = programs.clone();
        let earlier = &self.earlier_agents;
        let names = std::cell::RefCell::new(&mut self.names);
        let mut snapshot = window_snapshot_named(
            loaded,
            &self.prev,
            &after,
            elapsed,
            &|t| !earlier.contains(&t),
            false,
            missed,
            &|pid| names.borrow_mut().comm(pid),
        );
        self.unnamed = defer_unnamed(&mut snapshot, &self.prev, &mut after, &self.unnamed);
        snapshot.calibration = Some(self.calibration);
        assign_containers(&mut snapshot, &after, &mut self.containers);
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
        let map_memory = self.map_memory.read();
        let gone = self.collector.forget_retired();
        self.containers.forget(&gone);
        self.names.forget(&gone);
        after.forget(&gone);
        self.prev = after;
        Ok(Sample {
            snapshot,
            programs,
            map_entries,
            map_memory,
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
    window_snapshot_named(
        loaded,
        before,
        after,
        elapsed,
        keep,
        include_sched_only,
        missed_runs,
        &proc_comm,
    )
}

/// [`window_snapshot`] with the comms of live processes from `comm_of`.
#[expect(
    clippy::too_many_arguments,
    reason = "window_snapshot's arguments and the comm lookup"
)]
pub fn window_snapshot_named(
    loaded: &loader::Loaded,
    before: &model::Counts,
    after: &model::Counts,
    elapsed: f64,
    keep: &dyn Fn(u32) -> bool,
    include_sched_only: bool,
    missed_runs: u64,
    comm_of: &dyn Fn(u32) -> Option<String>,
) -> Snapshot {
    let mut rows = model::delta(before, after);
    let mut sched = model::delta_by_pid(&before.sched, &after.sched);
    let mut pagecache = model::delta_by_pid(&before.pagecache, &after.pagecache);
    let mut copy = model::delta_by_pid(&before.copy, &after.copy);
    let own = std::process::id();
    rows.retain(|(k, _)| k.tgid != own && keep(k.tgid));
    sched.retain(|(t, _)| *t != own && keep(*t));
    pagecache.retain(|(t, _)| *t != own && keep(*t));
    copy.retain(|(t, _)| *t != own && keep(*t));
    let (sources, cpu_copy_method) = copy_sources(&loaded.probes);
    let window = model::Window {
        rows: &rows,
        sched: &sched,
        pagecache: &pagecache,
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
        processes: model::processes(&window, comm_of),
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

/// Each process's container: by the cgroup the kernel saw it exit in when it has exited
/// (short-lived processes are gone before their window is reported), else from /proc.
pub fn assign_containers(snapshot: &mut Snapshot, counts: &Counts, containers: &mut Containers) {
    for p in &mut snapshot.processes {
        p.container_id = containers.of(p.pid, counts.exited_cgroups.get(&p.pid).copied());
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
            let sizes = if p.pagecache.misses > 0 && !p.exited {
                workload::open_file_sizes(p.pid)
            } else {
                Vec::new()
            };
            advisor::advise(p, s.duration_seconds, &sizes, cal, th)
                .into_iter()
                .filter(|f| !f.below_threshold || th.list_below)
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
/// A process the harvest saw alive but that was gone before it could be named (a
/// short-lived one, under churn) would count under comm "?". Its counts wait a window
/// instead: `after` keeps its previous counts, and the next harvest names it from its exit
/// record. Returns the processes deferred; one deferred already (`last`) is reported as it
/// is, so that nothing waits forever.
fn defer_unnamed(
    snapshot: &mut Snapshot,
    prev: &Counts,
    after: &mut Counts,
    last: &HashSet<u32>,
) -> HashSet<u32> {
    let defer: HashSet<u32> = snapshot
        .processes
        .iter()
        .filter(|p| p.comm == "?" && !p.exited && !last.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    if defer.is_empty() {
        return defer;
    }
    snapshot.processes.retain(|p| !defer.contains(&p.pid));
    // The deferred processes' rows as the previous harvest had them (none when it had
    // none), for the keys this harvest has.
    after.rows.retain_mut(|(k, v)| {
        if !defer.contains(&k.tgid) {
            return true;
        }
        match model::lookup(&prev.rows, k) {
            Some(p) => {
                *v = *p;
                true
            }
            None => false,
        }
    });
    fn keep_prev<V: Copy>(after: &mut Vec<(u32, V)>, prev: &[(u32, V)], pids: &HashSet<u32>) {
        for pid in pids {
            let at = after.binary_search_by_key(pid, |(t, _)| *t);
            match (model::lookup(prev, pid), at) {
                (Some(v), Ok(i)) => after[i].1 = *v,
                (Some(v), Err(i)) => after.insert(i, (*pid, *v)),
                (None, Ok(i)) => {
                    after.remove(i);
                }
                (None, Err(_)) => {}
            }
        }
    }
    keep_prev(&mut after.sched, &prev.sched, &defer);
    keep_prev(&mut after.pagecache, &prev.pagecache, &defer);
    keep_prev(&mut after.copy, &prev.copy, &defer);
    defer
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
            maps::PAGECACHE_STATS,
            (c.pagecache.len() as u64, limits::PROC_STATS_ENTRIES as u64),
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

#[cfg(test)]
mod tests {
    use copyscope_common::{SyscallKey, SyscallStats};

    use super::*;
    use crate::model::ProcessRow;

    fn window(processes: Vec<ProcessRow>) -> Snapshot {
        Snapshot {
            duration_seconds: 1.0,
            end_unix_seconds: 0.0,
            host: String::new(),
            kernel: String::new(),
            probes: vec![],
            processes,
            dropped: BTreeMap::new(),
            cpu_copy_method: BTreeMap::new(),
            bpf_stats: vec![],
            command: None,
            calibration: None,
            advice: vec![],
        }
    }

    fn counts(rows: &[(u32, u64)]) -> Counts {
        let mut c = Counts::default();
        for &(tgid, calls) in rows {
            let key = SyscallKey {
                tgid,
                syscall: 3,
                fd_in: 1,
                fd_out: 0,
                _pad: 0,
            };
            let v = SyscallStats {
                calls,
                ..Default::default()
            };
            c.rows.push((key, v));
        }
        c.rows.sort_unstable_by_key(|(k, _)| *k);
        c
    }

    #[test]
    fn a_process_gone_before_it_is_named_waits_one_window() {
        // pid 7 was seen before; pid 8 is new; both vanished before they were named.
        let prev = counts(&[(7, 10)]);
        let mut after = counts(&[(7, 25), (8, 4), (9, 1)]);
        let mut snap = window(vec![
            ProcessRow::empty(7, "?".into(), false),
            ProcessRow::empty(8, "?".into(), false),
            ProcessRow::empty(9, "named".into(), false),
        ]);
        let deferred = defer_unnamed(&mut snap, &prev, &mut after, &HashSet::new());
        assert_eq!(deferred, HashSet::from_iter([7, 8]));
        let pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [9]);
        // Their counts stay where the previous window left them: the next window has all.
        let calls = |c: &Counts, t: u32| {
            c.rows
                .iter()
                .find(|(k, _)| k.tgid == t)
                .map(|(_, v)| v.calls)
        };
        assert_eq!(calls(&after, 7), Some(10));
        assert_eq!(calls(&after, 8), None);
        assert_eq!(calls(&after, 9), Some(1));

        // Deferred once already: reported as "?" rather than held forever.
        let mut snap = window(vec![ProcessRow::empty(7, "?".into(), false)]);
        let mut again = counts(&[(7, 30)]);
        assert!(defer_unnamed(&mut snap, &after, &mut again, &deferred).is_empty());
        assert_eq!(snap.processes.len(), 1);
        assert_eq!(calls(&again, 7), Some(30));
    }
}
