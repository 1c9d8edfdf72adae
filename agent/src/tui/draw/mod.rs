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
    view::{self, Column, Grouping, Line, count, mbps, percent},
};

mod detail;
#[cfg(test)]
mod tests;

use detail::draw_detail;

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
