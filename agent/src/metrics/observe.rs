//! Folding a collection window into the per-workload totals, under the cardinality cap.

use std::{borrow::Cow, collections::hash_map::Entry};

use super::{Exporter, Labels, Totals};
use crate::{
    advisor,
    model::{ProcessAdvice, ProcessRow, Snapshot},
    workload::{self, OTHER, WorkloadKey},
};

/// The groups of a window in the order they claim workload slots: their activity, their
/// labels and their index in the groups.
type Order<'a, 'b> = [((u64, u64), &'b Labels<'a>, usize)];

impl Exporter {
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
        let groups = group(s, container_of, self.opts.pid_labels);
        // Busiest first: they keep or win the workload slots (labels break ties). Sorted
        // by a key laid out once, so that a comparison reads no row.
        let mut order: Vec<((u64, u64), &Labels<'_>, usize)> = groups
            .iter()
            .enumerate()
            .map(|(i, (l, r))| (workload::activity(r), l, i))
            .collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let mut advice = Vec::new();
        let tracked = self.tracked();
        // The workload the others are summed under, taken out while the window is folded
        // in (one lookup, not one per process beyond the cap).
        let other_key = WorkloadKey::other(self.opts.pid_labels);
        let mut other = self.workloads.remove(&other_key);
        let owned = self.owned(&order, &other_key, other.is_some(), tracked);
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
        self.evict_idle();
        advice.sort_by(|a, b| {
            b.finding
                .estimated_cpu_seconds_saved_per_second
                .total_cmp(&a.finding.estimated_cpu_seconds_saved_per_second)
        });
        self.advice = advice;
    }

    /// Whether each group, busiest first, gets series of its own: a workload keeps its
    /// series, a new one takes a free slot under the cap, the rest are summed under the
    /// others.
    fn owned(
        &self,
        order: &Order<'_, '_>,
        other_key: &WorkloadKey,
        mut other_exists: bool,
        mut tracked: usize,
    ) -> Vec<bool> {
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
        order
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
            .collect()
    }

    /// Drop the series of the workloads idle for longer than --workload-ttl.
    fn evict_idle(&mut self) {
        let now = self.windows;
        let idle = self.opts.idle_windows;
        let before = self.workloads.len();
        self.workloads
            .retain(|_, t| now.saturating_sub(t.last_active) <= idle);
        self.evicted_idle += (before - self.workloads.len()) as u64;
    }
}

/// A window's processes grouped by workload labels, each group with its rows merged.
/// Grouped by borrowed labels: a workload of one process (the common case) is that
/// process's row itself, copied only when a second process joins it.
fn group<'a>(
    s: &'a Snapshot,
    container_of: &mut dyn FnMut(&ProcessRow) -> Option<String>,
    pid_labels: bool,
) -> Vec<(Labels<'a>, Cow<'a, ProcessRow>)> {
    let mut index: foldhash::HashMap<Labels<'_>, usize> =
        foldhash::HashMapExt::with_capacity(s.processes.len());
    let mut groups: Vec<(Labels<'_>, Cow<'_, ProcessRow>)> = Vec::with_capacity(s.processes.len());
    for p in &s.processes {
        let key = (
            p.comm.as_str(),
            container_of(p).unwrap_or_default(),
            pid_labels.then_some(p.pid),
        );
        match index.entry(key) {
            Entry::Occupied(e) => workload::merge(groups[*e.get()].1.to_mut(), p),
            Entry::Vacant(e) => {
                groups.push((e.key().clone(), Cow::Borrowed(p)));
                e.insert(groups.len() - 1);
            }
        }
    }
    groups
}
