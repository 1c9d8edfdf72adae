//! What the table shows: one line per process (or per command), with rates computed from
//! the window's counts over its measured length. Pure.

use std::collections::BTreeMap;

use crate::model::{ProcessAdvice, ProcessRow, Snapshot};

/// One process per line, or one command (comm + container) per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Process,
    Command,
}

/// A line's identity, stable from one window to the next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LineKey {
    Pid(u32),
    Command(String, Option<String>),
}

/// Rates per second over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub syscalls: f64,
    pub mode_switches: f64,
    pub voluntary: f64,
    pub involuntary: f64,
    pub copy_to_user: f64,
    pub copy_from_user: f64,
    pub zero_copy: f64,
    pub direct_io: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub key: LineKey,
    /// The pid (process lines), or the number of processes (command lines).
    pub pid: Option<u32>,
    pub processes: usize,
    pub comm: String,
    pub container: Option<String>,
    /// namespace/pod, when the agent knows the container's pod.
    pub pod: Option<String>,
    pub exited: bool,
    pub rates: Rates,
    pub hit_ratio: Option<f64>,
    /// The biggest finding: its pattern and the CPU (seconds per second) it would save.
    pub advice: Option<(String, f64)>,
}

/// The table's columns, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    Pid,
    Comm,
    Container,
    Syscalls,
    ModeSwitches,
    Switches,
    CopyToUser,
    CopyFromUser,
    ZeroCopy,
    DirectIo,
    HitRatio,
    Advice,
}

impl Column {
    pub const ALL: [Column; 12] = [
        Column::Pid,
        Column::Comm,
        Column::Container,
        Column::Syscalls,
        Column::ModeSwitches,
        Column::Switches,
        Column::CopyToUser,
        Column::CopyFromUser,
        Column::ZeroCopy,
        Column::DirectIo,
        Column::HitRatio,
        Column::Advice,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::Comm => "COMM",
            Column::Container => "CONTAINER",
            Column::Syscalls => "SYSC/s",
            Column::ModeSwitches => "MODE/s",
            Column::Switches => "CSW/s v/i",
            Column::CopyToUser => "CPU→USR",
            Column::CopyFromUser => "CPU←USR",
            Column::ZeroCopy => "ZCOPY",
            Column::DirectIo => "DIRECT",
            Column::HitRatio => "HIT%",
            Column::Advice => "ADVICE",
        }
    }

    /// What the column means (help overlay, sort indicator).
    pub fn describe(self) -> &'static str {
        match self {
            Column::Pid => "process id (processes in the group when grouped)",
            Column::Comm => "command name",
            Column::Container => "namespace/pod, or the container id (12 characters)",
            Column::Syscalls => "counted I/O syscalls per second",
            Column::ModeSwitches => "user/kernel mode switches per second (two per syscall)",
            Column::Switches => "context switches per second: voluntary / involuntary",
            Column::CopyToUser => "MB/s the CPU copied kernel -> user (reads, receives)",
            Column::CopyFromUser => "MB/s the CPU copied user -> kernel (writes, sends)",
            Column::ZeroCopy => "MB/s moved zero-copy (sendfile, splice, copy_file_range)",
            Column::DirectIo => "MB/s of O_DIRECT reads and writes (no CPU copy)",
            Column::HitRatio => "page-cache hit ratio of buffered reads",
            Column::Advice => "the advisor's biggest finding and the CPU share it would save",
        }
    }

    /// Width the column needs, and the order in which columns give way on narrow
    /// terminals (lower stays longer).
    pub fn width(self) -> u16 {
        match self {
            Column::Pid => 7,
            Column::Comm => 15,
            Column::Container => 20,
            Column::Syscalls => 7,
            Column::ModeSwitches => 7,
            Column::Switches => 11,
            Column::CopyToUser | Column::CopyFromUser => 8,
            Column::ZeroCopy | Column::DirectIo => 7,
            Column::HitRatio => 5,
            Column::Advice => 15,
        }
    }

    fn priority(self) -> u8 {
        match self {
            Column::Pid | Column::Comm => 0,
            Column::Advice => 1,
            Column::CopyToUser | Column::CopyFromUser => 2,
            Column::ZeroCopy => 3,
            Column::Syscalls => 4,
            Column::HitRatio => 5,
            Column::Switches => 6,
            Column::DirectIo => 7,
            Column::Container => 8,
            Column::ModeSwitches => 9,
        }
    }

    /// Numbers sort biggest first by default, names A to Z.
    pub fn descending_by_default(self) -> bool {
        !matches!(self, Column::Pid | Column::Comm | Column::Container)
    }

    /// Compare two lines by this column, ascending.
    pub fn cmp(self, a: &Line, b: &Line) -> std::cmp::Ordering {
        let f = |x: f64, y: f64| x.total_cmp(&y);
        match self {
            Column::Pid => a.pid.cmp(&b.pid).then(a.processes.cmp(&b.processes)),
            Column::Comm => a.comm.cmp(&b.comm),
            Column::Container => (a.pod.as_ref().or(a.container.as_ref()))
                .cmp(&b.pod.as_ref().or(b.container.as_ref())),
            Column::Syscalls => f(a.rates.syscalls, b.rates.syscalls),
            Column::ModeSwitches => f(a.rates.mode_switches, b.rates.mode_switches),
            Column::Switches => f(
                a.rates.voluntary + a.rates.involuntary,
                b.rates.voluntary + b.rates.involuntary,
            ),
            Column::CopyToUser => f(a.rates.copy_to_user, b.rates.copy_to_user),
            Column::CopyFromUser => f(a.rates.copy_from_user, b.rates.copy_from_user),
            Column::ZeroCopy => f(a.rates.zero_copy, b.rates.zero_copy),
            Column::DirectIo => f(a.rates.direct_io, b.rates.direct_io),
            Column::HitRatio => f(a.hit_ratio.unwrap_or(-1.0), b.hit_ratio.unwrap_or(-1.0)),
            Column::Advice => f(saving(a), saving(b)),
        }
    }
}

