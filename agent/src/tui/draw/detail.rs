//! The detail pane: one process's or one group's figures, findings and probes.

use ratatui::{
    Frame,
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line as TextLine, Span},
    widgets::{Block, Borders, Clear, Paragraph, Wrap},
};

use super::{bold, dim, saving_style, seconds};
use crate::{
    model::{ProcessRow, Snapshot},
    tui::{
        app::App,
        view::{self, LineKey, count, mbps, percent},
    },
};

pub(super) fn draw_detail(f: &mut Frame, area: Rect, app: &App, now: f64) {
    f.render_widget(Clear, area);
    let Some(s) = &app.snapshot else {
        return;
    };
    let (title, text) = match &app.selected {
        Some(LineKey::Pid(pid)) => match s.processes.iter().find(|p| p.pid == *pid) {
            Some(p) => (process_title(p), process_detail(s, p, s.duration_seconds)),
            None => match &app.last_seen {
                Some((p, at)) if p.pid == *pid => {
                    let mut t = vec![TextLine::from(Span::styled(
                        format!(
                            "no counted I/O in the latest window: {} (figures from {} ago)",
                            if p.exited { "exited" } else { "exited or idle" },
                            seconds((now - at).max(0.0))
                        ),
                        Style::default().fg(Color::Yellow),
                    ))];
                    t.extend(process_detail(s, p, s.duration_seconds));
                    (process_title(p), t)
                }
                _ => (format!(" pid {pid} "), vec![TextLine::from("no data")]),
            },
        },
        Some(LineKey::Command(comm, container)) => (
            format!(
                " {comm}{} ",
                container
                    .as_deref()
                    .map_or(String::new(), |c| format!(" in {c}"))
            ),
            group_detail(s, comm, container.as_deref()),
        ),
        None => (" detail ".into(), vec![]),
    };
    f.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .title_bottom(" Esc/Enter close "),
        ),
        area,
    );
}

fn process_title(p: &ProcessRow) -> String {
    format!(
        " pid {} {}{}{} ",
        p.pid,
        p.comm,
        match (&p.pod, &p.container_id) {
            (Some(r), _) => format!(" pod {}/{} container {}", r.namespace, r.pod, r.container),
            (None, Some(c)) => format!(" container {c}"),
            (None, None) => String::new(),
        },
        if p.exited { " (exited)" } else { "" }
    )
}

fn process_detail(s: &Snapshot, p: &ProcessRow, secs: f64) -> Vec<TextLine<'static>> {
    let r = view::rates(p, secs);
    let per = |v: u64| if secs > 0.0 { v as f64 / secs } else { 0.0 };
    let mut t = vec![
        TextLine::from(vec![
            bold("syscalls "),
            Span::raw(format!(
                "{}/s, mode switches {}/s, {:.1}% of a CPU in them",
                count(r.syscalls),
                count(r.mode_switches),
                if secs > 0.0 {
                    p.syscall_seconds / secs * 100.0
                } else {
                    0.0
                }
            )),
        ]),
        TextLine::from(vec![
            bold("context switches "),
            Span::raw(format!(
                "voluntary {}/s, involuntary {}/s, in I/O {}/s",
                count(r.voluntary),
                count(r.involuntary),
                count(per(p.context_switches.in_io))
            )),
        ]),
        TextLine::from(vec![
            bold("CPU copies "),
            Span::raw(format!(
                "to user {} MB/s, from user {} MB/s; zero-copy {} MB/s; direct I/O {} MB/s",
                mbps(r.copy_to_user),
                mbps(r.copy_from_user),
                mbps(r.zero_copy),
                mbps(r.direct_io)
            )),
        ]),
        TextLine::from(vec![
            bold("page cache "),
            Span::raw(format!(
                "lookups {}/s, hits {}/s, misses {}/s, hit ratio {}%, mmap faults {}/s, dirtied {}/s",
                count(per(p.pagecache.lookups)),
                count(per(p.pagecache.hits)),
                count(per(p.pagecache.misses)),
                percent(p.pagecache.hit_ratio),
                count(per(p.pagecache.mmap_faults)),
                count(per(p.pagecache.dirtied))
            )),
        ]),
        TextLine::from(""),
        TextLine::from(vec![bold(format!(
            "{:<16}{:<18}{:>9}{:>10}{:>8}{:>9}",
            "syscall", "fd kind", "calls/s", "MB/s", "errors", "µs/call"
        ))]),
    ];
    let mut rows = p.syscalls.clone();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.calls.cmp(&a.calls)));
    for r in rows {
        t.push(TextLine::from(format!(
            "{:<16}{:<18}{:>9}{:>10}{:>8}{:>9.1}",
            r.syscall,
            r.fd_kind,
            count(per(r.calls)),
            mbps(per(r.bytes)),
            r.errors,
            if r.calls > 0 {
                r.seconds / r.calls as f64 * 1e6
            } else {
                0.0
            }
        )));
    }
    t.push(TextLine::from(""));
    let findings = view::findings_of(s, p.pid);
    if findings.is_empty() {
        t.push(TextLine::from(dim(
            "advice: nothing to change in this window",
        )));
    }
    for a in findings {
        let f = &a.finding;
        t.push(TextLine::from(vec![
            Span::styled(
                format!("{} ", view::verdict(&f.pattern)),
                saving_style(&f.pattern, f.estimated_cpu_seconds_saved_per_second)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(f.recommendation.clone()),
        ]));
        t.push(TextLine::from(format!(
            "  evidence: {}",
            f.evidence.summary
        )));
        if f.pattern != "zero_copy" {
            t.push(TextLine::from(format!(
                "  estimated saving: {:.1}% of a CPU ({:.3} CPU-seconds per second)",
                f.estimated_cpu_seconds_saved_per_second * 100.0,
                f.estimated_cpu_seconds_saved_per_second
            )));
        }
    }
    t
}

fn group_detail(s: &Snapshot, comm: &str, container: Option<&str>) -> Vec<TextLine<'static>> {
    let secs = s.duration_seconds;
    let mut t = vec![TextLine::from(vec![bold(format!(
        "{:>8} {:>9} {:>10} {:>10} {:>8}  advice",
        "pid", "sysc/s", "cp→u MB/s", "cp←u MB/s", "zc MB/s"
    ))])];
    for p in s
        .processes
        .iter()
        .filter(|p| p.comm == comm && p.container_id.as_deref() == container)
    {
        let r = view::rates(p, secs);
        let findings: Vec<String> = view::findings_of(s, p.pid)
            .iter()
            .map(|a| view::verdict(&a.finding.pattern).to_string())
            .collect();
        t.push(TextLine::from(format!(
            "{:>8} {:>9} {:>10} {:>10} {:>8}  {}",
            p.pid,
            count(r.syscalls),
            mbps(r.copy_to_user),
            mbps(r.copy_from_user),
            mbps(r.zero_copy),
            findings.join(", ")
        )));
    }
    t.push(TextLine::from(""));
    t.push(TextLine::from(dim(
        "t switches back to one line per process; Enter there shows a process's detail",
    )));
    t
}
