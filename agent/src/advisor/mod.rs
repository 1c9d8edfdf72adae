//! The zero-copy advisor: from one workload's counts over a window, which zero-copy
//! interface would serve it better, the evidence, and the CPU it would save. Pure: the
//! calibration and the sizes of the files the workload has open are passed in.

use crate::model::ProcessRow;
/// The advisor's results are plain data, kept with the rest of it.
pub use crate::model::{Calibration, Evidence, Finding};

mod already;
mod flows;
mod large_io;
mod relays;
#[cfg(test)]
mod tests;

use already::{direct_io_async, zero_copy};
pub use flows::{Flows, directio_threshold, span};
use flows::{Pair, Span, rate};
pub use large_io::MSG_ZEROCOPY_MIN_SEND;
use large_io::{direct_io, msg_zerocopy};
use relays::{
    copy_file_range, mmap_sendfile, sendfile, splice_socket_to_file, splice_socket_to_socket,
};

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
