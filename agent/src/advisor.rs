//! The zero-copy advisor: from one workload's counts over a window, which zero-copy
//! interface would serve it better, the evidence, and the CPU it would save. Pure: the
//! calibration and the sizes of the files the workload has open are passed in.

use crate::model::ProcessRow;
/// The advisor's results are plain data, kept with the rest of it.
pub use crate::model::{Calibration, Evidence, Finding};

/// When a pattern is worth a finding. All are flags of `copyscope run` and `snapshot`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Bytes per second the two sides of a copy pattern must each reach.
    pub min_bytes_per_second: f64,
    /// The smaller side over the larger (0-1]: how alike the volumes must be to be one flow.
    pub min_ratio: f64,
    /// Page-cache hit ratio at or below which a streamed workload is flagged for O_DIRECT.
    pub directio_max_hit_ratio: f64,
    /// Share of bytes moved zero-copy at or above which a workload is reported as zero-copy.
    pub zero_copy_share: f64,
    /// CPU seconds per second a finding must save to be reported (0.001: 0.1% of one CPU);
    /// below it, a finding is marked `below_threshold`.
    pub min_cpu_saved: f64,
    /// List findings below `min_cpu_saved` too (marked), in the snapshot JSON.
    pub list_below: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_bytes_per_second: 1024.0 * 1024.0,
            min_ratio: 0.5,
            directio_max_hit_ratio: 0.5,
            zero_copy_share: 0.5,
            min_cpu_saved: 0.001,
            list_below: false,
        }
    }
}

impl Thresholds {
    pub fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(self.min_bytes_per_second) {
            return Err(format!(
                "the minimum rate must be a number of bytes per second >= 0, got {}",
                self.min_bytes_per_second
            ));
        }
        for (name, v) in [
            ("the minimum volume ratio", self.min_ratio),
            ("the O_DIRECT hit-ratio limit", self.directio_max_hit_ratio),
            ("the zero-copy share", self.zero_copy_share),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if self.min_ratio == 0.0 {
            return Err("the minimum volume ratio must be above 0".into());
        }
        if !ok(self.min_cpu_saved) {
            return Err(format!(
                "the minimum saving must be CPU seconds per second >= 0, got {}",
                self.min_cpu_saved
            ));
        }
        Ok(())
    }
}

/// [`span`] as a `Display` that formats only when written.
struct Span(f64);

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

