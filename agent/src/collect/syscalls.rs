//! syscalls family: owns the map handles, moves exited processes' final counts out of the
//! kernel, and returns cumulative [`Counts`].

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use copyscope_common::{
    CopyStats, Counter, Exited, PagecacheStats, SchedStats, SyscallKey, SyscallStats, maps,
};

use super::{batch, procstats::ProcMap};

use crate::{
    loader::Loaded,
    model::{self, Counts, add},
};

pub struct Collector {
    stats: BpfHashMap<MapData, SyscallKey, SyscallStats>,
    exited: BpfHashMap<MapData, u32, Exited>,
    watched: BpfHashMap<MapData, u32, u8>,
    counters: PerCpuArray<MapData, u64>,
    sched: ProcMap<SchedStats>,
    pagecache: ProcMap<PagecacheStats>,
    copy: ProcMap<CopyStats>,
    /// Final counts of processes that exited, moved out of the kernel map.
    retired: HashMap<SyscallKey, SyscallStats>,
    /// comm of every process seen exiting.
    exited_comms: HashMap<u32, String>,
    exited_cgroups: HashMap<u32, u64>,
    /// Every process ever placed in the watched set (the command and its descendants).
    watched_seen: HashSet<u32>,
    /// Rows the last harvest read: the next one's table is sized for them.
    rows_last: usize,
}

fn comm_str(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

impl Collector {
    pub fn new(loaded: &mut Loaded) -> Result<Collector> {
        let ebpf = &mut loaded.ebpf;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("object has no {name} map"))
        };
        Ok(Collector {
            stats: BpfHashMap::try_from(take(maps::SYSCALL_STATS)?)?,
            exited: BpfHashMap::try_from(take(maps::EXITED)?)?,
            watched: BpfHashMap::try_from(take(maps::WATCHED)?)?,
            counters: PerCpuArray::try_from(take(maps::COUNTERS)?)?,
            sched: ProcMap::new(maps::SCHED_STATS, take(maps::SCHED_STATS)?)?,
            pagecache: ProcMap::new(maps::PAGECACHE_STATS, take(maps::PAGECACHE_STATS)?)?,
            copy: ProcMap::new(maps::COPY_STATS, take(maps::COPY_STATS)?)?,
            retired: HashMap::new(),
            exited_comms: HashMap::new(),
            exited_cgroups: HashMap::new(),
            watched_seen: HashSet::new(),
            rows_last: 0,
        })
    }

    /// Follow `pid` and every process it forks from now on (`snapshot -- COMMAND`).
    pub fn watch(&mut self, pid: u32) -> Result<()> {
        self.watched_seen.insert(pid);
        self.watched
            .insert(pid, 1, 0)
            .context("adding the command to the watched set")
    }

    /// The processes followed since [`Collector::watch`], as of the last harvest.
    pub fn watched(&self) -> &HashSet<u32> {
        &self.watched_seen
    }

    /// Exited processes whose final counts wait in the kernel for the next harvest (one
    /// batch read of the exit map, which holds only the processes that exited since).
    pub fn exits_pending(&self) -> Result<usize> {
        let mut gone: Vec<(u32, Exited)> = Vec::new();
        batch::entries(&self.exited, maps::EXITED, &mut gone)?;
        Ok(gone.len())
    }

    /// Read the kernel maps. Processes that exited since the last harvest have their final
    /// counts moved into userspace and their kernel rows freed, so the map stays small and
    /// nothing a short-lived process did is lost.
    pub fn harvest(&mut self) -> Result<Counts> {
        // Watched keys first: a child that forked and exited since the last harvest is in
        // both WATCHED and EXITED, and is removed from WATCHED below.
        self.watched_seen
            .extend(self.watched.keys().filter_map(|k| k.ok()));
        let mut gone: Vec<(u32, Exited)> = Vec::new();
        batch::entries(&self.exited, maps::EXITED, &mut gone)?;
        let gone_set: HashSet<u32> = gone.iter().map(|(t, _)| *t).collect();
        let mut rows = Vec::with_capacity(self.rows_last + self.retired.len());
        batch::entries(&self.stats, maps::SYSCALL_STATS, &mut rows)?;
        self.rows_last = rows.len();
        let mut retire = Vec::new();
        if !gone_set.is_empty() {
            rows.retain(|(key, v)| {
                let dead = gone_set.contains(&key.tgid);
                if dead {
                    retire.push((*key, *v));
                }
                !dead
            });
        }
        let sched = self.sched.harvest(&gone_set)?;
        let pagecache = self.pagecache.harvest(&gone_set)?;
        let copy = self.copy.harvest(&gone_set)?;
        for (key, v) in retire {
            add(self.retired.entry(key).or_default(), &v);
            // The process is dead: nothing adds to this row any more.
            let _ = self.stats.remove(&key);
        }
        for (tgid, rec) in gone {
            self.exited_comms.insert(tgid, comm_str(&rec.comm));
            if rec.cgroup_id != 0 {
                self.exited_cgroups.insert(tgid, rec.cgroup_id);
            }
            let _ = self.exited.remove(&tgid);
            let _ = self.watched.remove(&tgid);
        }
        rows.extend(self.retired.iter().map(|(k, v)| (*k, *v)));
        let rows = model::sorted(rows);
        let mut drops = [0u64; Counter::COUNT as usize];
        for (i, d) in drops.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *d = values.iter().sum();
            }
        }
        // No process exited: no row to look up.
        let exited: HashMap<u32, String> = if self.exited_comms.is_empty() {
            HashMap::new()
        } else {
            rows.iter()
                .map(|(k, _)| k.tgid)
                .chain(sched.iter().map(|(t, _)| *t))
                .chain(pagecache.iter().map(|(t, _)| *t))
                .filter_map(|t| self.exited_comms.get(&t).map(|c| (t, c.clone())))
                .collect()
        };
        let exited_cgroups = exited
            .keys()
            .filter_map(|t| self.exited_cgroups.get(t).map(|c| (*t, *c)))
            .collect();
        Ok(Counts {
            rows,
            exited,
            exited_cgroups,
            drops,
            sched,
            pagecache,
            copy,
        })
    }
}

