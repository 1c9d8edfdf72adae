//! The state of `copyscope top` and how keys change it. No terminal here: key handling is
//! a state transition, tested as one.

use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::view::{self, Column, Grouping, Line, LineKey};
use crate::model::{ProcessRow, Snapshot};

/// Refresh intervals `+` and `-` step through, in seconds.
pub const INTERVALS: [f64; 7] = [0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0];

/// Where the numbers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// This host's kernel, through probes `top` attached itself.
    Local,
    /// A running agent's `/api/v1/snapshot`.
    Remote(String),
}

/// The last attempt to get a window.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Waiting for the first window.
    Starting,
    Ok,
    /// The source failed: what went wrong, since when (Unix seconds), how many attempts.
    Failing {
        error: String,
        since: f64,
        attempts: u32,
    },
}

/// What the caller has to do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// The interval changed: reschedule the next refresh.
    Reschedule,
}

#[derive(Debug, Clone)]
pub struct App {
    pub origin: Origin,
    pub snapshot: Option<Snapshot>,
    /// A window that arrived while paused, shown on resume.
    pub pending: Option<Snapshot>,
    pub status: Status,
    pub sort: Column,
    pub reverse: bool,
    pub filter: String,
    /// Typing a filter after `/`.
    pub editing: bool,
    pub paused: bool,
    pub interval: Duration,
    pub grouping: Grouping,
    pub selected: Option<LineKey>,
    /// The detail view of the selected line is open.
    pub detail: bool,
    pub help: bool,
    /// The selected process as last seen, kept when it leaves the table (exited or idle).
    pub last_seen: Option<(ProcessRow, f64)>,
    /// First visible line of the table (kept by the drawing code, read for paging).
    pub page: usize,
}

impl App {
    pub fn new(origin: Origin, interval: Duration) -> App {
        App {
            origin,
            snapshot: None,
            pending: None,
            status: Status::Starting,
            sort: Column::Advice,
            reverse: false,
            filter: String::new(),
            editing: false,
            paused: false,
            interval,
            grouping: Grouping::Process,
            selected: None,
            detail: false,
            help: false,
            last_seen: None,
            page: 10,
        }
    }

    /// The lines on show: filtered and sorted.
    pub fn lines(&self) -> Vec<Line> {
        match &self.snapshot {
            Some(s) => view::select(
                view::lines(s, self.grouping),
                &self.filter,
                self.sort,
                self.reverse,
            ),
            None => Vec::new(),
        }
    }

    /// Index of the selected line among `lines`, if it is there.
    pub fn selected_index(&self, lines: &[Line]) -> Option<usize> {
        let key = self.selected.as_ref()?;
        lines.iter().position(|l| &l.key == key)
    }

    /// A new window arrived.
    pub fn update(&mut self, s: Snapshot) {
        self.status = Status::Ok;
        if self.paused {
            self.pending = Some(s);
            return;
        }
        self.show(s);
    }

    fn show(&mut self, s: Snapshot) {
        let before = self.lines();
        let old_index = self.selected_index(&before);
        self.snapshot = Some(s);
        self.remember_selected();
        let now = self.lines();
        if self.selected.is_some() && self.selected_index(&now).is_none() && !self.detail {
            // The selected line left the table (the process exited or went idle): select
            // the line now at its place.
            self.selected = old_index
                .map(|i| i.min(now.len().saturating_sub(1)))
                .and_then(|i| now.get(i))
                .map(|l| l.key.clone());
        }
    }

    fn remember_selected(&mut self) {
        if let (Some(LineKey::Pid(pid)), Some(s)) = (&self.selected, &self.snapshot)
            && let Some(p) = s.processes.iter().find(|p| p.pid == *pid)
        {
            self.last_seen = Some((p.clone(), s.end_unix_seconds));
        }
    }

    /// The source failed (the agent is unreachable, say); the last window stays on show.
    pub fn failed(&mut self, error: String, now: f64) {
        self.status = match &self.status {
            Status::Failing {
                since, attempts, ..
            } => Status::Failing {
                error,
                since: *since,
                attempts: attempts + 1,
            },
            _ => Status::Failing {
                error,
                since: now,
                attempts: 1,
            },
        };
    }

