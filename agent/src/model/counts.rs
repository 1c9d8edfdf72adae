//! Cumulative counts from the kernel, their saved form, and the differences of two.

use std::collections::BTreeMap;

use copyscope_common::{CopyStats, Counter, PagecacheStats, SchedStats, SyscallKey, SyscallStats};
use foldhash::{HashMap, HashSet};
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