const READS: &[&str] = &[
    "read", "pread64", "readv", "preadv", "preadv2", "recvfrom", "recvmsg",
];
const WRITES: &[&str] = &[
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

const PAGE: f64 = 4096.0;
const MIB: f64 = 1024.0 * 1024.0;

fn rate(bytes: f64, window: f64) -> f64 {
    bytes / window
}

fn human(bytes_per_second: f64) -> String {
    if bytes_per_second >= MIB {
        format!("{:.1} MiB/s", bytes_per_second / MIB)
    } else {
        format!("{:.1} KiB/s", bytes_per_second / 1024.0)
    }
}

fn human_size(bytes: u64) -> String {
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
struct Pair {
    src: f64,
    sink: f64,
}

impl Pair {
    fn matched(&self, th: &Thresholds, window: f64) -> Option<f64> {
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

/// Every finding for one workload's window, biggest saving first.
pub fn advise(
    p: &ProcessRow,
    window: f64,
    open_file_sizes: &[u64],
    cal: &Calibration,
    th: &Thresholds,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if window <= 0.0 {
        return out;
    }
    let f = Flows::of(p);
    let copy_s = |bytes: f64| bytes / cal.memcpy_bytes_per_second;
    let calls_s = |calls: f64| calls * cal.syscall_seconds;
    let ev = |summary: String, figures: &[(&str, f64)]| Evidence {
        window_seconds: window,
        summary,
        figures: figures.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    // Written out only into a finding's summary: most windows have none.
    let span = Span(window);

    // Socket writes and file writes each feed at most one pattern: the larger source
    // (file reads or socket reads) claims them first.
    let mut socket_write = f.socket_write as f64;
    let mut file_write = f.file_write as f64;
    let mut file_read = f.file_read as f64;
    let mut socket_read = f.socket_read as f64;

    // file -> socket through read() + write()/send(): sendfile.
    let file_first = file_read >= socket_read;
    let try_sendfile = |file_read: &mut f64, socket_write: &mut f64, out: &mut Vec<Finding>| {
        if let Some(b) = (Pair {
            src: *file_read,
            sink: *socket_write,
        })
        .matched(th, window)
        {
            // Each read() goes; each write() becomes a sendfile(): two copies and the
            // reads' mode switches avoided.
            let reads = f.file_read_calls as f64 * (b / f.file_read as f64);
            let saved = (copy_s(2.0 * b) + calls_s(reads)) / window;
            out.push(Finding {
                pattern: "sendfile".into(),
                recommendation: "serve files to sockets with sendfile() (nginx `sendfile on;`, Java FileChannel.transferTo, Go io.Copy from *os.File to *net.TCPConn) instead of read() + write()".into(),
                evidence: ev(
                    format!(
                        "reads {} from files and writes {} to sockets through user memory ({:.0}% alike) over {span}; {:.0} read() calls/s",
                        human(rate(f.file_read as f64, window)),
                        human(rate(f.socket_write as f64, window)),
                        100.0 * b / f.file_read.max(f.socket_write) as f64,
                        reads / window,
                    ),
                    &[
                        ("file_read_bytes_per_second", rate(f.file_read as f64, window)),
                        ("socket_write_bytes_per_second", rate(f.socket_write as f64, window)),
                        ("copied_bytes_avoidable_per_second", rate(2.0 * b, window)),
                        ("syscalls_avoidable_per_second", reads / window),
                    ],
                ),
                estimated_cpu_seconds_saved_per_second: saved,
                below_threshold: false,
            });
            *file_read -= b;
            *socket_write -= b;
        }
    };
    if file_first {
        try_sendfile(&mut file_read, &mut socket_write, &mut out);
    }

    // socket -> socket and socket -> file relays through recv() + write()/send(): splice.
    for to_socket in [true, false] {
        let sink = if to_socket {
            &mut socket_write
        } else {
            &mut file_write
        };
        if let Some(b) = (Pair {
            src: socket_read,
            sink: *sink,
        })
        .matched(th, window)
        {
            // splice() needs a call per hop too: copies avoided, not mode switches.
            let saved = copy_s(2.0 * b) / window;
            let (pattern, what, rec) = if to_socket {
                (
                    "splice_socket_to_socket",
                    "sockets",
                    "relay socket to socket with splice() through a pipe (HAProxy `option splice-auto`, Linux `splice(2)`) instead of recv() + send()",
                )
            } else {
                (
                    "splice_socket_to_file",
                    "files",
                    "write received data to files with splice() through a pipe instead of recv() + write()",
                )
            };
            out.push(Finding {
                pattern: pattern.into(),
                recommendation: rec.into(),
                evidence: ev(
                    format!(
                        "receives {} from sockets and writes {} to {what} through user memory over {span}",
                        human(rate(f.socket_read as f64, window)),
                        human(rate(if to_socket { f.socket_write } else { f.file_write } as f64, window)),
                    ),
                    &[
                        ("socket_read_bytes_per_second", rate(f.socket_read as f64, window)),
                        (
                            if to_socket {
                                "socket_write_bytes_per_second"
                            } else {
                                "file_write_bytes_per_second"
                            },
                            rate(if to_socket { f.socket_write } else { f.file_write } as f64, window),
                        ),
                        ("copied_bytes_avoidable_per_second", rate(2.0 * b, window)),
                    ],
                ),
                estimated_cpu_seconds_saved_per_second: saved,
                below_threshold: false,
            });
            socket_read -= b;
            *sink -= b;
        }
    }
    if !file_first {
        try_sendfile(&mut file_read, &mut socket_write, &mut out);
    }

    // file -> file through read() + write(): copy_file_range.
    if let Some(b) = (Pair {
        src: file_read,
        sink: file_write,
    })
    .matched(th, window)
    {
        // One copy_file_range() replaces a read() + write() pair, and the filesystem may
        // share extents (reflink) or copy in the kernel.
        let reads = f.file_read_calls as f64 * (b / f.file_read as f64);
        out.push(Finding {
            pattern: "copy_file_range".into(),
            recommendation: "copy files with copy_file_range() (or FICLONE on btrfs/XFS) instead of read() + write()".into(),
            evidence: ev(
                format!(
                    "reads {} from files and writes {} to files through user memory over {span}",
                    human(rate(f.file_read as f64, window)),
                    human(rate(f.file_write as f64, window)),
                ),
                &[
                    ("file_read_bytes_per_second", rate(f.file_read as f64, window)),
                    ("file_write_bytes_per_second", rate(f.file_write as f64, window)),
                    ("copied_bytes_avoidable_per_second", rate(2.0 * b, window)),
                    ("syscalls_avoidable_per_second", reads / window),
                ],
            ),
            estimated_cpu_seconds_saved_per_second: (copy_s(2.0 * b) + calls_s(reads)) / window,
            below_threshold: false,
        });
        file_read -= b;
        let _ = file_read;
    }

    // mmap() + write() to a socket: the write copies the mapped pages once; sendfile not.
    let mapped = p.pagecache.mmap_faults as f64 * PAGE;
    if mapped > 0.0
        && socket_write > 0.0
        && rate(socket_write, window) >= th.min_bytes_per_second
        && rate(mapped, window) >= th.min_bytes_per_second * th.min_ratio
    {
        out.push(Finding {
            pattern: "mmap_sendfile".into(),
            recommendation: "send mapped files with sendfile() instead of mmap() + write(): the write still copies every page from user memory".into(),
            evidence: ev(
                format!(
                    "faults in {} of mapped file pages and writes {} to sockets over {span}",
                    human(rate(mapped, window)),
                    human(rate(f.socket_write as f64, window)),
                ),
                &[
                    ("mmap_fault_bytes_per_second", rate(mapped, window)),
                    ("socket_write_bytes_per_second", rate(f.socket_write as f64, window)),
                    ("copied_bytes_avoidable_per_second", rate(socket_write, window)),
                ],
            ),
            estimated_cpu_seconds_saved_per_second: copy_s(socket_write) / window,
            below_threshold: false,
        });
    }

    // Large files streamed through the page cache with little reuse: O_DIRECT + AIO.
    let pc = &p.pagecache;
    let missed = pc.misses as f64 * PAGE;
    if let Some(ratio) = pc.hit_ratio
        && ratio <= th.directio_max_hit_ratio
        && f.file_read > 0
        && rate(missed, window) >= th.min_bytes_per_second
    {
        let size = directio_threshold(open_file_sizes);
        // Direct I/O lands in the user buffer: the page-cache -> user copy of every
        // missed page goes (and the cache is not churned).
        let avoided = missed.min(f.file_read as f64);
        out.push(Finding {
            pattern: "direct_io".into(),
            recommendation: format!(
                "read files of {} and more with O_DIRECT and asynchronous I/O (nginx `directio {}; aio on;`): they stream through the page cache with little reuse",
                human_size(size),
                human_size(size)
            ),
            evidence: ev(
                format!(
                    "page-cache hit ratio {:.0}% while missing {} over {span}{}",
                    100.0 * ratio,
                    human(rate(missed, window)),
                    if open_file_sizes.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; largest open file {}",
                            human_size(*open_file_sizes.iter().max().unwrap())
                        )
                    }
                ),
                &[
                    ("page_cache_hit_ratio", ratio),
                    ("page_cache_miss_bytes_per_second", rate(missed, window)),
                    ("file_read_bytes_per_second", rate(f.file_read as f64, window)),
                    ("suggested_directio_bytes", size as f64),
                ],
            ),
            estimated_cpu_seconds_saved_per_second: copy_s(avoided) / window,
            below_threshold: false,
        });
    }

    // Already zero-copy.
    let zero = p.zero_copy_bytes as f64;
    let copied = (p.cpu_copy_bytes.to_user + p.cpu_copy_bytes.from_user) as f64;
    if zero > 0.0
        && rate(zero, window) >= th.min_bytes_per_second
        && zero / (zero + copied) >= th.zero_copy_share
    {
        out.push(Finding {
            pattern: "zero_copy".into(),
            recommendation: "already zero-copy: nothing to change".into(),
            evidence: ev(
                format!(
                    "moves {} zero-copy ({:.0}% of the bytes it moves) over {span}",
                    human(rate(zero, window)),
                    100.0 * zero / (zero + copied)
                ),
                &[
                    ("zero_copy_bytes_per_second", rate(zero, window)),
                    ("zero_copy_share", zero / (zero + copied)),
                ],
            ),
            estimated_cpu_seconds_saved_per_second: 0.0,
            below_threshold: false,
        });
    }
    for f in &mut out {
        f.below_threshold =
            f.pattern != "zero_copy" && f.estimated_cpu_seconds_saved_per_second < th.min_cpu_saved;
    }
    out.sort_by(|a, b| {
        b.estimated_cpu_seconds_saved_per_second
            .total_cmp(&a.estimated_cpu_seconds_saved_per_second)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PagecacheRow, SyscallRow};

    const CAL: Calibration = Calibration {
        memcpy_bytes_per_second: 10e9,
        syscall_seconds: 100e-9,
    };
    const W: f64 = 10.0;
    const M: u64 = 1 << 20;

    /// A workload from (syscall, fd kind, calls, bytes) rows over a 10 s window.
    fn workload(rows: &[(&str, &str, u64, u64)]) -> ProcessRow {
        let mut p = ProcessRow::empty(1, "app".into(), false);
        for (s, k, calls, bytes) in rows {
            p.syscalls.push(SyscallRow {
                syscall: s.to_string().into(),
                fd_kind: k.to_string().into(),
                calls: *calls,
                bytes: *bytes,
                errors: 0,
                seconds: 0.0,
            });
            p.calls += calls;
            if READS.contains(s) {
                p.cpu_copy_bytes.to_user += bytes;
            } else if WRITES.contains(s) {
                p.cpu_copy_bytes.from_user += bytes;
            } else {
                p.zero_copy_bytes += bytes;
            }
        }
        p
    }

    fn patterns(p: &ProcessRow) -> Vec<String> {
        advise(p, W, &[], &CAL, &Thresholds::default())
            .iter()
            .map(|f| f.pattern.clone())
            .collect()
    }

    #[test]
    fn file_to_socket_through_user_memory_wants_sendfile() {
        // A static file server: 100 MiB read from files in 64 KiB reads, written to sockets.
        let p = workload(&[
            ("read", "file", 1600, 100 * M),
            ("write", "socket", 1600, 100 * M),
        ]);
        let f = advise(&p, W, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pattern, "sendfile");
        // Two copies of 100 MiB at 10 GB/s plus 1600 read() calls at 100 ns, over 10 s.
        let want = (2.0 * 100.0 * M as f64 / 10e9 + 1600.0 * 100e-9) / W;
        assert!((f[0].estimated_cpu_seconds_saved_per_second - want).abs() < 1e-12);
        assert_eq!(
            f[0].evidence.figures["file_read_bytes_per_second"],
            10.0 * M as f64
        );
        assert!(f[0].evidence.summary.contains("10.0 MiB/s"));
        // sendto and sendmsg count as socket writes too.
        let p = workload(&[
            ("pread64", "file", 100, 50 * M),
            ("sendmsg", "socket", 100, 30 * M),
            ("sendto", "socket", 100, 20 * M),
        ]);
        assert_eq!(patterns(&p), ["sendfile"]);
    }

    #[test]
    fn reading_files_and_writing_small_logs_is_not_flagged() {
        let p = workload(&[
            ("read", "file", 10_000, 500 * M),
            ("write", "file", 1000, M / 10),
            ("write", "socket", 100, M / 100),
        ]);
        assert!(patterns(&p).is_empty(), "{:?}", patterns(&p));
    }

    #[test]
    fn small_flows_are_below_the_rate_threshold() {
        let p = workload(&[("read", "file", 10, M), ("write", "socket", 10, M)]);
        assert!(patterns(&p).is_empty());
        let th = Thresholds {
            min_bytes_per_second: 1000.0,
            ..Thresholds::default()
        };
        assert_eq!(advise(&p, W, &[], &CAL, &th).len(), 1);
    }

    #[test]
    fn relays_want_splice() {
        let proxy = workload(&[
            ("recvfrom", "socket", 1000, 80 * M),
            ("sendto", "socket", 1000, 80 * M),
        ]);
        let f = advise(&proxy, W, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pattern, "splice_socket_to_socket");
        let want = 2.0 * 80.0 * M as f64 / 10e9 / W;
        assert!((f[0].estimated_cpu_seconds_saved_per_second - want).abs() < 1e-12);
        let sink = workload(&[
            ("read", "socket", 1000, 80 * M),
            ("write", "file", 1000, 70 * M),
        ]);
        assert_eq!(patterns(&sink), ["splice_socket_to_file"]);
    }

    #[test]
    fn a_proxy_already_using_splice_is_reported_as_zero_copy() {
        let p = workload(&[
            ("splice", "socket->pipe", 2000, 100 * M),
            ("splice", "pipe->socket", 2000, 100 * M),
            ("recvfrom", "socket", 100, M / 10),
            ("sendto", "socket", 100, M / 10),
        ]);
        let f = advise(&p, W, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pattern, "zero_copy");
        assert_eq!(f[0].estimated_cpu_seconds_saved_per_second, 0.0);
        assert!(f[0].evidence.figures["zero_copy_share"] > 0.99);
    }

    #[test]
    fn file_to_file_wants_copy_file_range() {
        let p = workload(&[
            ("read", "file", 800, 50 * M),
            ("write", "file", 800, 50 * M),
        ]);
        assert_eq!(patterns(&p), ["copy_file_range"]);
    }

    #[test]
    fn a_flow_is_claimed_by_one_pattern_only() {
        // Files to sockets and nothing else: one sendfile finding, no splice or
        // copy_file_range from the same bytes.
        let p = workload(&[
            ("read", "file", 800, 50 * M),
            ("write", "socket", 800, 50 * M),
            ("recvfrom", "socket", 10, M / 100),
        ]);
        assert_eq!(patterns(&p), ["sendfile"]);
        // A proxy that also reads a few files: the relay wins the socket writes.
        let p = workload(&[
            ("recvfrom", "socket", 800, 90 * M),
            ("sendto", "socket", 800, 90 * M),
            ("read", "file", 80, 9 * M),
        ]);
        assert_eq!(patterns(&p), ["splice_socket_to_socket"]);
    }

    #[test]
    fn mmap_and_write_to_a_socket_wants_sendfile() {
        let mut p = workload(&[("write", "socket", 400, 40 * M)]);
        p.pagecache.mmap_faults = 40 * M / 4096;
        let f = advise(&p, W, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pattern, "mmap_sendfile");
        assert!(f[0].estimated_cpu_seconds_saved_per_second > 0.0);
    }

    #[test]
    fn streamed_large_files_with_a_poor_hit_ratio_want_direct_io() {
        let mut p = workload(&[("read", "file", 4000, 400 * M)]);
        p.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
            lookups: 400 * M / 4096,
            added: 390 * M / 4096,
            write_added: 0,
            mmap_faults: 0,
            dirtied: 0,
        });
        let sizes = [2 * M, 3 * 1024 * M, 700 * M];
        let f = advise(&p, W, &sizes, &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pattern, "direct_io");
        // The smallest large open file is 700 MiB: directio 512m sends it and the 3 GiB one
        // direct and leaves the 2 MiB file cached.
        assert_eq!(
            f[0].evidence.figures["suggested_directio_bytes"],
            512.0 * M as f64
        );
        assert!(f[0].recommendation.contains("directio 512m"));
        // A well-cached workload is not flagged.
        p.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
            lookups: 400 * M / 4096,
            added: 4 * M / 4096,
            mmap_faults: 0,
            dirtied: 0,
            write_added: 0,
        });
        assert!(patterns(&p).is_empty());
        // A writer whose pages were all added by its writes (dd of=FILE, cp of a cached
        // file) reads from the cache: not flagged, however many pages it added.
        p.pagecache = PagecacheRow::from_stats(&copyscope_common::PagecacheStats {
            lookups: 400 * M / 4096,
            added: 800 * M / 4096,
            write_added: 800 * M / 4096,
            mmap_faults: 0,
            dirtied: 800 * M / 4096,
        });
        assert!(patterns(&p).is_empty(), "{:?}", patterns(&p));
    }

    #[test]
    fn findings_under_the_minimum_saving_are_marked_and_zero_copy_never_is() {
        // A cp of an 8 MiB file in 4 ms: read + write, file to file.
        let p = workload(&[("read", "file", 128, 8 * M), ("write", "file", 128, 8 * M)]);
        let f = advise(&p, 0.004, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pattern, "copy_file_range");
        assert!(
            !f[0].below_threshold,
            "4 GiB/s of copies save more than 0.1% of a CPU"
        );
        assert!(
            f[0].evidence.summary.ends_with("over 4.0 ms"),
            "{}",
            f[0].evidence.summary
        );
        let th = Thresholds {
            min_cpu_saved: 10.0,
            ..Thresholds::default()
        };
        let f = advise(&p, 0.004, &[], &CAL, &th);
        assert!(f[0].below_threshold, "{f:?}");
        let zero = workload(&[("sendfile64", "file->socket", 10, 400 * M)]);
        let f = advise(&zero, W, &[], &CAL, &th);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pattern, "zero_copy");
        assert!(!f[0].below_threshold);
    }

    #[test]
    fn windows_under_a_second_are_said_in_milliseconds() {
        assert_eq!(span(0.0000004), "0.0 ms");
        assert_eq!(span(0.0035), "3.5 ms");
        assert_eq!(span(0.25), "250 ms");
        assert_eq!(span(1.0), "1.0 s");
        assert_eq!(span(12.34), "12.3 s");
    }

    #[test]
    fn directio_threshold_defaults_to_4m() {
        assert_eq!(directio_threshold(&[]), 4 * M);
        assert_eq!(directio_threshold(&[100, M]), 4 * M);
        assert_eq!(directio_threshold(&[5 * M]), 4 * M);
        assert_eq!(directio_threshold(&[64 * M + 1, 1024 * M]), 64 * M);
    }

    #[test]
    fn direct_io_and_zero_copy_calls_are_not_copies() {
        let p = workload(&[
            ("read", "file_direct", 100, 100 * M),
            ("write", "socket", 100, 100 * M),
        ]);
        assert!(!patterns(&p).iter().any(|x| x == "sendfile"));
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(Thresholds::default().check().is_ok());
        for bad in [
            Thresholds {
                min_ratio: 1.5,
                ..Thresholds::default()
            },
            Thresholds {
                min_ratio: 0.0,
                ..Thresholds::default()
            },
            Thresholds {
                min_bytes_per_second: -1.0,
                ..Thresholds::default()
            },
            Thresholds {
                zero_copy_share: f64::NAN,
                ..Thresholds::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
