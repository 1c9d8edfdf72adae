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

fn human_bytes(bytes: f64) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes / MIB)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
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

/// One pattern of the advisor: the README's table ("The zero-copy advisor"), row by row.
pub struct Rule {
    /// What the workload was seen doing (`pattern` in the JSON and the metrics).
    pub pattern: &'static str,
    /// Stable id of what the finding recommends: the `recommendation` label of
    /// `copyscope_advice_info` (the sentence, with its figures, is in the JSON only).
    pub id: &'static str,
    /// The workload already does what the advisor would recommend: the finding saves
    /// nothing and is never below the minimum saving.
    pub already: bool,
    check: fn(&mut Scan) -> Option<Advice>,
}

/// The rules, in the order they claim bytes (see [`advise`]).
pub static RULES: [Rule; 9] = [
    Rule {
        pattern: "sendfile",
        id: "sendfile",
        already: false,
        check: sendfile,
    },
    Rule {
        pattern: "splice_socket_to_socket",
        id: "splice",
        already: false,
        check: splice_socket_to_socket,
    },
    Rule {
        pattern: "splice_socket_to_file",
        id: "splice",
        already: false,
        check: splice_socket_to_file,
    },
    Rule {
        pattern: "copy_file_range",
        id: "copy_file_range",
        already: false,
        check: copy_file_range,
    },
    Rule {
        pattern: "mmap_sendfile",
        id: "sendfile",
        already: false,
        check: mmap_sendfile,
    },
    Rule {
        pattern: "msg_zerocopy",
        id: "msg_zerocopy",
        already: false,
        check: msg_zerocopy,
    },
    Rule {
        pattern: "direct_io",
        id: "o_direct_async",
        already: false,
        check: direct_io,
    },
    Rule {
        pattern: "zero_copy",
        id: "none",
        already: true,
        check: zero_copy,
    },
    Rule {
        pattern: "direct_io_async",
        id: "none",
        already: true,
        check: direct_io_async,
    },
];

/// The recommendation id of a finding's pattern (the pattern itself for one no rule has).
pub fn recommendation_id(pattern: &str) -> &str {
    RULES
        .iter()
        .find(|r| r.pattern == pattern)
        .map_or(pattern, |r| r.id)
}

/// What a rule found: the finding without its pattern.
struct Advice {
    recommendation: String,
    evidence: Evidence,
    saved: f64,
}

/// One workload's window as the rules see it, with the buffered bytes no rule has
/// claimed yet.
struct Scan<'a> {
    p: &'a ProcessRow,
    f: Flows,
    window: f64,
    open_file_sizes: &'a [u64],
    cal: &'a Calibration,
    th: &'a Thresholds,
    /// Written out only into a finding's summary: most windows have none.
    span: Span,
    socket_write: f64,
    file_write: f64,
    file_read: f64,
    socket_read: f64,
}

impl Scan<'_> {
    fn copy_s(&self, bytes: f64) -> f64 {
        bytes / self.cal.memcpy_bytes_per_second
    }

    fn calls_s(&self, calls: f64) -> f64 {
        calls * self.cal.syscall_seconds
    }

    fn ev(&self, summary: String, figures: &[(&str, f64)]) -> Evidence {
        Evidence {
            window_seconds: self.window,
            summary,
            figures: figures.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn rate(&self, bytes: f64) -> f64 {
        rate(bytes, self.window)
    }

    fn matched(&self, src: f64, sink: f64) -> Option<f64> {
        Pair { src, sink }.matched(self.th, self.window)
    }
}

/// Every finding for one workload's window, biggest saving first.
///
/// The rules run in [`RULES`]' order, except that sendfile runs after the two splice
/// rules when the workload reads more from sockets than from files: socket writes and
/// file writes each feed at most one pattern, and the larger source claims them first.
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
    let mut scan = Scan {
        p,
        f,
        window,
        open_file_sizes,
        cal,
        th,
        span: Span(window),
        socket_write: f.socket_write as f64,
        file_write: f.file_write as f64,
        file_read: f.file_read as f64,
        socket_read: f.socket_read as f64,
    };
    let mut order: [&Rule; RULES.len()] = std::array::from_fn(|i| &RULES[i]);
    if scan.file_read < scan.socket_read {
        // sendfile, splice, splice -> splice, splice, sendfile.
        order[..3].rotate_left(1);
    }
    for rule in order {
        if let Some(a) = (rule.check)(&mut scan) {
            out.push(Finding {
                pattern: rule.pattern.into(),
                recommendation: a.recommendation,
                evidence: a.evidence,
                estimated_cpu_seconds_saved_per_second: a.saved,
                below_threshold: !rule.already && a.saved < th.min_cpu_saved,
            });
        }
    }
    out.sort_by(|a, b| {
        b.estimated_cpu_seconds_saved_per_second
            .total_cmp(&a.estimated_cpu_seconds_saved_per_second)
    });
    out
}

