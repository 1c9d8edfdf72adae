//! Drawing: state and a frame in, nothing else. `now` (Unix seconds) is passed in so that
//! drawings are reproducible.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line as TextLine, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap},
};

use super::{
    app::{App, Origin, Status},
    view::{self, Column, Grouping, Line, LineKey, count, mbps, percent},
};
use crate::model::{ProcessRow, Snapshot};

const HEADER_LINES: u16 = 5;

pub fn draw(f: &mut Frame, app: &mut App, now: f64) {
    let [header, table, footer] = Layout::vertical([
        Constraint::Length(HEADER_LINES),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, app, now);
    draw_table(f, table, app);
    draw_footer(f, footer, app);
    if app.detail {
        draw_detail(f, inset(f.area(), 1), app, now);
    }
    if app.help {
        draw_help(f, inset(f.area(), 2));
    }
}

fn inset(r: Rect, by: u16) -> Rect {
    Rect {
        x: r.x + by.min(r.width / 4),
        y: r.y + by.min(r.height / 4),
        width: r.width.saturating_sub(2 * by.min(r.width / 4)),
        height: r.height.saturating_sub(2 * by.min(r.height / 4)),
    }
}

fn bold(s: impl Into<String>) -> Span<'static> {
    Span::styled(s.into(), Style::default().add_modifier(Modifier::BOLD))
}

fn dim(s: impl Into<String>) -> Span<'static> {
    Span::styled(s.into(), Style::default().fg(Color::DarkGray))
}

fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1}s")
    } else {
        format!("{s:.0}s")
    }
}

