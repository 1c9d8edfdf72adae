//! Human-readable tables.

use std::fmt::Write as _;

use crate::model::Snapshot;

/// Bytes with a binary unit, three significant figures.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn table(s: &Snapshot) -> String {
    let mut o = String::new();
    let methods: Vec<_> = s
        .probes
        .iter()
        .filter(|p| p.attached)
        .map(|p| {
            format!(
                "{}/{}={}",
                p.family,
                p.hook,
                p.method.as_deref().unwrap_or("-")
            )
        })
        .collect();
    let _ = writeln!(
        o,
        "copyscope snapshot: {:.2} s, kernel {}",
        s.duration_seconds, s.kernel
    );
    let _ = writeln!(o, "probes: {}", methods.join(" "));
    let copy: Vec<_> = s
        .cpu_copy_method
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !copy.is_empty() {
        let _ = writeln!(o, "cpu copies measured by: {}", copy.join(" "));
    }
    let dropped: Vec<_> = s
        .dropped
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !dropped.is_empty() {
        let _ = writeln!(o, "DROPPED in the kernel: {}", dropped.join(" "));
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>8} {:<16} {:>10} {:>10} {:>13} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9}",
        "PID",
        "COMM",
        "SYSCALLS",
        "MODE-SW",
        "CTX-SW(V/I)",
        "COPY>USER",
        "COPY<USER",
        "ZERO-COPY",
        "DIRECT-IO",
        "CACHE-HIT",
        "SYS-TIME"
    );
    for p in &s.processes {
        let comm = if p.exited {
            format!("{}*", p.comm)
        } else {
            p.comm.clone()
        };
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>10} {:>10} {:>13} {:>11} {:>11} {:>11} {:>11} {:>9} {:>8.3}s",
            p.pid,
            comm,
            p.calls,
            p.mode_switches,
            format!(
                "{}/{}",
                p.context_switches.voluntary, p.context_switches.involuntary
            ),
            bytes(p.cpu_copy_bytes.to_user),
            bytes(p.cpu_copy_bytes.from_user),
            bytes(p.zero_copy_bytes),
            bytes(p.direct_io_bytes),
            p.page_cache
                .hit_ratio
                .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0)),
            p.syscall_seconds
        );
        for c in &p.syscalls {
            let _ = writeln!(
                o,
                "{:>8}   {:<16} {:<14} {:>10} calls {:>11} {:>8.3}s{}",
                "",
                c.syscall,
                c.fd_kind,
                c.calls,
                bytes(c.bytes),
                c.seconds,
                if c.errors > 0 {
                    format!("  {} errors", c.errors)
                } else {
                    String::new()
                }
            );
        }
    }
    if s.processes.is_empty() {
        let _ = writeln!(o, "(no counted syscalls in this window)");
    }
    if !s.bpf_stats.is_empty() {
        let _ = writeln!(o, "\ncopyscope's programs in this window:");
        for b in &s.bpf_stats {
            let per = if b.run_count > 0 {
                b.run_time_ns as f64 / b.run_count as f64
            } else {
                0.0
            };
            let _ = writeln!(
                o,
                "  {:<16} {:>12} runs {:>8.1} ns/run",
                b.name, b.run_count, per
            );
        }
    }
    if s.processes.iter().any(|p| p.exited) {
        let _ = writeln!(o, "\n* exited during the window; counts are final");
    }
    if !s.advice.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "ADVICE (estimated CPU saved, from this host's calibration)"
        );
        for a in &s.advice {
            let who = match a.pid {
                Some(pid) => format!("{pid} {}", a.comm),
                None => a.comm.clone(),
            };
            let f = &a.finding;
            let _ = writeln!(
                o,
                "  {who}: {} -> saves {:.1}% of a CPU\n    {}\n    evidence: {}",
                f.pattern,
                100.0 * f.estimated_cpu_seconds_saved_per_second,
                f.recommendation,
                f.evidence.summary
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 * 1024 * 1024), "200 MiB");
    }
}