fn saving(l: &Line) -> f64 {
    l.advice.as_ref().map_or(-1.0, |a| a.1)
}

/// The columns that fit in `width` (always PID and COMM), in display order.
pub fn fit_columns(width: u16) -> Vec<Column> {
    let mut by_priority = Column::ALL;
    by_priority.sort_by_key(|c| c.priority());
    let mut used = 0u16;
    let mut keep = Vec::new();
    for c in by_priority {
        let need = c.width() + 1;
        if used + need <= width || c.priority() == 0 {
            used += need;
            keep.push(c);
        }
    }
    keep.sort();
    keep
}

/// The rates of one process row over a window of `secs` seconds.
pub fn rates(p: &ProcessRow, secs: f64) -> Rates {
    let per = |v: u64| if secs > 0.0 { v as f64 / secs } else { 0.0 };
    Rates {
        syscalls: per(p.calls),
        mode_switches: per(p.mode_switches),
        voluntary: per(p.context_switches.voluntary),
        involuntary: per(p.context_switches.involuntary),
        copy_to_user: per(p.cpu_copy_bytes.to_user),
        copy_from_user: per(p.cpu_copy_bytes.from_user),
        zero_copy: per(p.zero_copy_bytes),
        direct_io: per(p.direct_io_bytes),
    }
}

fn add(a: &mut Rates, b: &Rates) {
    a.syscalls += b.syscalls;
    a.mode_switches += b.mode_switches;
    a.voluntary += b.voluntary;
    a.involuntary += b.involuntary;
    a.copy_to_user += b.copy_to_user;
    a.copy_from_user += b.copy_from_user;
    a.zero_copy += b.zero_copy;
    a.direct_io += b.direct_io;
}

