//! The benchmark's figures: per method and cache state the median run, each method
//! relative to read()+write(), and the seeds' claims held against them. Pure.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Counts, Method, Run, Sink};
use crate::units::{Decimals, bytes_with};

#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub size: u64,
    pub runs: u32,
    pub to: Sink,
    pub buffer: u64,
    pub dir: String,
    pub kernel: String,
    /// Whether copyscope's probes counted the senders.
    pub counted: bool,
}

/// One method in one cache state: its median run.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub method: Method,
    pub cache: String,
    pub runs: usize,
    pub bytes_per_second: f64,
    pub seconds: f64,
    /// Of the fastest and slowest run.
    pub seconds_min: f64,
    pub seconds_max: f64,
    pub user_seconds: f64,
    pub system_seconds: f64,
    /// Sender CPU seconds per GiB moved.
    pub cpu_seconds_per_gib: f64,
    /// Throughput and CPU time relative to read()+write() in the same cache state.
    pub throughput_vs_read_write: Option<f64>,
    pub cpu_vs_read_write: Option<f64>,
    pub verified: Option<bool>,
    /// The median run's counts.
    pub counts: Option<Counts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Held,
    Partly,
    NotHeld,
    NotMeasured,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Partly => "partly held",
            Verdict::NotHeld => "did not hold",
            Verdict::NotMeasured => "not measured",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub claim: &'static str,
    pub verdict: Verdict,
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub lines: Vec<Line>,
    pub claims: Vec<Claim>,
    pub runs: Vec<Run>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const GIB: f64 = (1u64 << 30) as f64;

