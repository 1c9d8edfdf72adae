//! `cargo xtask bench overhead`: copyscope's always-on cost, mostly from the kernel's own
//! BPF run-time statistics (run_cnt, run_time_ns per program) read around each timed
//! workload, beside the floor any syscall tracer pays, an empty sched_switch program and
//! bpftrace doing the same counting. One run, all configurations interleaved per round
//! (the order rotating), results printed as Markdown tables.
//!
//! `cargo xtask bench soak`: `copyscope run` beside a steady workload (one process and a
//! steady churn of short-lived ones) for minutes: the agent's resident memory, its maps'
//! kernel memory, counted against expected syscalls, and the collection time per window,
//! early against late.
//!
//! `cargo xtask bench scrape-under-attack`: `/metrics` latency while one address holds
//! idle and slowloris connections (in bench_attack.rs).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;

use crate::util::{is_root, output, root, show, succeeds};

mod attack;
mod fdinfo;
mod figures;
mod overhead;
mod procs;
mod scale;
mod soak;

use figures::*;
use procs::*;

#[derive(Subcommand)]
pub enum Which {
    /// copyscope's always-on cost: per-program run time from the kernel's BPF statistics,
    /// wall-clock cost per call, map memory; against an empty program and bpftrace.
    Overhead {
        /// pread and getppid calls per measurement.
        #[arg(long, default_value_t = 200_000)]
        calls: u64,
        /// Ping-pong rounds per context-switch measurement.
        #[arg(long, default_value_t = 20_000)]
        switch_rounds: u64,
        /// Rounds; each round measures every configuration and workload once.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// More arguments for `copyscope run`, split on whitespace (e.g.
        /// "--families syscalls,sched" to measure some probe families only).
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        copyscope_args: String,
    },
    /// A bounded soak: the agent and a steady workload for minutes; memory, drift and
    /// collection time, early against late.
    Soak {
        /// Minutes the workload runs.
        #[arg(long, default_value_t = 5.0)]
        minutes: f64,
        /// The agent's collection interval, seconds.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Then, with an agent of its own collecting every --burst-interval seconds, this
        /// many short-lived processes at once, within one window (0: no burst).
        #[arg(long, default_value_t = 20_000)]
        burst: u64,
        /// The burst agent's collection interval, seconds: long enough that the whole
        /// burst exits within one window.
        #[arg(long, default_value_t = 60.0)]
        burst_interval: f64,
    },
    /// `/metrics` latency and the agent's memory while one address holds idle and
    /// slowloris connections: plain HTTP, TLS, basic auth, TLS with basic auth.
    ScrapeUnderAttack {
        /// Idle connections held (connected, nothing sent).
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Slowloris connections held (a request head a byte at a time, never finished).
        #[arg(long, default_value_t = 1_000)]
        slow: usize,
        /// Scrapes per mode, one after another.
        #[arg(long, default_value_t = 300)]
        scrapes: usize,
        /// Pause between two scrapes, milliseconds.
        #[arg(long, default_value_t = 100)]
        gap_ms: u64,
        /// At most this many seconds of scrapes per mode.
        #[arg(long, default_value_t = 90)]
        limit_seconds: u64,
        /// Seconds between the attacker's first round and the first scrape.
        #[arg(long, default_value_t = 5)]
        warmup_seconds: u64,
        /// A slow connection sends a byte every this many milliseconds.
        #[arg(long, default_value_t = 1000)]
        slow_byte_ms: u64,
        /// The attacker opens again the connections the agent closed every this many
        /// milliseconds.
        #[arg(long, default_value_t = 1000)]
        round_ms: u64,
        /// Modes, comma-separated: plain, tls, auth, tls+auth.
        #[arg(long, default_value = "plain,tls,auth,tls+auth")]
        modes: String,
        /// The attacker's source address (a loopback one); the scraper's is 127.0.0.1.
        #[arg(long, default_value = "127.0.0.1")]
        from: std::net::Ipv4Addr,
    },
    /// copyscope run's user-space cost beside many live processes, one pread a second
    /// each: collection time, CPU share, resident memory, /metrics fetch time.
    Scale {
        /// Live processes.
        #[arg(long, default_value_t = 10_000)]
        processes: u64,
        /// Seconds measured per configuration.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Fetches of /metrics timed per configuration.
        #[arg(long, default_value_t = 30)]
        fetches: usize,
    },
}

pub fn run(which: Which, bin_dir: &Path) -> Result<()> {
    match which {
        Which::Overhead {
            calls,
            switch_rounds,
            rounds,
            copyscope_args,
        } => overhead::overhead(&overhead::Settings {
            bin_dir: bin_dir.to_path_buf(),
            calls,
            switch_rounds,
            rounds,
            copyscope_args: copyscope_args
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }),
        Which::Soak {
            minutes,
            interval,
            burst: procs,
            burst_interval,
        } => {
            soak::soak(bin_dir, minutes, interval)?;
            if procs > 0 {
                soak::burst(bin_dir, procs, burst_interval)?;
            }
            Ok(())
        }
        Which::ScrapeUnderAttack {
            idle,
            slow,
            scrapes,
            gap_ms,
            limit_seconds,
            warmup_seconds,
            slow_byte_ms,
            round_ms,
            modes,
            from,
        } => attack::run(&attack::Settings {
            bin_dir: bin_dir.to_path_buf(),
            idle,
            slow,
            scrapes,
            gap: Duration::from_millis(gap_ms),
            limit: Duration::from_secs(limit_seconds),
            warmup: Duration::from_secs(warmup_seconds),
            slow_byte: Duration::from_millis(slow_byte_ms),
            round: Duration::from_millis(round_ms),
            modes: modes
                .split(',')
                .map(|m| attack::Mode::parse(m.trim()))
                .collect::<Result<_>>()?,
            from,
        }),
        Which::Scale {
            processes,
            seconds,
            fetches,
        } => scale::scale(
            bin_dir,
            &scale::Settings {
                processes,
                seconds,
                fetches,
            },
        ),
    }
}
