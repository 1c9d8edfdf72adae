//! Snapshots of the screens drawn from the fixtures.

use std::time::Duration;

use ratatui::{Terminal, backend::TestBackend, crossterm::event::KeyCode};

use super::*;
use crate::tui::{app::Origin, fixtures};

/// The snapshots stay in tui/snapshots, where they were written while these tests were
/// in draw.rs.
macro_rules! assert_snapshot {
        ($e:expr) => {
            insta::with_settings!({ snapshot_path => "../snapshots" }, {
                insta::assert_snapshot!($e)
            })
        };
    }

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
    assert_snapshot!(render(&mut local(), 80, 24));
}

#[test]
fn main_table_wide() {
    assert_snapshot!(render(&mut local(), 160, 40));
}

#[test]
fn sorted_by_name_reversed() {
    let mut a = local();
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Right);
    key(&mut a, KeyCode::Char('r'));
    assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn filtered_while_typing() {
    let mut a = local();
    key(&mut a, KeyCode::Char('/'));
    for c in "ngi".chars() {
        key(&mut a, KeyCode::Char(c));
    }
    assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn detail_of_the_top_process() {
    let mut a = local();
    key(&mut a, KeyCode::Enter);
    assert_snapshot!(render(&mut a, 100, 30));
}

#[test]
fn detail_at_80x24() {
    let mut a = local();
    key(&mut a, KeyCode::Enter);
    assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn grouped_by_command() {
    let mut a = local();
    key(&mut a, KeyCode::Char('t'));
    assert_snapshot!(render(&mut a, 120, 20));
}

#[test]
fn help_overlay() {
    let mut a = local();
    key(&mut a, KeyCode::Char('?'));
    assert_snapshot!(render(&mut a, 100, 34));
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
    assert_snapshot!(render(&mut a, 80, 24));
}

#[test]
fn remote_agent_unreachable_from_the_start() {
    let mut a = App::new(
        Origin::Remote("http://10.0.0.7:9435".into()),
        Duration::from_secs(2),
    );
    a.failed("connection refused".into(), fixtures::END);
    assert_snapshot!(render(&mut a, 80, 24));
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