/// file -> socket through read() + write()/send(): sendfile.
fn sendfile(s: &mut Scan) -> Option<Advice> {
    let b = s.matched(s.file_read, s.socket_write)?;
    let f = s.f;
    // Each read() goes; each write() becomes a sendfile(): two copies and the reads'
    // mode switches avoided.
    let reads = f.file_read_calls as f64 * (b / f.file_read as f64);
    let saved = (s.copy_s(2.0 * b) + s.calls_s(reads)) / s.window;
    s.file_read -= b;
    s.socket_write -= b;
    Some(Advice {
        recommendation: "serve files to sockets with sendfile() (nginx `sendfile on;`, Java FileChannel.transferTo, Go io.Copy from *os.File to *net.TCPConn) instead of read() + write()".into(),
        evidence: s.ev(
            format!(
                "reads {} from files and writes {} to sockets through user memory ({:.0}% alike) over {}; {:.0} read() calls/s",
                human(s.rate(f.file_read as f64)),
                human(s.rate(f.socket_write as f64)),
                100.0 * b / f.file_read.max(f.socket_write) as f64,
                s.span,
                reads / s.window,
            ),
            &[
                ("file_read_bytes_per_second", s.rate(f.file_read as f64)),
                ("socket_write_bytes_per_second", s.rate(f.socket_write as f64)),
                ("copied_bytes_avoidable_per_second", s.rate(2.0 * b)),
                ("syscalls_avoidable_per_second", reads / s.window),
            ],
        ),
        saved,
    })
}

fn splice_socket_to_socket(s: &mut Scan) -> Option<Advice> {
    splice(s, true)
}

fn splice_socket_to_file(s: &mut Scan) -> Option<Advice> {
    splice(s, false)
}

/// socket -> socket and socket -> file relays through recv() + write()/send(): splice.
fn splice(s: &mut Scan, to_socket: bool) -> Option<Advice> {
    let sink = if to_socket {
        s.socket_write
    } else {
        s.file_write
    };
    let b = s.matched(s.socket_read, sink)?;
    let f = s.f;
    // splice() needs a call per hop too: copies avoided, not mode switches.
    let saved = s.copy_s(2.0 * b) / s.window;
    let (what, rec) = if to_socket {
        (
            "sockets",
            "relay socket to socket with splice() through a pipe (HAProxy `option splice-auto`, Linux `splice(2)`) instead of recv() + send()",
        )
    } else {
        (
            "files",
            "write received data to files with splice() through a pipe instead of recv() + write()",
        )
    };
    let written = if to_socket {
        f.socket_write
    } else {
        f.file_write
    } as f64;
    s.socket_read -= b;
    if to_socket {
        s.socket_write -= b;
    } else {
        s.file_write -= b;
    }
    Some(Advice {
        recommendation: rec.into(),
        evidence: s.ev(
            format!(
                "receives {} from sockets and writes {} to {what} through user memory over {}",
                human(s.rate(f.socket_read as f64)),
                human(s.rate(written)),
                s.span,
            ),
            &[
                ("socket_read_bytes_per_second", s.rate(f.socket_read as f64)),
                (
                    if to_socket {
                        "socket_write_bytes_per_second"
                    } else {
                        "file_write_bytes_per_second"
                    },
                    s.rate(written),
                ),
                ("copied_bytes_avoidable_per_second", s.rate(2.0 * b)),
            ],
        ),
        saved,
    })
}