    pub fn on_key(&mut self, k: KeyEvent) -> Effect {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Effect::Quit;
        }
        if self.editing {
            match k.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            self.keep_selection_visible();
            return Effect::None;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return if k.code == KeyCode::Char('q') {
                Effect::Quit
            } else {
                Effect::None
            };
        }
        match k.code {
            KeyCode::Char('q') => return Effect::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => self.help = true,
            KeyCode::Esc => {
                if self.detail {
                    self.detail = false;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                }
            }
            KeyCode::Enter => {
                if self.detail {
                    self.detail = false;
                } else {
                    if self.selected.is_none() {
                        self.move_by(0);
                    }
                    self.detail = self.selected.is_some();
                    self.remember_selected();
                }
            }
            KeyCode::Backspace if self.detail => self.detail = false,
            KeyCode::Char('/') => {
                self.editing = true;
                self.detail = false;
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                if !self.paused
                    && let Some(s) = self.pending.take()
                {
                    self.show(s);
                }
            }
            KeyCode::Char('+') | KeyCode::Char('=') => return self.step_interval(1),
            KeyCode::Char('-') => return self.step_interval(-1),
            KeyCode::Char('t') => {
                self.grouping = match self.grouping {
                    Grouping::Process => Grouping::Command,
                    Grouping::Command => Grouping::Process,
                };
                self.selected = None;
                self.detail = false;
            }
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('<') => self.sort_by(-1),
            KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('>') => self.sort_by(1),
            KeyCode::Up | KeyCode::Char('k') if !self.detail => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') if !self.detail => self.move_by(1),
            KeyCode::PageUp if !self.detail => self.move_by(-(self.page as isize)),
            KeyCode::PageDown if !self.detail => self.move_by(self.page as isize),
            KeyCode::Home | KeyCode::Char('g') if !self.detail => self.move_to(0),
            KeyCode::End | KeyCode::Char('G') if !self.detail => self.move_to(usize::MAX),
            _ => {}
        }
        Effect::None
    }

    fn sort_by(&mut self, step: isize) {
        let all = Column::ALL;
        let i = all.iter().position(|c| *c == self.sort).unwrap_or(0) as isize;
        let n = all.len() as isize;
        self.sort = all[((i + step).rem_euclid(n)) as usize];
    }

    fn step_interval(&mut self, step: isize) -> Effect {
        let now = self.interval.as_secs_f64();
        let next = if step > 0 {
            INTERVALS.iter().copied().find(|v| *v > now + 1e-9)
        } else {
            INTERVALS.iter().rev().copied().find(|v| *v < now - 1e-9)
        };
        match next {
            Some(v) => {
                self.interval = Duration::from_secs_f64(v);
                Effect::Reschedule
            }
            None => Effect::None,
        }
    }

    fn move_by(&mut self, step: isize) {
        let lines = self.lines();
        if lines.is_empty() {
            self.selected = None;
            return;
        }
        let i = match self.selected_index(&lines) {
            Some(i) => (i as isize + step).clamp(0, lines.len() as isize - 1) as usize,
            None => 0,
        };
        self.selected = Some(lines[i].key.clone());
    }

    fn move_to(&mut self, i: usize) {
        let lines = self.lines();
        self.selected = lines
            .get(i.min(lines.len().saturating_sub(1)))
            .map(|l| l.key.clone());
    }

    /// After the filter changed: keep the selection if it still shows, else the first line.
    fn keep_selection_visible(&mut self) {
        let lines = self.lines();
        if self.selected_index(&lines).is_none() {
            self.selected = lines.first().map(|l| l.key.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn app() -> App {
        let mut a = App::new(Origin::Local, Duration::from_secs(2));
        a.update(fixtures::snapshot());
        a
    }

    fn pids(a: &App) -> Vec<Option<u32>> {
        a.lines().iter().map(|l| l.pid).collect()
    }

    #[test]
    fn q_and_ctrl_c_quit() {
        let mut a = app();
        assert_eq!(a.on_key(key(KeyCode::Char('q'))), Effect::Quit);
        assert_eq!(
            a.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Effect::Quit
        );
    }

    #[test]
    fn arrows_and_vi_keys_move_the_selection_within_bounds() {
        let mut a = app();
        let order = pids(&a);
        a.on_key(key(KeyCode::Down));
        assert_eq!(a.selected, Some(LineKey::Pid(order[0].unwrap())));
        a.on_key(key(KeyCode::Char('j')));
        assert_eq!(a.selected, Some(LineKey::Pid(order[1].unwrap())));
        a.on_key(key(KeyCode::Char('k')));
        a.on_key(key(KeyCode::Up));
        assert_eq!(a.selected, Some(LineKey::Pid(order[0].unwrap())));
        a.on_key(key(KeyCode::Char('G')));
        assert_eq!(
            a.selected,
            Some(LineKey::Pid(order.last().unwrap().unwrap()))
        );
        a.on_key(key(KeyCode::Down));
        assert_eq!(
            a.selected,
            Some(LineKey::Pid(order.last().unwrap().unwrap()))
        );
        a.on_key(key(KeyCode::Home));
        assert_eq!(a.selected, Some(LineKey::Pid(order[0].unwrap())));
    }

    #[test]
    fn sort_keys_cycle_columns_and_reverse() {
        let mut a = app();
        assert_eq!(a.sort, Column::Advice);
        a.on_key(key(KeyCode::Right));
        assert_eq!(a.sort, Column::Pid, "wraps around");
        a.on_key(key(KeyCode::Char('l')));
        assert_eq!(a.sort, Column::Comm);
        let names: Vec<_> = a.lines().iter().map(|l| l.comm.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        a.on_key(key(KeyCode::Char('r')));
        let names: Vec<_> = a.lines().iter().map(|l| l.comm.clone()).collect();
        sorted.reverse();
        assert_eq!(names, sorted);
        a.on_key(key(KeyCode::Char('h')));
        a.on_key(key(KeyCode::Left));
        assert_eq!(a.sort, Column::Advice);
    }

    #[test]
    fn slash_filters_by_name_and_esc_clears() {
        let mut a = app();
        let all = a.lines().len();
        a.on_key(key(KeyCode::Char('/')));
        assert!(a.editing);
        for c in "nginx".chars() {
            a.on_key(key(KeyCode::Char(c)));
        }
        // q while typing is text, not quit.
        assert_eq!(a.on_key(key(KeyCode::Char('q'))), Effect::None);
        a.on_key(key(KeyCode::Backspace));
        a.on_key(key(KeyCode::Enter));
        assert!(!a.editing);
        assert_eq!(a.filter, "nginx");
        assert!(a.lines().iter().all(|l| l.comm.contains("nginx")));
        assert!(a.lines().len() < all);
        a.on_key(key(KeyCode::Esc));
        assert_eq!(a.lines().len(), all);
    }

    #[test]
    fn enter_opens_the_detail_and_esc_closes_it() {
        let mut a = app();
        a.on_key(key(KeyCode::Enter));
        assert!(a.detail);
        assert!(a.selected.is_some());
        // Moving keys do not move the selection under an open detail view.
        let sel = a.selected.clone();
        a.on_key(key(KeyCode::Down));
        assert_eq!(a.selected, sel);
        a.on_key(key(KeyCode::Esc));
        assert!(!a.detail);
    }

    #[test]
    fn pause_holds_the_window_until_resumed() {
        let mut a = app();
        a.on_key(key(KeyCode::Char('p')));
        let mut next = fixtures::snapshot();
        next.processes.truncate(1);
        a.update(next);
        assert!(a.lines().len() > 1, "still the old window");
        a.on_key(key(KeyCode::Char(' ')));
        assert_eq!(a.lines().len(), 1);
    }

    #[test]
    fn plus_and_minus_step_the_interval_within_bounds() {
        let mut a = app();
        assert_eq!(a.on_key(key(KeyCode::Char('+'))), Effect::Reschedule);
        assert_eq!(a.interval, Duration::from_secs(3));
        for _ in 0..10 {
            a.on_key(key(KeyCode::Char('-')));
        }
        assert_eq!(a.interval, Duration::from_millis(500));
        assert_eq!(a.on_key(key(KeyCode::Char('-'))), Effect::None);
    }

    #[test]
    fn t_groups_processes_by_command() {
        let mut a = app();
        let procs = a.lines().len();
        a.on_key(key(KeyCode::Char('t')));
        let groups = a.lines();
        assert!(groups.len() < procs);
        let nginx = groups.iter().find(|l| l.comm == "nginx").unwrap();
        assert_eq!(nginx.processes, 2);
        assert_eq!(nginx.pid, None);
    }

    #[test]
    fn help_opens_with_question_mark_and_any_key_closes_it() {
        let mut a = app();
        a.on_key(key(KeyCode::Char('?')));
        assert!(a.help);
        assert_eq!(a.on_key(key(KeyCode::Char('x'))), Effect::None);
        assert!(!a.help);
    }

    #[test]
    fn a_selected_process_that_exits_keeps_its_detail_and_the_table_moves_on() {
        let mut a = app();
        let order = pids(&a);
        a.on_key(key(KeyCode::Down));
        a.on_key(key(KeyCode::Down));
        let gone = order[1].unwrap();
        assert_eq!(a.selected, Some(LineKey::Pid(gone)));
        let mut next = fixtures::snapshot();
        next.processes.retain(|p| p.pid != gone);
        next.advice.retain(|f| f.pid != Some(gone));
        a.update(next.clone());
        // The selection moved to the line now in that place.
        assert_eq!(a.selected, Some(LineKey::Pid(order[2].unwrap())));
        // With the detail open, the selection stays and the last figures are kept.
        a.on_key(key(KeyCode::Enter));
        let sel = a.selected.clone();
        let mut later = next.clone();
        later.processes.clear();
        a.update(later);
        assert_eq!(a.selected, sel);
        assert!(a.last_seen.is_some());
    }

    #[test]
    fn failures_count_attempts_and_a_window_clears_them() {
        let mut a = app();
        a.failed("connection refused".into(), 100.0);
        a.failed("connection refused".into(), 102.0);
        assert_eq!(
            a.status,
            Status::Failing {
                error: "connection refused".into(),
                since: 100.0,
                attempts: 2
            }
        );
        assert!(a.snapshot.is_some(), "the last window stays");
        a.update(fixtures::snapshot());
        assert_eq!(a.status, Status::Ok);
    }
}