impl Report {
    pub fn new(setup: Setup, runs: Vec<Run>) -> Report {
        let mut keys: Vec<(String, Method)> = Vec::new();
        for r in &runs {
            let k = (r.cache.clone(), r.method);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let mut lines: Vec<Line> = keys
            .iter()
            .map(|(cache, method)| {
                let mut rs: Vec<&Run> = runs
                    .iter()
                    .filter(|r| &r.cache == cache && r.method == *method)
                    .collect();
                rs.sort_by(|a, b| a.sent.seconds.total_cmp(&b.sent.seconds));
                // The run whose time is the median (the lower middle for an even count).
                let mid = rs[(rs.len() - 1) / 2];
                let seconds = median(rs.iter().map(|r| r.sent.seconds).collect());
                let user = median(rs.iter().map(|r| r.sent.user_seconds).collect());
                let system = median(rs.iter().map(|r| r.sent.system_seconds).collect());
                let bytes = mid.sent.bytes as f64;
                Line {
                    method: *method,
                    cache: cache.clone(),
                    runs: rs.len(),
                    bytes_per_second: if seconds > 0.0 { bytes / seconds } else { 0.0 },
                    seconds,
                    seconds_min: rs[0].sent.seconds,
                    seconds_max: rs[rs.len() - 1].sent.seconds,
                    user_seconds: user,
                    system_seconds: system,
                    cpu_seconds_per_gib: if bytes > 0.0 {
                        (user + system) / (bytes / GIB)
                    } else {
                        0.0
                    },
                    throughput_vs_read_write: None,
                    cpu_vs_read_write: None,
                    verified: rs
                        .iter()
                        .try_fold(true, |ok, r| r.verified.map(|v| ok && v)),
                    counts: mid.counts,
                }
            })
            .collect();
        let base: Vec<Line> = lines
            .iter()
            .filter(|l| l.method == Method::ReadWrite)
            .cloned()
            .collect();
        for l in &mut lines {
            if let Some(b) = base.iter().find(|b| b.cache == l.cache) {
                let cpu = |l: &Line| l.user_seconds + l.system_seconds;
                l.throughput_vs_read_write =
                    (b.bytes_per_second > 0.0).then(|| l.bytes_per_second / b.bytes_per_second);
                l.cpu_vs_read_write = (cpu(b) > 0.0).then(|| cpu(l) / cpu(b));
            }
        }
        let claims = claims(&setup, &lines);
        Report {
            setup,
            lines,
            claims,
            runs,
        }
    }

    pub fn line(&self, cache: &str, m: Method) -> Option<&Line> {
        self.lines
            .iter()
            .find(|l| l.cache == cache && l.method == m)
    }

    /// The text report: one table per cache state, then the claims.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let mut o = String::new();
        let dest = match s.to {
            Sink::Tcp => "to a receiver over loopback TCP",
            Sink::Null => "to /dev/null",
            Sink::File => "to a second file",
        };
        let _ = writeln!(
            o,
            "copyscope bench: {} from {} {dest}, kernel {}, {} run{} each (median), buffer {}",
            bytes_with(s.size, Decimals::One),
            s.dir,
            s.kernel,
            s.runs,
            if s.runs == 1 { "" } else { "s" },
            bytes_with(s.buffer, Decimals::One),
        );
        let mut caches: Vec<&str> = Vec::new();
        for l in &self.lines {
            if !caches.contains(&l.cache.as_str()) {
                caches.push(&l.cache);
            }
        }
        for cache in caches {
            let _ = writeln!(o, "\n{cache} page cache");
            let _ = writeln!(
                o,
                "{:<16}{:>10}{:>7}{:>9}{:>8}{:>8}{:>7}{:>7}{:>9}{:>9}{:>11}{:>11}{:>11}{:>13}{:>11}{:>4}",
                "METHOD",
                "MB/s",
                "×R+W",
                "TIME s",
                "USER s",
                "SYS s",
                "CPU×",
                "s/GiB",
                "SYSCALLS",
                "MODE-SW",
                "CPU-COPIED",
                "ZERO-COPY",
                "O_DIRECT",
                "PC HIT/MISS",
                "CSW v/i",
                "OK"
            );
            for l in self.lines.iter().filter(|l| l.cache == cache) {
                let rel = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
                let c = l.counts;
                let cnt = |f: fn(&Counts) -> String| c.as_ref().map_or("-".into(), f);
                let _ = writeln!(
                    o,
                    "{:<16}{:>10.1}{:>7}{:>9.3}{:>8.3}{:>8.3}{:>7}{:>7.2}{:>9}{:>9}{:>11}{:>11}{:>11}{:>13}{:>11}{:>4}",
                    l.method.name(),
                    l.bytes_per_second / 1e6,
                    rel(l.throughput_vs_read_write),
                    l.seconds,
                    l.user_seconds,
                    l.system_seconds,
                    rel(l.cpu_vs_read_write),
                    l.cpu_seconds_per_gib,
                    cnt(|c| count(c.syscalls)),
                    cnt(|c| count(c.mode_switches)),
                    cnt(|c| bytes_with(c.cpu_copied(), Decimals::One)),
                    cnt(|c| bytes_with(c.zero_copy, Decimals::One)),
                    cnt(|c| bytes_with(c.direct_io, Decimals::One)),
                    cnt(|c| format!(
                        "{}/{}",
                        count(c.page_cache_hits),
                        count(c.page_cache_misses)
                    )),
                    cnt(|c| format!(
                        "{}/{}",
                        count(c.voluntary_switches),
                        count(c.involuntary_switches)
                    )),
                    match l.verified {
                        Some(true) => "✓",
                        Some(false) => "✗",
                        None => "-",
                    }
                );
            }
        }
        // io_uring reads are counted at their completion (the uring family, 5.18+); where
        // the kernel does not let it attach, say why the O_DIRECT column is empty.
        if s.counted
            && self.lines.iter().any(|l| {
                l.method == Method::DirectUring
                    && l.counts.as_ref().is_some_and(|c| c.direct_io == 0)
            })
        {
            let _ = writeln!(
                o,
                "\ndirect-uring reads through io_uring, which this kernel does not let copyscope \
                 count (the uring family needs io_uring:io_uring_complete with its request, \
                 5.18+): its O_DIRECT reads are not in the table, its sends are."
            );
        }
        if !s.counted {
            let _ = writeln!(
                o,
                "\n(no counts: copyscope's probes need root, or CAP_BPF and CAP_PERFMON)"
            );
        }
        let _ = writeln!(o, "\nThe claims, on this machine:");
        for c in &self.claims {
            let _ = writeln!(o, "- {}: {}. {}", c.claim, c.verdict.word(), c.evidence);
        }
        o
    }
}

