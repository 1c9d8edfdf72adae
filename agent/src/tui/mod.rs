//! `copyscope top`: the top-like terminal view, local (probes attached here) or remote (a
//! running agent's `/api/v1/snapshot`).

pub mod app;
pub mod draw;
pub mod source;
pub mod view;

#[cfg(test)]
pub(crate) mod fixtures;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use self::{
    app::{App, Effect, Origin},
    source::{Local, Remote, Source},
    view::Column,
};
use crate::{
    args::{AdviceArgs, parse_interval},
    signals,
};

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Show a running agent (`copyscope run`) instead of attaching probes here, e.g.
    /// http://127.0.0.1:9435 through `kubectl port-forward`, or https://HOST:PORT for one
    /// with TLS (--web-config). Needs no privileges.
    #[arg(long, env = "COPYSCOPE_TOP_FROM", value_name = "URL")]
    pub from: Option<String>,

    #[command(flatten)]
    pub client: source::ClientArgs,

    /// Seconds between refreshes (+ and - change it while running).
    #[arg(long, short = 'i', default_value_t = 2.0, value_parser = parse_interval)]
    pub interval: f64,

    /// Column to sort by: pid, comm, container, syscalls, mode, switches, to-user,
    /// from-user, zero-copy, direct, hit, advice.
    #[arg(long, value_parser = parse_column)]
    pub sort: Option<Column>,

    /// Show only lines whose command, container or pid matches.
    #[arg(long)]
    pub filter: Option<String>,

    #[command(flatten)]
    pub scope: crate::cli::ScopeArgs,

    #[command(flatten)]
    pub advice: AdviceArgs,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn run(args: &TopArgs) -> Result<i32> {
    let interval = Duration::from_secs_f64(args.interval);
    // Everything that can fail for a reason the user must read happens before the
    // terminal switches to the full-screen view.
    let (source, origin): (Box<dyn Source>, Origin) = match &args.from {
        Some(url) => (
            Box::new(Remote::new(url, Duration::from_secs(3), &args.client)?),
            Origin::Remote(url.trim_end_matches('/').to_string()),
        ),
        None if args.client.touched() => anyhow::bail!(
            "--cacert, --cert, --key, --user and --password-file are for an agent's \
             address (--from URL)"
        ),
        None => (
            Box::new(Local::start(args.advice.thresholds()?)?),
            Origin::Local,
        ),
    };
    if args.from.is_none() && args.scope.pod.is_some() {
        anyhow::bail!(
            "--pod needs pod names, which an agent started with --kube-node knows: use it \
             with --from URL (locally: --container ID)"
        );
    }
    let mut source: Box<dyn Source> = if args.scope.is_set() {
        Box::new(Scoped {
            inner: source,
            scope: args.scope.clone(),
        })
    } else {
        source
    };
    let mut app = App::new(origin, interval);
    if let Some(c) = &args.sort {
        app.sort = *c;
    }
    app.filter = args.filter.clone().unwrap_or_default();
    signals::install();
    // Raw mode, alternate screen, and a panic hook that puts the terminal back first.
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = event_loop(&mut terminal, &mut app, source.as_mut());
    ratatui::restore();
    result.map(|()| 0)
}

/// The windows of `inner` cut to the processes of a container or pod: the totals of the
/// header are theirs.
struct Scoped {
    inner: Box<dyn Source>,
    scope: crate::cli::ScopeArgs,
}

impl Source for Scoped {
    fn fetch(&mut self) -> Result<crate::model::Snapshot> {
        let mut s = self.inner.fetch()?;
        self.scope.apply(&mut s);
        Ok(s)
    }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    source: &mut dyn Source,
) -> Result<()> {
    // A remote agent already has a window: fetch at once. Local probes need one interval.
    let mut next = match app.origin {
        Origin::Remote(_) => Instant::now(),
        Origin::Local => Instant::now() + app.interval,
    };
    loop {
        terminal.draw(|f| draw::draw(f, app, unix_now()))?;
        if signals::stop_requested() {
            return Ok(());
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => match app.on_key(k) {
                    Effect::Quit => return Ok(()),
                    Effect::Reschedule => next = Instant::now() + app.interval,
                    Effect::None => {}
                },
                // A resize is redrawn at the top of the loop.
                _ => {}
            }
        }
        if Instant::now() >= next {
            match source.fetch() {
                Ok(s) => app.update(s),
                Err(e) => app.failed(format!("{e:#}"), unix_now()),
            }
            next = Instant::now() + app.interval;
        }
    }
}

/// Parse a sort column name for `--sort`.
pub fn parse_column(s: &str) -> Result<Column, String> {
    let want = s.to_lowercase();
    let names = [
        ("pid", Column::Pid),
        ("comm", Column::Comm),
        ("container", Column::Container),
        ("syscalls", Column::Syscalls),
        ("mode", Column::ModeSwitches),
        ("switches", Column::Switches),
        ("to-user", Column::CopyToUser),
        ("from-user", Column::CopyFromUser),
        ("zero-copy", Column::ZeroCopy),
        ("direct", Column::DirectIo),
        ("hit", Column::HitRatio),
        ("advice", Column::Advice),
    ];
    names
        .iter()
        .find(|(n, _)| *n == want)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            format!(
                "unknown column {s:?}: one of {}",
                names.map(|(n, _)| n).join(", ")
            )
        })
}