fn draw_header(f: &mut Frame, area: Rect, app: &App, now: f64) {
    let s = app.snapshot.as_ref();
    let source = match &app.origin {
        Origin::Local => "local probes".to_string(),
        Origin::Remote(url) => format!("agent {url}"),
    };
    let mut first = vec![
        bold("copyscope top"),
        Span::raw(" · "),
        bold(s.map_or("-".into(), |s| s.host.clone())),
        Span::raw(format!(
            " · kernel {}",
            s.map_or("-", |s| s.kernel.as_str())
        )),
        Span::raw(format!(" · {source}")),
    ];
    if app.paused {
        first.push(Span::styled(
            "  PAUSED",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    let mut second = vec![Span::raw(format!(
        "every {}",
        seconds(app.interval.as_secs_f64())
    ))];
    if let Some(s) = s {
        second.push(dim(format!(
            " · window {} ended {} ago",
            seconds(s.duration_seconds),
            seconds((now - s.end_unix_seconds).max(0.0))
        )));
        let dropped: Vec<String> = s
            .dropped
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        second.push(Span::raw(" · dropped "));
        second.push(if dropped.is_empty() {
            Span::raw("nothing")
        } else {
            Span::styled(dropped.join(", "), Style::default().fg(Color::Yellow))
        });
    }
    let mut lines = vec![TextLine::from(first), TextLine::from(second)];
    match s {
        Some(s) => {
            let t = view::totals(s);
            let r = t.rates;
            lines.push(TextLine::from(vec![
                Span::raw(format!("syscalls {}/s", count(r.syscalls))),
                Span::raw(format!("  mode sw {}/s", count(r.mode_switches))),
                Span::raw(format!(
                    "  ctx sw {}/s vol {}/s invol",
                    count(r.voluntary),
                    count(r.involuntary)
                )),
                Span::raw(format!("  cache hit {}%", percent(t.hit_ratio))),
            ]));
            lines.push(TextLine::from(vec![
                Span::raw("CPU copy "),
                bold(format!("{} MB/s", mbps(r.copy_to_user + r.copy_from_user))),
                Span::raw(format!(
                    " (to user {}, from user {})",
                    mbps(r.copy_to_user),
                    mbps(r.copy_from_user)
                )),
                Span::raw("  zero-copy "),
                bold(format!("{} MB/s", mbps(r.zero_copy))),
                Span::raw(format!(" ({}%)", percent(t.zero_copy_share))),
                Span::raw(format!("  direct {} MB/s", mbps(r.direct_io))),
            ]));
        }
        None => {
            lines.push(TextLine::from(dim(match app.status {
                Status::Starting => "collecting the first window...",
                _ => "no window yet",
            })));
            lines.push(TextLine::from(""));
        }
    }
    lines.push(status_line(app, now));
    f.render_widget(Paragraph::new(lines), area);
}

/// Probe methods and drops, or what is failing.
fn status_line(app: &App, now: f64) -> TextLine<'static> {
    if let Status::Failing {
        error,
        since,
        attempts,
    } = &app.status
    {
        let what = match &app.origin {
            // Remote::fetch: the agent answered, but not with a snapshot.
            Origin::Remote(_) if error.contains("is not a copyscope snapshot") => {
                "bad answer from the agent".to_string()
            }
            Origin::Remote(_) if error.contains("(401 Unauthorized)") => {
                "agent refused access".to_string()
            }
            Origin::Remote(_) if error.contains("TLS") || error.contains("certificate") => {
                "TLS with the agent failed".to_string()
            }
            Origin::Remote(_) => "agent unreachable".to_string(),
            Origin::Local => "collection failed".into(),
        };
        let age = app.snapshot.as_ref().map_or("no data yet".into(), |s| {
            format!("data {} old", seconds((now - s.end_unix_seconds).max(0.0)))
        });
        return TextLine::from(Span::styled(
            format!(
                "{what}: {error} · {attempts} {} in {} · retry every {} · {age}",
                if *attempts == 1 { "try" } else { "tries" },
                seconds((now - since).max(0.0)),
                seconds(app.interval.as_secs_f64())
            ),
            Style::default().fg(Color::White).bg(Color::Red),
        ));
    }
    let Some(s) = &app.snapshot else {
        return TextLine::from("");
    };
    let mut spans = vec![Span::raw("probes ")];
    let mut families: Vec<(String, Vec<String>)> = Vec::new();
    for p in s.probes.iter().filter(|p| p.attached) {
        let m = match p.method.as_deref().unwrap_or_default() {
            "raw_tracepoint" => "raw_tp",
            "tracepoint" => "tp",
            m => m,
        }
        .to_string();
        match families.iter_mut().find(|(f, _)| *f == p.family) {
            Some((_, ms)) if !ms.contains(&m) => ms.push(m),
            Some(_) => {}
            None => families.push((p.family.clone(), vec![m])),
        }
    }
    let fams: Vec<String> = families
        .iter()
        .map(|(f, ms)| format!("{f} {}", ms.join("+")))
        .collect();
    spans.push(Span::raw(fams.join(", ")));
    let derived: Vec<&str> = s
        .cpu_copy_method
        .iter()
        .filter(|(_, m)| *m == "syscalls")
        .map(|(h, _)| h.as_str())
        .collect();
    if !derived.is_empty() {
        spans.push(dim(format!(
            "; copies from syscalls: {}",
            derived.join(" ")
        )));
    }
    TextLine::from(spans)
}

fn saving_style(pattern: &str, saved: f64) -> Style {
    if pattern == "zero_copy" {
        Style::default().fg(Color::Green)
    } else if saved >= 0.10 {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else if saved >= 0.02 {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default().fg(Color::Cyan)
    }
}

fn advice_text(a: &Option<(String, f64)>) -> (String, Style) {
    match a {
        None => (String::new(), Style::default()),
        Some((p, s)) if p == "zero_copy" => (view::verdict(p).into(), saving_style(p, *s)),
        Some((p, s)) => (
            format!("{} {:.0}%", view::verdict(p), s * 100.0),
            saving_style(p, *s),
        ),
    }
}

fn cell(c: Column, l: &Line, grouping: Grouping) -> Cell<'static> {
    let r = &l.rates;
    let text = match c {
        Column::Pid => match grouping {
            Grouping::Process => l.pid.map_or(String::new(), |p| p.to_string()),
            Grouping::Command => format!("×{}", l.processes),
        },
        Column::Comm => {
            if l.exited {
                format!("{}†", l.comm)
            } else {
                l.comm.clone()
            }
        }
        Column::Container => match (&l.pod, &l.container) {
            (Some(pod), _) => pod.clone(),
            (None, Some(c)) => c.chars().take(12).collect(),
            (None, None) => "-".into(),
        },
        Column::Syscalls => count(r.syscalls),
        Column::ModeSwitches => count(r.mode_switches),
        Column::Switches => format!("{}/{}", count(r.voluntary), count(r.involuntary)),
        Column::CopyToUser => mbps(r.copy_to_user),
        Column::CopyFromUser => mbps(r.copy_from_user),
        Column::ZeroCopy => mbps(r.zero_copy),
        Column::DirectIo => mbps(r.direct_io),
        Column::HitRatio => percent(l.hit_ratio),
        Column::Advice => {
            let (t, s) = advice_text(&l.advice);
            return Cell::from(t).style(s);
        }
    };
    Cell::from(text)
}

fn draw_table(f: &mut Frame, area: Rect, app: &mut App) {
    let lines = app.lines();
    let columns = view::fit_columns(area.width);
    let header = Row::new(columns.iter().map(|c| {
        let mut t = c.title().to_string();
        if *c == app.sort {
            t.push(if c.descending_by_default() ^ app.reverse {
                '▼'
            } else {
                '▲'
            });
        }
        let st = Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED);
        Cell::from(t).style(if *c == app.sort {
            st.fg(Color::Cyan)
        } else {
            st
        })
    }))
    .style(Style::default().add_modifier(Modifier::REVERSED));
    let rows = lines.iter().map(|l| {
        let r = Row::new(columns.iter().map(|c| cell(*c, l, app.grouping)));
        if l.exited {
            r.style(Style::default().fg(Color::DarkGray))
        } else {
            r
        }
    });
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|c| match c {
            Column::Advice => Constraint::Min(c.width()),
            _ => Constraint::Length(c.width()),
        })
        .collect();
    let empty = lines.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::default().bg(Color::Blue).fg(Color::White));
    let mut state = TableState::default().with_selected(app.selected_index(&lines));
    app.page = area.height.saturating_sub(2).max(1) as usize;
    f.render_stateful_widget(table, area, &mut state);
    if empty {
        let msg = match (&app.snapshot, app.filter.is_empty()) {
            (None, _) => "waiting for the first window".to_string(),
            (Some(_), true) => "no process did counted I/O in this window".to_string(),
            (Some(_), false) => format!("no process matches {:?}", app.filter),
        };
        let r = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        f.render_widget(Paragraph::new(dim(msg)), r);
    }
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let line = if app.editing {
        TextLine::from(vec![
            bold("filter: "),
            Span::raw(app.filter.clone()),
            Span::styled(" ", Style::default().add_modifier(Modifier::REVERSED)),
            dim("  Enter keep  Esc clear"),
        ])
    } else {
        let mut spans = vec![];
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!("filter {:?}  ", app.filter),
                Style::default().fg(Color::Yellow),
            ));
        }
        spans.push(Span::raw(
            "? help  q quit  ⏎ detail  ←→ sort  r rev  / filter  p pause  +- rate  t group",
        ));
        TextLine::from(spans)
    };
    f.render_widget(Paragraph::new(line), area);
}

