//! `cargo xtask bench scrape-under-attack`: `copyscope run` while one address (127.0.0.1)
//! holds many idle connections (connected, nothing sent) and many slowloris ones (a
//! request head sent a byte at a time, never finished), and a scraper beside them fetches
//! `/metrics` over and over. Four modes: plain HTTP, TLS, basic auth, TLS with basic auth.
//!
//! The attacker holds its connections the way slowloris tools do: each round it opens
//! new ones for those the agent closed, so the agent faces the full count for the whole
//! run. With TLS, the slow connections send a TLS record header and then its handshake
//! message a byte at a time (a handshake that never ends), not plain HTTP.
//!
//! `--from 127.0.0.2` makes the attacker another address than the scraper's (127.0.0.1).
//!
//! The scraper is curl, a new process and connection (and TLS handshake) per scrape, as
//! the most a scrape can cost; its latency is curl's own `time_total`. Per mode: the
//! latency's p50, p99 and max, failed scrapes (no 200 within 10 s, Prometheus's default
//! scrape timeout), the agent's sockets and resident memory.

use std::{
    mem::size_of,
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{MIB, fixed, is_root, quantile, status_bytes, verdict};

mod attacker;

use attacker::*;

/// What one run measures.
pub struct Settings {
    pub bin_dir: PathBuf,
    pub idle: usize,
    pub slow: usize,
    pub scrapes: usize,
    pub gap: Duration,
    pub limit: Duration,
    pub warmup: Duration,
    pub slow_byte: Duration,
    pub round: Duration,
    pub modes: Vec<Mode>,
    /// The attacker's source address (the scraper's is 127.0.0.1).
    pub from: std::net::Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tls,
    Auth,
    TlsAuth,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "plain" => Mode::Plain,
            "tls" => Mode::Tls,
            "auth" => Mode::Auth,
            "tls+auth" => Mode::TlsAuth,
            _ => bail!("{s:?} is no mode: give plain, tls, auth or tls+auth"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Tls => "tls",
            Mode::Auth => "auth",
            Mode::TlsAuth => "tls+auth",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::TlsAuth)
    }

    fn auth(self) -> bool {
        matches!(self, Mode::Auth | Mode::TlsAuth)
    }
}

/// The goal: a scrape's p99 under this, in seconds.
const P99_GOAL: f64 = 1.0;
/// Prometheus's default scrape timeout: a scrape slower than this failed.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-under-attack";

/// One mode's figures.
struct Outcome {
    mode: Mode,
    /// Seconds of the scrapes that got a 200.
    latencies: Vec<f64>,
    failed: usize,
    /// What the failures were (the first few).
    failures: Vec<String>,
    /// The attacker's connections open (connected) when the scrapes ran: min and max.
    held: (u64, u64),
    /// Connections still connecting (in the agent's backlog or SYN-queued): max.
    pending: u64,
    /// Connections the agent closed and the attacker opened again, per second.
    reopened_per_second: f64,
    /// The agent's sockets (max over the samples).
    sockets: usize,
    rss_max: f64,
    hwm: f64,
}