/// 950, 12.3k, 4.1M.
fn count(v: u64) -> String {
    match v {
        0..1_000 => v.to_string(),
        1_000..1_000_000 => format!("{:.1}k", v as f64 / 1e3),
        _ => format!("{:.1}M", v as f64 / 1e6),
    }
}

/// A claim measured once per cache state: held when every measure reaches `held`, partly
/// when one reaches `partly`.
fn graded(
    claim: &'static str,
    measures: &[f64],
    (held, partly): (f64, f64),
    parts: Vec<String>,
    missing: &str,
) -> Claim {
    Claim {
        claim,
        verdict: if measures.is_empty() {
            Verdict::NotMeasured
        } else if measures.iter().all(|m| *m >= held) {
            Verdict::Held
        } else if measures.iter().any(|m| *m >= partly) {
            Verdict::Partly
        } else {
            Verdict::NotHeld
        },
        evidence: if parts.is_empty() {
            missing.into()
        } else {
            parts.join("; ")
        },
    }
}

fn claims(setup: &Setup, lines: &[Line]) -> Vec<Claim> {
    let line = |cache: &str, m: Method| lines.iter().find(|l| l.cache == cache && l.method == m);
    let caches: Vec<&str> = ["cold", "warm"]
        .into_iter()
        .filter(|c| line(c, Method::ReadWrite).is_some())
        .collect();
    vec![
        doubling(&line, &caches),
        transfer_to(&line, &caches),
        direct_io(&line),
        copies(setup, &line, &caches),
    ]
}

/// A method's median line for one cache state.
type LineOf<'a> = dyn Fn(&str, Method) -> Option<&'a Line> + 'a;

/// The claim "Zero-copy at least doubles transfer throughput."
fn doubling<'a>(line: &LineOf<'a>, caches: &[&str]) -> Claim {
    let mut parts = Vec::new();
    let mut ratios = Vec::new();
    for &c in caches {
        let best = [Method::Sendfile, Method::Splice]
            .into_iter()
            .filter_map(|m| line(c, m))
            .max_by(|a, b| a.bytes_per_second.total_cmp(&b.bytes_per_second));
        if let Some(b) = best {
            let r = b.throughput_vs_read_write.unwrap_or(0.0);
            ratios.push(r);
            parts.push(format!(
                "{c}: {} moved {r:.2}× read-write's bytes per second",
                b.method
            ));
        }
    }
    graded(
        "zero-copy at least doubles file-transfer throughput",
        &ratios,
        (2.0, 1.2),
        parts,
        "needs read-write and sendfile or splice",
    )
}

/// The claim "transferTo (sendfile) cut transfer time by about 65%."
fn transfer_to<'a>(line: &LineOf<'a>, caches: &[&str]) -> Claim {
    let mut parts = Vec::new();
    let mut cuts = Vec::new();
    for &c in caches {
        if let (Some(rw), Some(sf)) = (line(c, Method::ReadWrite), line(c, Method::Sendfile)) {
            let cut = 1.0 - sf.seconds / rw.seconds;
            cuts.push(cut);
            let cpu = sf.cpu_vs_read_write.map_or(String::new(), |v| {
                format!(", and {:.0}% less CPU", (1.0 - v) * 100.0)
            });
            parts.push(format!(
                "{c}: sendfile took {:.0}% less time{cpu}",
                cut * 100.0
            ));
        }
    }
    graded(
        "sendfile (Java's transferTo) cuts transfer time by about 65%",
        &cuts,
        (0.55, 0.2),
        parts,
        "needs read-write and sendfile",
    )
}