/// file -> file through read() + write(): copy_file_range.
fn copy_file_range(s: &mut Scan) -> Option<Advice> {
    let b = s.matched(s.file_read, s.file_write)?;
    let f = s.f;
    // One copy_file_range() replaces a read() + write() pair, and the filesystem may
    // share extents (reflink) or copy in the kernel.
    let reads = f.file_read_calls as f64 * (b / f.file_read as f64);
    s.file_read -= b;
    Some(Advice {
        recommendation: "copy files with copy_file_range() (or FICLONE on btrfs/XFS) instead of read() + write()".into(),
        evidence: s.ev(
            format!(
                "reads {} from files and writes {} to files through user memory over {}",
                human(s.rate(f.file_read as f64)),
                human(s.rate(f.file_write as f64)),
                s.span,
            ),
            &[
                ("file_read_bytes_per_second", s.rate(f.file_read as f64)),
                ("file_write_bytes_per_second", s.rate(f.file_write as f64)),
                ("copied_bytes_avoidable_per_second", s.rate(2.0 * b)),
                ("syscalls_avoidable_per_second", reads / s.window),
            ],
        ),
        saved: (s.copy_s(2.0 * b) + s.calls_s(reads)) / s.window,
    })
}

/// mmap() + write() to a socket: the write copies the mapped pages once; sendfile not.
/// It claims the socket writes it covers.
fn mmap_sendfile(s: &mut Scan) -> Option<Advice> {
    let mapped = s.p.pagecache.mmap_faults as f64 * PAGE;
    let socket_write = s.socket_write;
    if !(mapped > 0.0
        && socket_write > 0.0
        && s.rate(socket_write) >= s.th.min_bytes_per_second
        && s.rate(mapped) >= s.th.min_bytes_per_second * s.th.min_ratio)
    {
        return None;
    }
    s.socket_write = 0.0;
    Some(Advice {
        recommendation: "send mapped files with sendfile() instead of mmap() + write(): the write still copies every page from user memory".into(),
        evidence: s.ev(
            format!(
                "faults in {} of mapped file pages and writes {} to sockets over {}",
                human(s.rate(mapped)),
                human(s.rate(s.f.socket_write as f64)),
                s.span,
            ),
            &[
                ("mmap_fault_bytes_per_second", s.rate(mapped)),
                ("socket_write_bytes_per_second", s.rate(s.f.socket_write as f64)),
                ("copied_bytes_avoidable_per_second", s.rate(socket_write)),
            ],
        ),
        saved: s.copy_s(socket_write) / s.window,
    })
}

/// The bytes per call above which a send is worth MSG_ZEROCOPY: the kernel's
/// Documentation/networking/msg_zerocopy.rst puts the break-even around 10 KB (pinning
/// pages and reading the completion cost more than a copy below it).
pub const MSG_ZEROCOPY_MIN_SEND: f64 = 10.0 * 1024.0;

/// Large sends from user memory to sockets that no rule above claimed (their data was
/// not read from a file or a socket: computed, or from anonymous memory): MSG_ZEROCOPY
/// or io_uring SEND_ZC. Sends already made zero-copy are not socket writes.
fn msg_zerocopy(s: &mut Scan) -> Option<Advice> {
    let f = s.f;
    let per_call = f.socket_write as f64 / f.socket_write_calls.max(1) as f64;
    let b = s.socket_write;
    if !(b > 0.0 && per_call > MSG_ZEROCOPY_MIN_SEND && s.rate(b) >= s.th.min_bytes_per_second) {
        return None;
    }
    s.socket_write = 0.0;
    Some(Advice {
        recommendation: "send large buffers to TCP and UDP sockets with MSG_ZEROCOPY (SO_ZEROCOPY, completions read from the error queue) or io_uring SEND_ZC instead of copying them into the socket".into(),
        evidence: s.ev(
            format!(
                "writes {} to sockets from user memory, {} per call on average, over {}",
                human(s.rate(b)),
                human_bytes(per_call),
                s.span,
            ),
            &[
                ("socket_write_bytes_per_second", s.rate(f.socket_write as f64)),
                ("socket_write_bytes_per_call", per_call),
                ("copied_bytes_avoidable_per_second", s.rate(b)),
            ],
        ),
        // The copy into the socket goes; the calls stay (and the completions add a few).
        saved: s.copy_s(b) / s.window,
    })
}