/// The findings of one process (snapshot advice carries the pid).
pub fn findings_of(s: &Snapshot, pid: u32) -> Vec<&ProcessAdvice> {
    s.advice.iter().filter(|a| a.pid == Some(pid)).collect()
}

/// The biggest saving among the findings (the zero-copy "already good" finding has none).
fn top_finding<'a>(f: impl Iterator<Item = &'a ProcessAdvice>) -> Option<(String, f64)> {
    f.map(|a| {
        (
            a.finding.pattern.clone(),
            a.finding.estimated_cpu_seconds_saved_per_second,
        )
    })
    .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The table's lines for a snapshot.
pub fn lines(s: &Snapshot, grouping: Grouping) -> Vec<Line> {
    let secs = s.duration_seconds;
    let mut out: Vec<Line> = s
        .processes
        .iter()
        .map(|p| {
            let lookups = p.pagecache.lookups;
            Line {
                key: LineKey::Pid(p.pid),
                pid: Some(p.pid),
                processes: 1,
                comm: p.comm.clone(),
                container: p.container_id.clone(),
                pod: p.pod.as_ref().map(|r| format!("{}/{}", r.namespace, r.pod)),
                exited: p.exited,
                rates: rates(p, secs),
                hit_ratio: (lookups > 0).then(|| p.pagecache.hits as f64 / lookups as f64),
                advice: top_finding(findings_of(s, p.pid).into_iter()),
            }
        })
        .collect();
    if grouping == Grouping::Command {
        let mut groups: BTreeMap<LineKey, (Line, u64, u64)> = BTreeMap::new();
        for (l, p) in out.iter().zip(&s.processes) {
            let key = LineKey::Command(l.comm.clone(), l.container.clone());
            let g = groups.entry(key.clone()).or_insert_with(|| {
                (
                    Line {
                        key,
                        pid: None,
                        processes: 0,
                        comm: l.comm.clone(),
                        container: l.container.clone(),
                        pod: l.pod.clone(),
                        exited: true,
                        rates: Rates::default(),
                        hit_ratio: None,
                        advice: None,
                    },
                    0,
                    0,
                )
            });
            g.0.processes += 1;
            g.0.exited &= l.exited;
            add(&mut g.0.rates, &l.rates);
            g.1 += p.pagecache.lookups;
            g.2 += p.pagecache.hits;
            if let Some(a) = &l.advice
                && g.0.advice.as_ref().is_none_or(|b| a.1 > b.1)
            {
                g.0.advice = Some(a.clone());
            }
        }
        out = groups
            .into_values()
            .map(|(mut l, lookups, hits)| {
                l.hit_ratio = (lookups > 0).then(|| hits as f64 / lookups as f64);
                l
            })
            .collect();
    }
    out
}

/// Whole-host figures of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub rates: Rates,
    /// Share of the moved bytes that went zero-copy, when anything moved.
    pub zero_copy_share: Option<f64>,
    pub hit_ratio: Option<f64>,
}

pub fn totals(s: &Snapshot) -> Totals {
    let mut t = Totals::default();
    let (mut lookups, mut hits) = (0u64, 0u64);
    for p in &s.processes {
        add(&mut t.rates, &rates(p, s.duration_seconds));
        lookups += p.pagecache.lookups;
        hits += p.pagecache.hits;
    }
    let moved = t.rates.copy_to_user + t.rates.copy_from_user + t.rates.zero_copy;
    t.zero_copy_share = (moved > 0.0).then(|| t.rates.zero_copy / moved);
    t.hit_ratio = (lookups > 0).then(|| hits as f64 / lookups as f64);
    t
}