fn draw_help(f: &mut Frame, area: Rect) {
    let keys = [
        ("q, Ctrl-C", "quit"),
        ("? F1", "this help (any key closes it)"),
        ("↑ ↓  k j", "select a line; PgUp PgDn, Home End (g G) jump"),
        (
            "Enter",
            "open or close the selected line's detail (Esc closes too)",
        ),
        ("← →  h l  < >", "sort by the previous / next column"),
        ("r", "reverse the sort"),
        (
            "/",
            "filter by command, container or pid (Enter keeps, Esc clears)",
        ),
        (
            "p, Space",
            "pause and resume the display (collection goes on)",
        ),
        ("+ -", "refresh interval: 0.5, 1, 2, 3, 5, 10, 30 s"),
        ("t", "one line per process, or per command and container"),
    ];
    let mut text: Vec<TextLine> = keys
        .iter()
        .map(|(k, v)| TextLine::from(vec![bold(format!("{k:>14}  ")), Span::raw(*v)]))
        .collect();
    text.push(TextLine::from(""));
    for c in Column::ALL {
        text.push(TextLine::from(vec![
            bold(format!("{:>14}  ", c.title())),
            Span::raw(c.describe()),
        ]));
    }
    text.push(TextLine::from(""));
    text.push(TextLine::from(dim(
        "Rates are the window's counts over its measured length. † marks a process that exited.",
    )));
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" help ")),
        area,
    );
}

