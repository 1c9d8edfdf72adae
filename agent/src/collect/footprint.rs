//! What copyscope itself holds: the kernel memory of its maps (the `memlock:` line of each
//! map fd's /proc/self/fdinfo, which since Linux 6.5 is the map's memory in use) and its
//! resident set.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use aya::{
    Ebpf,
    maps::{Map, MapData},
};

/// Duplicates of the fds of every map of the loaded object, taken before the collector
/// takes its maps out of it, so that all of them can be measured each window.
pub struct MapMemory {
    fds: Vec<(String, OwnedFd)>,
}

impl MapMemory {
    pub fn new(ebpf: &Ebpf) -> MapMemory {
        let fds = ebpf
            .maps()
            .filter_map(|(name, map)| {
                let fd = map_data(map)?.fd().as_fd().try_clone_to_owned().ok()?;
                Some((name.to_string(), fd))
            })
            .collect();
        MapMemory { fds }
    }

    /// Bytes of kernel memory each map holds now, by map name.
    pub fn read(&self) -> BTreeMap<String, u64> {
        self.fds
            .iter()
            .filter_map(|(name, fd)| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                    .ok()?;
                Some((name.clone(), parse_memlock(&info)?))
            })
            .collect()
    }
}

/// The maps copyscope's object declares (hashes, arrays, their per-CPU forms; the logs
/// ring buffer).
fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::RingBuf(m) => Some(m),
        _ => None,
    }
}

/// The `memlock:` line of a map's fdinfo, in bytes.
fn parse_memlock(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))?
        .trim()
        .parse()
        .ok()
}

/// Hand the heap's free pages back to the kernel. glibc keeps what a burst freed (the
/// kernel's BTF parsed at load, a window's rows of every process) and the resident set
/// would stay at its peak; musl returns them by itself.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes in the heap's free chunks (glibc's `mallinfo2().fordblks`); None where the
/// allocator does not say (musl, which returns free pages by itself).
pub fn free_heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// When to hand the free heap back after a collection: after the first; when the heap's
/// free bytes exceed the least of the last [`Trim::RECENT`] collections' by
/// [`Trim::GROWTH`] (a burst of exits, say, left more free memory than a collection
/// reuses); or every [`Trim::EVERY`] collections. A steady collection frees about as much
/// as it allocates, and the next one reuses it: trimming it every time would hand those
/// pages back only for the next collection to fault them in again, page by page. A trim
/// also walks the whole heap.
#[derive(Debug, Default)]
pub struct Trim {
    /// Whether a trim was made yet.
    trimmed: bool,
    /// Free heap bytes at the end of the last few collections, newest last.
    recent: std::collections::VecDeque<u64>,
    /// Collections since the last trim.
    since: u32,
}

impl Trim {
    pub const GROWTH: u64 = 8 << 20;
    pub const EVERY: u32 = 12;
    pub const RECENT: usize = 3;

    /// Whether to trim now, given the heap's free bytes at the end of this collection
    /// (None: unknown, so only the first time and every few collections).
    pub fn due(&mut self, free: Option<u64>) -> bool {
        self.since += 1;
        let grown = match free {
            Some(f) => {
                let least = self.recent.iter().min().copied();
                if self.recent.len() == Self::RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(f);
                least.is_some_and(|l| f >= l.saturating_add(Self::GROWTH))
            }
            None => false,
        };
        !self.trimmed || grown || self.since >= Self::EVERY
    }

    /// A trim was made.
    pub fn done(&mut self) {
        self.trimmed = true;
        self.since = 0;
    }
}

/// This process's resident set in bytes (VmRSS of /proc/self/status).
pub fn resident_bytes() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmRSS:` of a /proc/PID/status, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_bytes(status, "VmRSS")
}

/// A size field (`VmRSS`, `VmHWM`, ...) of a /proc/PID/status, in bytes (None for a size
/// no u64 holds).
pub fn parse_status_bytes(status: &str, key: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_is_read_from_a_map_fdinfo() {
        let info = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1061\nmap_type:\t5\n\
                    key_size:\t8\nvalue_size:\t32\nmax_entries:\t32768\nmap_flags:\t0x0\n\
                    map_extra:\t0x0\nmemlock:\t2624640\nmap_id:\t77\nfrozen:\t0\n";
        assert_eq!(parse_memlock(info), Some(2_624_640));
        assert_eq!(parse_memlock("pos:\t0\n"), None);
    }

    #[test]
    fn the_heap_is_trimmed_first_then_when_more_is_free_than_collections_reuse() {
        let mib = 1 << 20;
        let mut t = Trim::default();
        assert!(t.due(Some(30 * mib)), "the first collection trims");
        t.done();
        // Steady collections: each frees about what the next one reuses.
        for _ in 0..4 {
            assert!(!t.due(Some(20 * mib)));
        }
        assert!(!t.due(Some(27 * mib)), "under 8 MiB over the least recent");
        assert!(t.due(Some(29 * mib)), "a burst left 8 MiB more free");
        t.done();
        let due: Vec<bool> = (0..Trim::EVERY).map(|_| t.due(Some(20 * mib))).collect();
        assert_eq!(due.iter().filter(|d| **d).count(), 1);
        assert!(due[Trim::EVERY as usize - 1], "and every few collections");
        let mut unknown = Trim::default();
        assert!(unknown.due(None));
        unknown.done();
        assert!(!unknown.due(None));
    }

    #[test]
    fn resident_set_is_read_from_proc_status() {
        let status =
            "Name:\tcopyscope\nVmHWM:\t   30000 kB\nVmRSS:\t   21504 kB\nRssAnon:\t 9000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(21_504 * 1024));
        assert_eq!(parse_status_bytes(status, "VmHWM"), Some(30_000 * 1024));
        assert_eq!(
            parse_status_bytes("VmRSS:\t18446744073709551615 kB\n", "VmRSS"),
            None
        );
        // A key is a whole field name: VmRSS is not RssAnon's prefix, nor the reverse.
        assert_eq!(parse_status_bytes(status, "Rss"), None);
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
