//! The snapshot's table (`copyscope snapshot` without `--json`).

use std::fmt::Write as _;

use crate::{
    model::{ProcessAdvice, Snapshot},
    units::bytes,
};

pub fn table(s: &Snapshot) -> String {
    let mut o = String::new();
    header(&mut o, s);
    processes(&mut o, s);
    programs(&mut o, s);
    advice(&mut o, &s.advice);
    o
}

/// The window, the probes' methods, what the kernel dropped.
fn header(o: &mut String, s: &Snapshot) {
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
}

/// A line per process, and under it a line per syscall row.
fn processes(o: &mut String, s: &Snapshot) {
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
            p.pagecache
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
}

/// The empty window's note, the programs' run times, the note on exited processes.
fn programs(o: &mut String, s: &Snapshot) {
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
}

/// The advisor's findings, grouped.
fn advice(o: &mut String, advice: &[ProcessAdvice]) {
    let groups = advice_groups(advice);
    if !groups.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "ADVICE (estimated CPU saved, from this host's calibration)"
        );
        for g in &groups {
            let a = g[0];
            let f = &a.finding;
            let container = a
                .container_id
                .as_deref()
                .map(|c| format!(", container {}", &c[..c.len().min(12)]))
                .unwrap_or_default();
            if g.len() == 1 {
                let who = match a.pid {
                    Some(pid) => format!("{pid} {}{container}", a.comm),
                    None => format!("{}{container}", a.comm),
                };
                let _ = writeln!(
                    o,
                    "  {who}: {} -> saves {:.1}% of a CPU\n    {}\n    evidence: {}",
                    f.pattern,
                    100.0 * f.estimated_cpu_seconds_saved_per_second,
                    f.recommendation,
                    f.evidence.summary
                );
            } else {
                let total: f64 = g
                    .iter()
                    .map(|a| a.finding.estimated_cpu_seconds_saved_per_second)
                    .sum();
                let _ = writeln!(
                    o,
                    "  {} ({} processes{container}): {} -> saves {:.1}% of a CPU together\n    {}\n    evidence (the largest): {}",
                    a.comm,
                    g.len(),
                    f.pattern,
                    100.0 * total,
                    f.recommendation,
                    f.evidence.summary
                );
            }
        }
    }
}

