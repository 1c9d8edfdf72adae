//! The comm of live processes for `run` and `top`, which report every few seconds: read
//! from /proc in the first windows a process has counts in (a fork is renamed by its exec
//! moments later), then remembered until the process exits, so that a window does not
//! open, read and close /proc/PID/comm for every process it reports.

use foldhash::{HashMap, HashSet};

use super::syscalls::proc_comm;

/// Windows in which a process's comm is read before it is remembered.
const READS: u8 = 2;
/// Processes remembered at most (their exits forget them; past it the cache starts again).
const PIDS_MAX: usize = 65_536;

#[derive(Debug, Default)]
pub struct Names {
    by_pid: HashMap<u32, (String, u8)>,
    /// Reads of /proc/PID/comm done (a figure for tests).
    pub reads: u64,
}

impl Names {
    /// The comm of live process `pid`; None when it is gone.
    pub fn comm(&mut self, pid: u32) -> Option<String> {
        if let Some((c, n)) = self.by_pid.get(&pid)
            && *n >= READS
        {
            return Some(c.clone());
        }
        self.reads += 1;
        let Some(c) = proc_comm(pid) else {
            self.by_pid.remove(&pid);
            return None;
        };
        if self.by_pid.len() >= PIDS_MAX {
            self.by_pid.clear();
        }
        let n = self.by_pid.get(&pid).map_or(0, |(_, n)| *n);
        self.by_pid.insert(pid, (c.clone(), n + 1));
        Some(c)
    }

    /// Forget processes that are gone (their pids may be reused).
    pub fn forget(&mut self, pids: &HashSet<u32>) {
        if pids.is_empty() {
            return;
        }
        self.by_pid.retain(|p, _| !pids.contains(p));
        // A burst of short-lived processes is gone: so is the table sized for it.
        if self.by_pid.capacity() > 4 * self.by_pid.len().max(1024) {
            self.by_pid.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comm_is_read_in_the_first_windows_then_remembered_until_the_exit() {
        let me = std::process::id();
        let mut names = Names::default();
        let comm = proc_comm(me).expect("our own comm");
        for _ in 0..5 {
            assert_eq!(names.comm(me).as_deref(), Some(comm.as_str()));
        }
        assert_eq!(names.reads, READS as u64);
        names.forget(&HashSet::from_iter([me]));
        assert_eq!(names.comm(me).as_deref(), Some(comm.as_str()));
        assert_eq!(
            names.reads,
            READS as u64 + 1,
            "a forgotten pid is read again"
        );
        // A pid that is not there is not remembered.
        assert_eq!(names.comm(u32::MAX), None);
        assert_eq!(names.comm(u32::MAX), None);
        assert_eq!(names.reads, READS as u64 + 3);
    }
}