/// The claim "Huge files: bypass the page cache with O_DIRECT + async I/O."
fn direct_io<'a>(line: &LineOf<'a>) -> Claim {
    let (rw, d) = (
        line("cold", Method::ReadWrite),
        line("cold", Method::DirectUring),
    );
    match (rw, d) {
        (Some(rw), Some(d)) => {
            let tp = d.throughput_vs_read_write.unwrap_or(0.0);
            let cpu = d.cpu_vs_read_write.unwrap_or(f64::INFINITY);
            let cache = match (rw.counts, d.counts) {
                (Some(a), Some(b)) => Some((a.page_cache_misses, b.page_cache_misses)),
                _ => None,
            };
            let spared = cache.is_none_or(|(a, b)| b * 10 <= a.max(1));
            Claim {
                claim: "files read once should bypass the page cache with O_DIRECT + async I/O",
                verdict: if cpu < 1.0 && tp >= 0.8 && spared {
                    Verdict::Held
                } else if cpu < 1.0 || spared {
                    Verdict::Partly
                } else {
                    Verdict::NotHeld
                },
                evidence: format!(
                    "cold: O_DIRECT with io_uring moved {tp:.2}× read-write's bytes per second with {cpu:.2}× its CPU{}",
                    cache.map_or(String::new(), |(a, b)| format!(
                        ", and added {} pages to the page cache against read-write's {}",
                        count(b),
                        count(a)
                    ))
                ),
            }
        }
        _ => Claim {
            claim: "files read once should bypass the page cache with O_DIRECT + async I/O",
            verdict: Verdict::NotMeasured,
            evidence: "needs read-write and direct-uring with a cold cache".into(),
        },
    }
}

