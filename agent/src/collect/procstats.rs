//! sched, pagecache and copies families: per-process maps keyed by tgid (one row every CPU
//! adds to), harvested the same way: move exited processes' final counts out of the kernel.

use foldhash::{HashMap, HashMapExt as _, HashSet};

use anyhow::Result;
use aya::{
    Pod,
    maps::{HashMap as BpfHashMap, MapData},
};

use crate::model::Tally;

pub struct ProcMap<V: Pod + Tally> {
    name: &'static str,
    map: BpfHashMap<MapData, u32, V>,
    /// Final counts of processes that exited.
    retired: HashMap<u32, V>,
    /// Rows the last harvest read: the next one's table is sized for them.
    rows_last: usize,
}

impl<V: Pod + Tally> ProcMap<V> {
    pub fn new(name: &'static str, map: aya::maps::Map) -> Result<Self> {
        Ok(ProcMap {
            name,
            map: BpfHashMap::try_from(map)?,
            retired: HashMap::new(),
            rows_last: 0,
        })
    }

    /// Cumulative counts per process, sorted by tgid; rows of processes in `gone` are
    /// retired.
    pub fn harvest(&mut self, gone: &HashSet<u32>) -> Result<Vec<(u32, V)>> {
        let mut rows = Vec::with_capacity(self.rows_last + self.retired.len());
        super::batch::entries(&self.map, self.name, &mut rows)?;
        self.rows_last = rows.len();
        if !gone.is_empty() {
            let mut retire = Vec::new();
            rows.retain(|(tgid, v)| {
                let dead = gone.contains(tgid);
                if dead {
                    retire.push((*tgid, *v));
                }
                !dead
            });
            for (tgid, v) in retire {
                self.retired.entry(tgid).or_default().add(&v);
                let _ = self.map.remove(&tgid);
            }
        }
        rows.extend(self.retired.iter().map(|(t, v)| (*t, *v)));
        Ok(crate::model::sorted(rows))
    }

    /// Drop the final counts of exited processes once reported (a long-running agent).
    pub fn forget_retired(&mut self) -> impl Iterator<Item = u32> + use<V> {
        // Taken, not drained, so that a burst's table is freed.
        std::mem::take(&mut self.retired).into_keys()
    }
}