/// The findings worth a line (above the minimum saving), one group per command,
/// container and pattern, biggest saving first: repeated short-lived processes (a `cp` in
/// a loop) are one line with their count.
fn advice_groups(advice: &[ProcessAdvice]) -> Vec<Vec<&ProcessAdvice>> {
    let mut groups: Vec<Vec<&ProcessAdvice>> = Vec::new();
    for a in advice.iter().filter(|a| !a.finding.below_threshold) {
        let same = |g: &&mut Vec<&ProcessAdvice>| {
            g[0].comm == a.comm
                && g[0].container_id == a.container_id
                && g[0].finding.pattern == a.finding.pattern
        };
        match groups.iter_mut().find(same) {
            Some(g) => g.push(a),
            None => groups.push(vec![a]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{loader::ProgramStat, model::ProbeRow, testing::RowBuilder};

    fn finding(pid: u32, comm: &str, pattern: &str, saved: f64, below: bool) -> ProcessAdvice {
        ProcessAdvice {
            pid: Some(pid),
            comm: comm.into(),
            container_id: None,
            finding: crate::advisor::Finding {
                pattern: pattern.into(),
                recommendation: format!("use {pattern}"),
                evidence: crate::advisor::Evidence {
                    window_seconds: 0.004,
                    summary: format!("pid {pid}"),
                    figures: Default::default(),
                },
                estimated_cpu_seconds_saved_per_second: saved,
                below_threshold: below,
            },
        }
    }

    #[test]
    fn repeated_short_lived_processes_are_one_advice_line_with_their_count() {
        let advice = vec![
            finding(10, "nginx", "sendfile", 0.2, false),
            finding(21, "cp", "copy_file_range", 0.004, false),
            finding(22, "cp", "copy_file_range", 0.003, false),
            finding(23, "cp", "copy_file_range", 0.002, false),
            finding(24, "cp", "copy_file_range", 0.0000002, true),
        ];
        let groups = advice_groups(&advice);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), 1);
        assert_eq!(
            groups[1].iter().map(|a| a.pid.unwrap()).collect::<Vec<_>>(),
            [21, 22, 23],
            "the finding below the minimum saving is left out"
        );
        let mut snap = crate::tui::fixtures::snapshot();
        snap.advice = advice;
        let text = table(&snap);
        assert!(
            text.contains("  10 nginx: sendfile -> saves 20.0% of a CPU"),
            "{text}"
        );
        assert!(
            text.contains(
                "  cp (3 processes): copy_file_range -> saves 0.9% of a CPU together\n    use copy_file_range\n    evidence (the largest): pid 21"
            ),
            "{text}"
        );
        assert!(!text.contains("pid 24"), "{text}");
    }

    #[test]
    fn advice_with_nothing_above_the_minimum_prints_no_section() {
        let mut snap = crate::tui::fixtures::snapshot();
        snap.advice = vec![finding(24, "cp", "copy_file_range", 0.0000002, true)];
        assert!(!table(&snap).contains("ADVICE"));
    }

    fn window() -> Snapshot {
        let mut exited = RowBuilder::new(8, "cp")
            .syscall("read", "file", 2, 8192)
            .build();
        exited.exited = true;
        Snapshot {
            duration_seconds: 5.0,
            end_unix_seconds: 0.0,
            host: "node".into(),
            kernel: "6.18.0".into(),
            probes: vec![
                ProbeRow {
                    name: "syscalls_enter".into(),
                    family: "syscalls".into(),
                    hook: "sys_enter".into(),
                    method: Some("tracepoint".into()),
                    attached: true,
                },
                ProbeRow {
                    name: "copies_read".into(),
                    family: "copies".into(),
                    hook: "file_read".into(),
                    method: None,
                    attached: false,
                },
            ],
            processes: vec![
                RowBuilder::new(7, "nginx")
                    .seconds_per_call(0.001)
                    .syscall("sendfile", "file->socket", 3, 3 << 20)
                    .syscall("read", "socket", 10, 4096)
                    .build(),
                exited,
            ],
            dropped: BTreeMap::from([
                ("syscall_stats_full".to_string(), 0),
                ("inflight_lost".to_string(), 2),
            ]),
            cpu_copy_method: BTreeMap::from([("file_read".to_string(), "syscalls".to_string())]),
            bpf_stats: vec![ProgramStat {
                name: "syscalls_enter".into(),
                run_count: 100,
                run_time_ns: 25_000,
                missed_runs: 0,
            }],
            command: None,
            calibration: None,
            advice: Vec::new(),
        }
    }

    #[test]
    fn the_table_shows_the_window_its_probes_drops_processes_and_programs() {
        let t = table(&window());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "copyscope snapshot: 5.00 s, kernel 6.18.0");
        // Attached probes only, with their methods.
        assert_eq!(lines[1], "probes: syscalls/sys_enter=tracepoint");
        assert_eq!(lines[2], "cpu copies measured by: file_read=syscalls");
        // Drops that happened, not the counters at zero.
        assert_eq!(lines[3], "DROPPED in the kernel: inflight_lost=2");
        assert!(lines[5].trim_start().starts_with("PID COMM"), "{t}");
        let nginx = lines.iter().position(|l| l.contains(" nginx ")).unwrap();
        let cols: Vec<&str> = lines[nginx].split_whitespace().collect();
        assert_eq!(&cols[..5], ["7", "nginx", "13", "26", "0/0"], "{t}");
        assert!(lines[nginx].ends_with("0.013s"), "{t}");
        // Its syscall rows under it, in order.
        assert!(lines[nginx + 1].contains("sendfile") && lines[nginx + 1].contains("file->socket"));
        assert!(lines[nginx + 2].contains("read") && lines[nginx + 2].contains("10 calls"));
        // An exited process is marked, and the mark explained.
        assert!(t.contains(" cp* "), "{t}");
        assert!(
            t.contains("* exited during the window; counts are final"),
            "{t}"
        );
        assert!(
            t.contains("syscalls_enter            100 runs    250.0 ns/run"),
            "{t}"
        );
        assert!(!t.contains("ADVICE"), "{t}");
    }

    #[test]
    fn an_empty_window_says_so() {
        let mut w = window();
        w.processes.clear();
        w.bpf_stats.clear();
        let t = table(&w);
        assert!(t.contains("(no counted syscalls in this window)"), "{t}");
        assert!(!t.contains("exited during the window"), "{t}");
        assert!(!t.contains("copyscope's programs"), "{t}");
    }
}
