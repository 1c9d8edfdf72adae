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

/// When to hand the free heap back after a collection: after the first, then when the
/// resident set at the end of a collection has grown by [`Trim::GROWTH`] since the
/// collection of the last trim, or every [`Trim::EVERY`] collections. A collection's own
/// working set (the rows of every process) is not growth: it is measured at the same
/// point every time, so steady collections reuse the free heap the last one left instead
/// of faulting it in again (a trim walks the whole heap, and the pages it hands back are
/// faulted in page by page by the next collection).
#[derive(Debug, Default)]
pub struct Trim {
    /// The resident set at the end of the collection of the last trim; None before the
    /// first.
    after: Option<u64>,
    /// Collections since the last trim.
    since: u32,
}

impl Trim {
    pub const GROWTH: u64 = 8 << 20;
    pub const EVERY: u32 = 12;

    /// Whether to trim now, given the resident set (None: unknown, so trim).
    pub fn due(&mut self, resident: Option<u64>) -> bool {
        self.since += 1;
        match (self.after, resident) {
            (Some(after), Some(now)) => {
                now >= after.saturating_add(Self::GROWTH) || self.since >= Self::EVERY
            }
            _ => true,
        }
    }

    /// A trim was made at the end of a collection whose resident set was `resident`.
    pub fn done(&mut self, resident: Option<u64>) {
        self.after = resident;
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
    fn the_heap_is_trimmed_first_then_when_it_grew_or_every_few_collections() {
        let mib = 1 << 20;
        let mut t = Trim::default();
        assert!(t.due(Some(40 * mib)), "the first collection trims");
        t.done(Some(30 * mib));
        assert!(!t.due(Some(37 * mib)));
        assert!(t.due(Some(38 * mib)), "grown by 8 MiB");
        t.done(Some(30 * mib));
        let due: Vec<bool> = (0..Trim::EVERY).map(|_| t.due(Some(31 * mib))).collect();
        assert_eq!(due.iter().filter(|d| **d).count(), 1);
        assert!(due[Trim::EVERY as usize - 1], "and every few collections");
        assert!(Trim::default().due(None));
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