/// Filter (case-insensitive substring of comm, container or pid) and sort.
pub fn select(mut lines: Vec<Line>, filter: &str, sort: Column, reverse: bool) -> Vec<Line> {
    if !filter.is_empty() {
        let f = filter.to_lowercase();
        lines.retain(|l| {
            l.comm.to_lowercase().contains(&f)
                || l.container.as_deref().is_some_and(|c| c.contains(&f))
                || l.pod
                    .as_deref()
                    .is_some_and(|c| c.to_lowercase().contains(&f))
                || l.pid.is_some_and(|p| p.to_string() == f)
        });
    }
    let descending = sort.descending_by_default();
    lines.sort_by(|a, b| {
        let o = sort.cmp(a, b).then_with(|| a.key.cmp(&b.key));
        if descending ^ reverse { o.reverse() } else { o }
    });
    lines
}

/// A short verdict for the advice column.
pub fn verdict(pattern: &str) -> &'static str {
    match pattern {
        "sendfile" => "sendfile",
        "mmap_sendfile" => "mmap→sendfile",
        "splice_socket_to_socket" => "splice",
        "splice_socket_to_file" => "splice→file",
        "copy_file_range" => "copy_file_range",
        "direct_io" => "O_DIRECT",
        "zero_copy" => "ok zero-copy",
        _ => "see detail",
    }
}

/// Rates as short numbers: 950, 12.3k, 4.5M.
pub fn count(v: f64) -> String {
    if v < 1.0 && v > 0.0 {
        return format!("{v:.1}");
    }
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Bytes per second as MB/s (10^6), one decimal; "-" for nothing.
pub fn mbps(v: f64) -> String {
    if v <= 0.0 {
        "-".into()
    } else if v < 50_000.0 {
        format!("{:.2}", v / 1e6)
    } else {
        format!("{:.1}", v / 1e6)
    }
}

pub fn percent(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{:.0}", r * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pid: u32, comm: &str, to_user: f64) -> Line {
        Line {
            key: LineKey::Pid(pid),
            pid: Some(pid),
            processes: 1,
            comm: comm.into(),
            container: None,
            pod: None,
            exited: false,
            rates: Rates {
                copy_to_user: to_user,
                ..Rates::default()
            },
            hit_ratio: None,
            advice: None,
        }
    }

    #[test]
    fn narrow_terminals_keep_pid_comm_and_advice_first() {
        let c = fit_columns(80);
        assert!(c.contains(&Column::Pid) && c.contains(&Column::Comm));
        assert!(c.contains(&Column::Advice) && c.contains(&Column::CopyToUser));
        assert!(c.contains(&Column::HitRatio) && c.contains(&Column::ZeroCopy));
        let used: u16 = c.iter().map(|c| c.width() + 1).sum();
        assert!(used <= 80, "{used}");
        assert_eq!(fit_columns(300).len(), Column::ALL.len());
        // Display order is the canonical order.
        assert!(c.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn numbers_sort_biggest_first_and_names_a_to_z() {
        let ls = vec![line(1, "b", 5.0), line(2, "a", 9.0), line(3, "c", 1.0)];
        let by_copy = select(ls.clone(), "", Column::CopyToUser, false);
        assert_eq!(
            by_copy.iter().map(|l| l.pid).collect::<Vec<_>>(),
            [Some(2), Some(1), Some(3)]
        );
        let by_name = select(ls.clone(), "", Column::Comm, false);
        assert_eq!(by_name[0].comm, "a");
        let reversed = select(ls.clone(), "", Column::Comm, true);
        assert_eq!(reversed[0].comm, "c");
        let filtered = select(ls, "B", Column::Comm, false);
        assert_eq!(filtered.len(), 1);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(950.4), "950");
        assert_eq!(count(12_345.0), "12.3k");
        assert_eq!(count(4_500_000.0), "4.5M");
        assert_eq!(mbps(0.0), "-");
        assert_eq!(mbps(12_300_000.0), "12.3");
        assert_eq!(mbps(4096.0), "0.00");
        assert_eq!(percent(Some(0.987)), "99");
    }
}