impl Collector {
    /// Forget the final counts of processes that exited, once a window has reported them,
    /// so that a long-running agent's memory does not grow with process churn. Returns
    /// their tgids: the caller drops them from its previous counts too (a reused pid then
    /// starts from zero).
    pub fn forget_retired(&mut self) -> HashSet<u32> {
        // Taken, not drained: a burst of exits leaves tables sized for it, which would
        // otherwise stay allocated.
        let mut gone: HashSet<u32> = std::mem::take(&mut self.retired)
            .into_keys()
            .map(|k| k.tgid)
            .collect();
        gone.extend(self.sched.forget_retired());
        gone.extend(self.pagecache.forget_retired());
        gone.extend(self.copy.forget_retired());
        gone.extend(std::mem::take(&mut self.exited_comms).into_keys());
        self.exited_cgroups = HashMap::new();
        gone
    }
}

/// The comm of a live process, from /proc.
pub fn proc_comm(pid: u32) -> Option<String> {
    // Bytes, not read_to_string: a comm need not be UTF-8 (prctl(PR_SET_NAME) takes any
    // bytes); an invalid one is shown lossily rather than lost as "?".
    std::fs::read(format!("/proc/{pid}/comm"))
        .ok()
        .map(|b| crate::procfs::parse_comm(&String::from_utf8_lossy(&b)))
}

#[cfg(test)]
mod tests {
    use super::proc_comm;

    #[test]
    fn a_comm_that_is_not_utf8_is_read_lossily_not_lost() {
        // This test's own thread, renamed with bytes that are not UTF-8.
        let name = b"bad\xff\xfename\0";
        // SAFETY: PR_SET_NAME with a NUL-terminated buffer of at most 16 bytes.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) }, 0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        assert_eq!(
            proc_comm(tid).as_deref(),
            Some("bad\u{FFFD}\u{FFFD}name"),
            "the comm is kept, with each invalid byte replaced"
        );
    }
}
