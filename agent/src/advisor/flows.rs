//! The figures the rules work from: a workload's flows by direction and fd kind, rates,
//! and how they are written in a finding.

use super::Thresholds;
use crate::model::ProcessRow;

/// [`span`] as a `Display` that formats only when written.
pub(super) struct Span(pub(super) f64);

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&span(self.0))
    }
}

/// A window's length for a sentence: milliseconds under a second ("over 3.5 ms", not
/// "over 0.0 s"), seconds above.
pub fn span(seconds: f64) -> String {
    if seconds < 0.01 {
        format!("{:.1} ms", seconds * 1000.0)
    } else if seconds < 1.0 {
        format!("{:.0} ms", seconds * 1000.0)
    } else {
        format!("{seconds:.1} s")
    }
}

/// Bytes and calls of one workload's syscalls, by direction and fd kind.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Flows {
    pub file_read: u64,
    pub file_read_calls: u64,
    pub file_write: u64,
    pub file_write_calls: u64,
    pub socket_read: u64,
    pub socket_read_calls: u64,
    pub socket_write: u64,
    pub socket_write_calls: u64,
}

pub(super) const READS: &[&str] = &[
    "read", "pread64", "readv", "preadv", "preadv2", "recvfrom", "recvmsg",
];
pub(super) const WRITES: &[&str] = &[
    "write", "pwrite64", "writev", "pwritev", "pwritev2", "sendto", "sendmsg",
];

impl Flows {
    /// Buffered copies only: O_DIRECT (`file_direct`) and zero-copy calls are not copies.
    pub fn of(p: &ProcessRow) -> Flows {
        let mut f = Flows::default();
        for r in &p.syscalls {
            let read = READS.contains(&&*r.syscall);
            let write = WRITES.contains(&&*r.syscall);
            let (bytes, calls) = match (read, write, &*r.fd_kind) {
                (true, _, "file") => (&mut f.file_read, &mut f.file_read_calls),
                (true, _, "socket") => (&mut f.socket_read, &mut f.socket_read_calls),
                (_, true, "file") => (&mut f.file_write, &mut f.file_write_calls),
                (_, true, "socket") => (&mut f.socket_write, &mut f.socket_write_calls),
                _ => continue,
            };
            *bytes += r.bytes;
            *calls += r.calls;
        }
        f
    }
}

pub(super) const PAGE: f64 = 4096.0;
pub(super) const MIB: f64 = 1024.0 * 1024.0;

pub(super) fn rate(bytes: f64, window: f64) -> f64 {
    bytes / window
}

pub(super) fn human(bytes_per_second: f64) -> String {
    if bytes_per_second >= MIB {
        format!("{:.1} MiB/s", bytes_per_second / MIB)
    } else {
        format!("{:.1} KiB/s", bytes_per_second / 1024.0)
    }
}

pub(super) fn human_bytes(bytes: f64) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes / MIB)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

pub(super) fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.0}g", b / (1024.0 * MIB))
    } else if b >= MIB {
        format!("{:.0}m", b / MIB)
    } else {
        format!("{:.0}k", b / 1024.0)
    }
}

/// A source and a sink of copies that may be one flow through user memory.
pub(super) struct Pair {
    pub(super) src: f64,
    pub(super) sink: f64,
}

impl Pair {
    pub(super) fn matched(&self, th: &Thresholds, window: f64) -> Option<f64> {
        let lo = self.src.min(self.sink);
        let hi = self.src.max(self.sink);
        (hi > 0.0 && rate(lo, window) >= th.min_bytes_per_second && lo / hi >= th.min_ratio)
            .then_some(lo)
    }
}

/// Suggest an nginx-style `directio` size: a power of two at or below the smallest large
/// file the workload has open, so that the streamed files go direct and small ones stay
/// cached; 4 MiB (a common starting point) when no such file is visible.
pub fn directio_threshold(open_file_sizes: &[u64]) -> u64 {
    const FLOOR: u64 = 4 << 20;
    open_file_sizes
        .iter()
        .copied()
        .filter(|s| *s >= FLOOR)
        .min()
        .map_or(FLOOR, |s| 1u64 << (63 - s.leading_zeros()))
}