/// Large files streamed through the page cache with little reuse: O_DIRECT + AIO.
fn direct_io(s: &mut Scan) -> Option<Advice> {
    let pc = &s.p.pagecache;
    let missed = pc.misses as f64 * PAGE;
    let ratio = pc.hit_ratio?;
    if !(ratio <= s.th.directio_max_hit_ratio
        && s.f.file_read > 0
        && s.rate(missed) >= s.th.min_bytes_per_second)
    {
        return None;
    }
    let size = directio_threshold(s.open_file_sizes);
    // Direct I/O lands in the user buffer: the page-cache -> user copy of every missed
    // page goes (and the cache is not churned).
    let avoided = missed.min(s.f.file_read as f64);
    Some(Advice {
        recommendation: format!(
            "read files of {} and more with O_DIRECT and asynchronous I/O (nginx `directio {}; aio on;`): they stream through the page cache with little reuse",
            human_size(size),
            human_size(size)
        ),
        evidence: s.ev(
            format!(
                "page-cache hit ratio {:.0}% while missing {} over {}{}",
                100.0 * ratio,
                human(s.rate(missed)),
                s.span,
                if s.open_file_sizes.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; largest open file {}",
                        human_size(*s.open_file_sizes.iter().max().unwrap())
                    )
                }
            ),
            &[
                ("page_cache_hit_ratio", ratio),
                ("page_cache_miss_bytes_per_second", s.rate(missed)),
                ("file_read_bytes_per_second", s.rate(s.f.file_read as f64)),
                ("suggested_directio_bytes", size as f64),
            ],
        ),
        saved: s.copy_s(avoided) / s.window,
    })
}

/// Already zero-copy.
fn zero_copy(s: &mut Scan) -> Option<Advice> {
    let p = s.p;
    let zero = p.zero_copy_bytes as f64;
    let copied = (p.cpu_copy_bytes.to_user + p.cpu_copy_bytes.from_user) as f64;
    if !(zero > 0.0
        && s.rate(zero) >= s.th.min_bytes_per_second
        && zero / (zero + copied) >= s.th.zero_copy_share)
    {
        return None;
    }
    Some(Advice {
        recommendation: "already zero-copy: nothing to change".into(),
        evidence: s.ev(
            format!(
                "moves {} zero-copy ({:.0}% of the bytes it moves) over {}",
                human(s.rate(zero)),
                100.0 * zero / (zero + copied),
                s.span,
            ),
            &[
                ("zero_copy_bytes_per_second", s.rate(zero)),
                ("zero_copy_share", zero / (zero + copied)),
            ],
        ),
        saved: 0.0,
    })
}

/// The asynchronous reads: io_uring's and Linux AIO's.
const ASYNC_READS: &[&str] = &["io_uring_read", "aio_read"];

