//! The series of an exposition: each workload's counters, the advisor's findings and
//! copyscope's own health, written into `Families`.

use std::collections::BTreeMap;

use super::{Exporter, ProcessStats, SelfStats, exposition::Families, specs::*};
use crate::model::PodRef;

impl Exporter {
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
        self.workload_series(&mut f);
        self.advice_series(&mut f);
        self.own_series(&mut f);
        f
    }

    /// Each workload's cumulative counters.
    fn workload_series(&self, f: &mut Families) {
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
                with(&l, f, SYSCALLS, s.calls as f64);
                with(&l, f, SYSCALL_BYTES, s.bytes as f64);
                with(&l, f, SYSCALL_ERRORS, s.errors as f64);
                with(&l, f, SYSCALL_SECONDS, s.seconds);
            }
            with(&[], f, MODE_SWITCHES, r.mode_switches as f64);
            let cs = &r.context_switches;
            for (kind, v) in [("voluntary", cs.voluntary), ("involuntary", cs.involuntary)] {
                with(&[("kind", kind)], f, CONTEXT_SWITCHES, v as f64);
            }
            with(&[], f, CONTEXT_SWITCHES_IN_IO, cs.in_io as f64);
            for (dir, v) in [
                ("to_user", r.cpu_copy_bytes.to_user),
                ("from_user", r.cpu_copy_bytes.from_user),
            ] {
                with(&[("direction", dir)], f, CPU_COPY_BYTES, v as f64);
            }
            with(&[], f, ZERO_COPY_BYTES, r.zero_copy_bytes as f64);
            with(&[], f, DIRECT_IO_BYTES, r.direct_io_bytes as f64);
            let pc = &r.pagecache;
            with(&[], f, PAGECACHE_LOOKUPS, pc.lookups as f64);
            with(&[], f, PAGECACHE_HITS, pc.hits as f64);
            with(&[], f, PAGECACHE_MISSES, pc.misses as f64);
            with(&[], f, PAGECACHE_WRITE_ADDED, pc.added_by_writes as f64);
            with(&[], f, PAGECACHE_DIRTIED, pc.dirtied as f64);
            with(&[], f, PAGECACHE_MMAP, pc.mmap_faults as f64);
            for (pattern, secs) in &t.saved {
                with(&[("pattern", pattern.as_str())], f, ADVICE_SAVED, *secs);
            }
        }
    }

    /// The findings of the last window.
    fn advice_series(&self, f: &mut Families) {
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
    }

    /// copyscope itself.
    fn own_series(&self, f: &mut Families) {
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
    }
}