/// The mechanism the seeds draw: read()+write() copies every byte through the CPU
/// twice with four mode switches per chunk; sendfile copies none with two.
fn copies<'a>(setup: &Setup, line: &LineOf<'a>, caches: &[&str]) -> Claim {
    let mut parts = Vec::new();
    let mut ok = Vec::new();
    for &c in caches {
        if let (Some(rw), Some(sf)) = (line(c, Method::ReadWrite), line(c, Method::Sendfile))
            && let (Some(a), Some(b)) = (rw.counts, sf.counts)
        {
            let n = setup.size as f64;
            let (ca, cb) = (a.cpu_copied() as f64 / n, b.cpu_copied() as f64 / n);
            ok.push((1.8..=2.2).contains(&ca) && cb <= 0.05);
            parts.push(format!(
                "{c}: read-write copied {ca:.2} bytes per byte through the CPU with {} mode switches, sendfile {cb:.2} with {}",
                count(a.mode_switches),
                count(b.mode_switches)
            ));
        }
    }
    Claim {
        claim: "read()+write() copies each byte twice through the CPU, sendfile not at all",
        verdict: if ok.is_empty() {
            Verdict::NotMeasured
        } else if ok.iter().all(|v| *v) {
            Verdict::Held
        } else {
            Verdict::NotHeld
        },
        evidence: if parts.is_empty() {
            "needs copyscope's counts (root) of read-write and sendfile".into()
        } else {
            parts.join("; ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Sent;

    const SIZE: u64 = 1 << 30;

    fn run(method: Method, cache: &str, seconds: f64, cpu: f64, counts: Counts) -> Run {
        Run {
            method,
            cache: cache.into(),
            run: 1,
            sent: Sent {
                bytes: SIZE,
                seconds,
                user_seconds: cpu / 4.0,
                system_seconds: cpu * 3.0 / 4.0,
            },
            verified: Some(true),
            counts: Some(counts),
        }
    }

    fn setup() -> Setup {
        Setup {
            size: SIZE,
            runs: 1,
            to: Sink::Tcp,
            buffer: 128 << 10,
            dir: "/var/tmp".into(),
            kernel: "6.18".into(),
            counted: true,
        }
    }

    fn rw_counts(misses: u64) -> Counts {
        Counts {
            syscalls: 16_384,
            mode_switches: 32_768,
            cpu_copy_to_user: SIZE,
            cpu_copy_from_user: SIZE,
            page_cache_misses: misses,
            ..Counts::default()
        }
    }

    #[test]
    fn medians_relative_figures_and_a_claim_that_held() {
        let sf = Counts {
            zero_copy: SIZE,
            syscalls: 2,
            mode_switches: 4,
            ..Counts::default()
        };
        let runs = vec![
            run(Method::ReadWrite, "warm", 1.0, 0.8, rw_counts(0)),
            run(Method::ReadWrite, "warm", 1.2, 0.9, rw_counts(0)),
            run(Method::ReadWrite, "warm", 3.0, 1.0, rw_counts(0)),
            run(Method::Sendfile, "warm", 0.3, 0.2, sf),
        ];
        let r = Report::new(setup(), runs);
        let rw = r.line("warm", Method::ReadWrite).unwrap();
        assert_eq!(rw.runs, 3);
        assert_eq!(rw.seconds, 1.2);
        assert_eq!((rw.seconds_min, rw.seconds_max), (1.0, 3.0));
        let s = r.line("warm", Method::Sendfile).unwrap();
        assert!((s.throughput_vs_read_write.unwrap() - 4.0).abs() < 1e-9);
        assert!((s.cpu_vs_read_write.unwrap() - 0.2 / 0.9).abs() < 1e-9);
        assert_eq!(r.claims[0].verdict, Verdict::Held, "{:?}", r.claims[0]);
        assert_eq!(r.claims[1].verdict, Verdict::Held, "75% less time");
        assert_eq!(r.claims[2].verdict, Verdict::NotMeasured, "no cold runs");
        assert_eq!(r.claims[3].verdict, Verdict::Held, "{:?}", r.claims[3]);
        let t = r.table();
        assert!(t.contains("warm page cache"), "{t}");
        assert!(t.contains("sendfile"), "{t}");
        assert!(t.contains("4.00"), "{t}");
    }

    #[test]
    fn claims_that_did_not_hold_say_by_how_much() {
        let runs = vec![
            run(Method::ReadWrite, "cold", 1.0, 0.5, rw_counts(262_144)),
            run(
                Method::Splice,
                "cold",
                0.8,
                0.3,
                Counts {
                    zero_copy: SIZE,
                    ..Counts::default()
                },
            ),
            run(
                Method::Sendfile,
                "cold",
                0.9,
                0.3,
                Counts {
                    zero_copy: SIZE,
                    cpu_copy_to_user: SIZE / 2,
                    ..Counts::default()
                },
            ),
            run(
                Method::DirectUring,
                "cold",
                1.1,
                0.6,
                Counts {
                    direct_io: SIZE,
                    cpu_copy_from_user: SIZE,
                    ..Counts::default()
                },
            ),
        ];
        let r = Report::new(setup(), runs);
        assert_eq!(r.claims[0].verdict, Verdict::Partly);
        assert!(
            r.claims[0].evidence.contains("splice moved 1.25×"),
            "{:?}",
            r.claims[0]
        );
        assert_eq!(r.claims[1].verdict, Verdict::NotHeld, "10% is far from 65%");
        assert!(r.claims[1].evidence.contains("10% less time"));
        // More CPU, but the page cache spared: partly.
        assert_eq!(r.claims[2].verdict, Verdict::Partly, "{:?}", r.claims[2]);
        assert!(r.claims[2].evidence.contains("262.1k"), "{:?}", r.claims[2]);
        // sendfile copying half the bytes through the CPU breaks the mechanism.
        assert_eq!(r.claims[3].verdict, Verdict::NotHeld);
    }

    #[test]
    fn count_units() {
        assert_eq!(count(999), "999");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(4_100_000), "4.1M");
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