/// Already reading files with O_DIRECT and asynchronous I/O (io_uring or Linux AIO): what
/// the `direct_io` rule recommends.
fn direct_io_async(s: &mut Scan) -> Option<Advice> {
    let direct: u64 =
        s.p.syscalls
            .iter()
            .filter(|r| &*r.fd_kind == "file_direct" && ASYNC_READS.contains(&&*r.syscall))
            .map(|r| r.bytes)
            .sum();
    let direct = direct as f64;
    if !(direct > 0.0 && s.rate(direct) >= s.th.min_bytes_per_second) {
        return None;
    }
    Some(Advice {
        recommendation: "already O_DIRECT with asynchronous I/O: nothing to change".into(),
        evidence: s.ev(
            format!(
                "reads {} from files with O_DIRECT through io_uring or AIO ({} direct I/O in all) over {}",
                human(s.rate(direct)),
                human(s.rate(s.p.direct_io_bytes as f64)),
                s.span,
            ),
            &[
                ("direct_async_read_bytes_per_second", s.rate(direct)),
                ("direct_io_bytes_per_second", s.rate(s.p.direct_io_bytes as f64)),
            ],
        ),
        saved: 0.0,
    })
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
    fn large_sends_from_user_memory_want_msg_zerocopy() {
        // 200 MiB of computed data sent in 64 KiB sends: one copy each, into the socket.
        let p = workload(&[
            ("sendmsg", "socket", 1600, 100 * M),
            ("write", "socket", 1600, 100 * M),
        ]);
        let f = advise(&p, W, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pattern, "msg_zerocopy");
        assert_eq!(recommendation_id(&f[0].pattern), "msg_zerocopy");
        let want = 200.0 * M as f64 / 10e9 / W;
        assert!((f[0].estimated_cpu_seconds_saved_per_second - want).abs() < 1e-12);
        assert_eq!(
            f[0].evidence.figures["socket_write_bytes_per_call"],
            65536.0
        );
        assert!(f[0].evidence.summary.contains("64.0 KiB per call"), "{f:?}");
        // Small sends (a copy is cheaper than pinning and a completion): not flagged.
        let small = workload(&[("sendto", "socket", 100_000, 400 * M)]);
        assert!(patterns(&small).is_empty(), "{:?}", patterns(&small));
    }

    #[test]
    fn msg_zerocopy_gives_way_to_sendfile_and_splice_and_skips_zero_copy_sends() {
        // Data read from files and sent: sendfile saves both copies, it alone is advised.
        let p = workload(&[
            ("read", "file", 1600, 100 * M),
            ("sendto", "socket", 1600, 100 * M),
        ]);
        assert_eq!(patterns(&p), ["sendfile"]);
        // A relay: splice.
        let p = workload(&[
            ("recvfrom", "socket", 1600, 100 * M),
            ("sendto", "socket", 1600, 100 * M),
        ]);
        assert_eq!(patterns(&p), ["splice_socket_to_socket"]);
        // Mapped files: sendfile.
        let mut p = workload(&[("write", "socket", 400, 40 * M)]);
        p.pagecache.mmap_faults = 40 * M / 4096;
        assert_eq!(patterns(&p), ["mmap_sendfile"]);
        // Twice the file data sent: sendfile for the matched half, MSG_ZEROCOPY for the rest.
        let p = workload(&[
            ("read", "file", 800, 50 * M),
            ("sendto", "socket", 1600, 100 * M),
        ]);
        let f = advise(&p, W, &[], &CAL, &Thresholds::default());
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[1].pattern, "msg_zerocopy");
        assert_eq!(
            f[1].evidence.figures["copied_bytes_avoidable_per_second"],
            5.0 * M as f64
        );
        // Sends made with MSG_ZEROCOPY already are zero-copy, not socket writes.
        let p = workload(&[
            ("sendmsg_zerocopy", "socket", 1600, 100 * M),
            ("sendto_zerocopy", "socket", 1600, 100 * M),
        ]);
        assert_eq!(patterns(&p), ["zero_copy"]);
    }

    #[test]
    fn o_direct_reads_through_io_uring_or_aio_follow_the_advice_already() {
        for op in ["io_uring_read", "aio_read"] {
            let mut p = ProcessRow::empty(1, "db".into(), false);
            p.syscalls.push(SyscallRow {
                syscall: op.to_string().into(),
                fd_kind: "file_direct".to_string().into(),
                calls: 3200,
                bytes: 400 * M,
                errors: 0,
                seconds: 0.0,
            });
            p.direct_io_bytes = 400 * M;
            let th = Thresholds {
                min_cpu_saved: 10.0,
                ..Thresholds::default()
            };
            let f = advise(&p, W, &[], &CAL, &th);
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(f[0].pattern, "direct_io_async");
            assert_eq!(recommendation_id(&f[0].pattern), "none");
            assert_eq!(f[0].estimated_cpu_seconds_saved_per_second, 0.0);
            assert!(!f[0].below_threshold);
            assert_eq!(
                f[0].evidence.figures["direct_io_bytes_per_second"],
                40.0 * M as f64
            );
            assert!(f[0].evidence.summary.contains("40.0 MiB/s"), "{f:?}");
        }
        // Buffered io_uring reads are not direct I/O.
        let mut p = ProcessRow::empty(1, "db".into(), false);
        p.syscalls.push(SyscallRow {
            syscall: "io_uring_read".to_string().into(),
            fd_kind: "file".to_string().into(),
            calls: 3200,
            bytes: 400 * M,
            errors: 0,
            seconds: 0.0,
        });
        assert!(patterns(&p).is_empty(), "{:?}", patterns(&p));
    }

    #[test]
    fn the_rules_mirror_the_readme_table_with_stable_ids() {
        let readme = include_str!("../../README.md");
        let table = &readme[readme.find("## The zero-copy advisor").unwrap()..];
        let table = &table[..table.find("\n\n\"Similar").unwrap()];
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| `")).collect();
        assert_eq!(rows.len(), RULES.len(), "{rows:?}");
        for (rule, row) in RULES.iter().zip(&rows) {
            assert!(
                row.starts_with(&format!("| `{}` | `{}` |", rule.pattern, rule.id)),
                "{row}"
            );
        }
        let patterns: std::collections::BTreeSet<_> = RULES.iter().map(|r| r.pattern).collect();
        assert_eq!(patterns.len(), RULES.len(), "one rule per pattern");
        // The rotation in `advise` moves these three.
        assert_eq!(
            RULES[..3].iter().map(|r| r.pattern).collect::<Vec<_>>(),
            [
                "sendfile",
                "splice_socket_to_socket",
                "splice_socket_to_file"
            ]
        );
        assert_eq!(recommendation_id("no_such_pattern"), "no_such_pattern");
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