pub fn run(s: &Settings) -> Result<()> {
    if !is_root() {
        bail!("the benchmark runs copyscope run, which loads eBPF programs: run it as root");
    }
    if s.modes.is_empty() || s.scrapes == 0 {
        bail!("nothing to measure: give at least one mode and one scrape");
    }
    raise_fd_limit(s.idle + s.slow + 256)?;
    let dir = std::env::temp_dir().join(format!("copyscope-bench-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files = WebFiles::make(&dir)?;
    let mut outcomes = Vec::new();
    for &mode in &s.modes {
        eprintln!(
            "xtask: {}: {} idle and {} slowloris connections, {} scrapes",
            mode.name(),
            s.idle,
            s.slow,
            s.scrapes
        );
        let o = measure(s, mode, &files)?;
        eprintln!(
            "xtask: {}: p99 {} ms, {} failed",
            mode.name(),
            fixed(p(&o.latencies, 0.99) * 1e3, 0),
            o.failed
        );
        outcomes.push(o);
    }
    let _ = std::fs::remove_dir_all(&dir);
    report(s, &outcomes);
    Ok(())
}

/// The latency at quantile `q` of the successful scrapes.
fn p(latencies: &[f64], q: f64) -> f64 {
    let mut v = latencies.to_vec();
    v.sort_by(f64::total_cmp);
    quantile(&v, q)
}

fn report(s: &Settings, outcomes: &[Outcome]) {
    println!(
        "\n### Scrapes under attack: {} idle + {} slowloris connections from {}, scrapes from 127.0.0.1\n",
        s.idle, s.slow, s.from
    );
    println!(
        "A scrape is a new curl process and connection; failed: no 200 within {} s. \
Held: the attacker's connections open while the scrapes ran (min–max); reopened: the \
ones the agent closed and the attacker opened again. Sockets, VmRSS: the agent's, max \
over the run.\n",
        SCRAPE_TIMEOUT.as_secs()
    );
    println!(
        "| mode | scrapes | failed | p50 ms | p99 ms | max ms (answered) | held | pending | reopened/s | agent sockets | VmRSS MiB | VmHWM MiB | p99 < {P99_GOAL} s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for o in outcomes {
        let all = o.latencies.len() + o.failed;
        // A failed scrape counts as slower than any that succeeded.
        let mut every = o.latencies.clone();
        every.extend(std::iter::repeat_n(f64::INFINITY, o.failed));
        let ms = |q: f64| {
            let v = p(&every, q);
            if v.is_infinite() {
                "failed".to_string()
            } else {
                fixed(v * 1e3, 1)
            }
        };
        let p99 = p(&every, 0.99);
        println!(
            "| {} | {all} | {} | {} | {} | {} | {}–{} | {} | {} | {} | {} | {} | {} |",
            o.mode.name(),
            o.failed,
            ms(0.5),
            ms(0.99),
            fixed(p(&o.latencies, 1.0) * 1e3, 1),
            o.held.0,
            o.held.1,
            o.pending,
            fixed(o.reopened_per_second, 0),
            o.sockets,
            fixed(o.rss_max / MIB, 1),
            fixed(o.hwm / MIB, 1),
            verdict(p99, P99_GOAL),
        );
    }
    if outcomes.iter().any(|o| !o.failures.is_empty()) {
        println!("\nFailed scrapes (the first five of each mode):\n");
        for o in outcomes {
            for f in &o.failures {
                println!("- {}: {f}", o.mode.name());
            }
        }
    }
}

/// The web configurations' files: a self-signed certificate for 127.0.0.1 and a bcrypt
/// hash of the scraper's password at a low cost.
struct WebFiles {
    dir: PathBuf,
    cert: PathBuf,
    hash: String,
}

impl WebFiles {
    fn make(dir: &Path) -> Result<WebFiles> {
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .args(["-keyout", "server.key", "-out", "server.crt"])
            .current_dir(dir)
            .output()
            .context("openssl (Debian package openssl; cargo xtask setup installs it)")?;
        if !out.status.success() {
            bail!(
                "openssl could not make a certificate: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(WebFiles {
            dir: dir.to_path_buf(),
            cert: dir.join("server.crt"),
            hash: bcrypt::hash(PASSWORD, 4).context("a bcrypt hash")?,
        })
    }

    /// The `--web-config` file for `mode`, none for plain HTTP.
    fn config(&self, mode: Mode) -> Result<Option<PathBuf>> {
        let mut text = String::new();
        if mode.tls() {
            text.push_str("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
        }
        if mode.auth() {
            text.push_str(&format!("basic_auth_users:\n  {USER}: '{}'\n", self.hash));
        }
        if text.is_empty() {
            return Ok(None);
        }
        let path = self
            .dir
            .join(format!("web-{}.yml", mode.name().replace('+', "-")));
        std::fs::write(&path, text)?;
        Ok(Some(path))
    }
}

fn measure(s: &Settings, mode: Mode, files: &WebFiles) -> Result<Outcome> {
    let mut args = Vec::new();
    if let Some(c) = files.config(mode)? {
        args.push("--web-config".into());
        args.push(c.to_string_lossy().into_owned());
    }
    let (mut agent, addr) = super::start_copyscope_run(&s.bin_dir, 1.0, &args)?;
    let scraper = Scraper {
        url: format!(
            "{}://{addr}/metrics",
            if mode.tls() { "https" } else { "http" }
        ),
        ca: mode.tls().then(|| files.cert.clone()),
        auth: mode.auth(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(scraper.scrape(), Ok((200, _))) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{}: copyscope run is not serving {}",
                mode.name(),
                scraper.url
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let target: SocketAddrV4 = addr.parse().context("the agent's address")?;
    let stats = Arc::new(AttackStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stats, stop) = (stats.clone(), stop.clone());
        let attack = Attack {
            target,
            idle: s.idle,
            slow: s.slow,
            slow_bytes: if mode.tls() {
                slow_tls_prefix()
            } else {
                b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec()
            },
            slow_byte: s.slow_byte,
            round: s.round,
            from: s.from,
        };
        std::thread::spawn(move || attack.run(&stats, &stop))
    };
    let result = scrape_phase(s, &scraper, agent.pid(), &stats);
    stop.store(true, Ordering::SeqCst);
    let attack_result = attacker
        .join()
        .map_err(|_| anyhow::anyhow!("the attacker thread panicked"))?;
    let hwm = status_bytes(agent.pid(), "VmHWM").unwrap_or(f64::NAN);
    let status = agent.stop()?;
    attack_result?;
    let mut o = result?;
    if !status.success() {
        bail!("{}: copyscope run exited with {status}", mode.name());
    }
    o.mode = mode;
    o.hwm = hwm;
    Ok(o)
}

/// Warm-up, then the scrapes, with the agent's memory and sockets sampled between them.
fn scrape_phase(s: &Settings, scraper: &Scraper, pid: u32, stats: &AttackStats) -> Result<Outcome> {
    // The attacker's first round opens everything it holds.
    let opened = Instant::now();
    while stats.rounds.load(Ordering::SeqCst) == 0 {
        if opened.elapsed() > Duration::from_secs(120) {
            bail!("the attacker did not finish a round in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(s.warmup);
    let reopened_before = stats.reopened.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut o = Outcome {
        mode: Mode::Plain,
        latencies: Vec::new(),
        failed: 0,
        failures: Vec::new(),
        held: (u64::MAX, 0),
        pending: 0,
        reopened_per_second: 0.0,
        sockets: 0,
        rss_max: 0.0,
        hwm: f64::NAN,
    };
    let sample = |o: &mut Outcome| {
        let held = stats.connected.load(Ordering::SeqCst);
        o.held = (o.held.0.min(held), o.held.1.max(held));
        o.pending = o.pending.max(stats.pending.load(Ordering::SeqCst));
        o.sockets = o.sockets.max(sockets(pid));
        if let Ok(rss) = status_bytes(pid, "VmRSS") {
            o.rss_max = o.rss_max.max(rss);
        }
    };
    for i in 0..s.scrapes {
        if started.elapsed() > s.limit {
            eprintln!(
                "xtask: stopped after {i} scrapes: the {} s limit is up",
                s.limit.as_secs()
            );
            break;
        }
        sample(&mut o);
        match scraper.scrape() {
            Ok((200, secs)) => o.latencies.push(secs),
            other => {
                o.failed += 1;
                if o.failures.len() < 5 {
                    o.failures.push(match other {
                        Ok((code, secs)) => format!("HTTP {code} after {secs:.3} s"),
                        Err(e) => format!("{e:#}"),
                    });
                }
            }
        }
        std::thread::sleep(s.gap);
    }
    sample(&mut o);
    let secs = started.elapsed().as_secs_f64();
    o.reopened_per_second = (stats.reopened.load(Ordering::SeqCst) - reopened_before) as f64 / secs;
    Ok(o)
}

/// curl fetching `/metrics`, a new process (and connection) each time.
struct Scraper {
    url: String,
    ca: Option<PathBuf>,
    auth: bool,
}

impl Scraper {
    /// (HTTP status, curl's time_total in seconds); status 0 when nothing was answered.
    fn scrape(&self) -> Result<(u16, f64)> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
            .arg("--max-time")
            .arg(SCRAPE_TIMEOUT.as_secs().to_string());
        if let Some(ca) = &self.ca {
            cmd.arg("--cacert").arg(ca);
        }
        if self.auth {
            cmd.arg("-u").arg(format!("{USER}:{PASSWORD}"));
        }
        let out = cmd
            .arg(&self.url)
            .stdin(Stdio::null())
            .output()
            .context("curl (Debian package curl)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let secs: f64 = words
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(f64::NAN);
        if !out.status.success() {
            bail!(
                "curl exit {} after {secs:.3} s ({code})",
                out.status.code().unwrap_or(-1)
            );
        }
        Ok((code, secs))
    }
}
