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
}

impl<V: Pod + Tally> ProcMap<V> {
    pub fn new(name: &'static str, map: aya::maps::Map) -> Result<Self> {
        Ok(ProcMap {
            name,
            map: BpfHashMap::try_from(map)?,
            retired: HashMap::new(),
        })
    }

    /// Cumulative counts per process; rows of processes in `gone` are retired.
    pub fn harvest(&mut self, gone: &HashSet<u32>) -> Result<HashMap<u32, V>> {
        let mut entries = Vec::new();
        super::batch::entries(&self.map, self.name, &mut entries)?;
        let mut rows = HashMap::with_capacity(entries.len() + self.retired.len());
        let mut retire = Vec::new();
        for (tgid, v) in entries {
            if gone.contains(&tgid) {
                retire.push((tgid, v));
            } else {
                rows.insert(tgid, v);
            }
        }
        for (tgid, v) in retire {
            self.retired.entry(tgid).or_default().add(&v);
            let _ = self.map.remove(&tgid);
        }
        for (tgid, v) in &self.retired {
            rows.entry(*tgid).or_default().add(v);
        }
        Ok(rows)
    }

    /// Drop the final counts of exited processes once reported (a long-running agent).
    pub fn forget_retired(&mut self) -> impl Iterator<Item = u32> + use<V> {
        // Taken, not drained, so that a burst's table is freed.
        std::mem::take(&mut self.retired).into_keys()
    }
}