fn draw_detail(f: &mut Frame, area: Rect, app: &App, now: f64) {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::{Terminal, backend::TestBackend, crossterm::event::KeyCode};

    use super::*;
    use crate::tui::{app::Origin, fixtures};

    fn key(a: &mut App, c: KeyCode) {
        a.on_key(ratatui::crossterm::event::KeyEvent::new(
            c,
            ratatui::crossterm::event::KeyModifiers::NONE,
        ));
    }

    fn render(app: &mut App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app, fixtures::END + 1.0)).unwrap();
        // The buffer's text, one line per row, trailing blanks cut.
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..h {
            let mut line = String::new();
            for x in 0..w {
                line.push_str(buf[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn local() -> App {
        let mut a = App::new(Origin::Local, Duration::from_secs(2));
        a.update(fixtures::snapshot());
        a
    }

    #[test]
    fn main_table_80x24() {
        insta::assert_snapshot!(render(&mut local(), 80, 24));
    }

    #[test]
    fn main_table_wide() {
        insta::assert_snapshot!(render(&mut local(), 160, 40));
    }

    #[test]
    fn sorted_by_name_reversed() {
        let mut a = local();
        key(&mut a, KeyCode::Right);
        key(&mut a, KeyCode::Right);
        key(&mut a, KeyCode::Char('r'));
        insta::assert_snapshot!(render(&mut a, 80, 24));
    }

    #[test]
    fn filtered_while_typing() {
        let mut a = local();
        key(&mut a, KeyCode::Char('/'));
        for c in "ngi".chars() {
            key(&mut a, KeyCode::Char(c));
        }
        insta::assert_snapshot!(render(&mut a, 80, 24));
    }

    #[test]
    fn detail_of_the_top_process() {
        let mut a = local();
        key(&mut a, KeyCode::Enter);
        insta::assert_snapshot!(render(&mut a, 100, 30));
    }

    #[test]
    fn detail_at_80x24() {
        let mut a = local();
        key(&mut a, KeyCode::Enter);
        insta::assert_snapshot!(render(&mut a, 80, 24));
    }

    #[test]
    fn grouped_by_command() {
        let mut a = local();
        key(&mut a, KeyCode::Char('t'));
        insta::assert_snapshot!(render(&mut a, 120, 20));
    }

    #[test]
    fn help_overlay() {
        let mut a = local();
        key(&mut a, KeyCode::Char('?'));
        insta::assert_snapshot!(render(&mut a, 100, 34));
    }

    #[test]
    fn remote_agent_unreachable() {
        let mut a = App::new(
            Origin::Remote("http://10.0.0.7:9435".into()),
            Duration::from_secs(2),
        );
        a.update(fixtures::snapshot());
        a.failed("connection refused".into(), fixtures::END - 5.0);
        a.failed("connection refused".into(), fixtures::END - 3.0);
        insta::assert_snapshot!(render(&mut a, 80, 24));
    }

    #[test]
    fn remote_agent_unreachable_from_the_start() {
        let mut a = App::new(
            Origin::Remote("http://10.0.0.7:9435".into()),
            Duration::from_secs(2),
        );
        a.failed("connection refused".into(), fixtures::END);
        insta::assert_snapshot!(render(&mut a, 80, 24));
    }

    #[test]
    fn tiny_terminal_does_not_panic() {
        let mut a = local();
        key(&mut a, KeyCode::Enter);
        for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 8)] {
            render(&mut a, w, h);
        }
        key(&mut a, KeyCode::Char('?'));
        render(&mut a, 12, 4);
    }
}
