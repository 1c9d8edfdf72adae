//! `copyscope run`: the long-running agent. A collection thread owns the kernel programs
//! and harvests them every interval; an HTTP server (tokio + axum) serves `/metrics`,
//! `/healthz`, `/readyz` and `/api/v1/snapshot` from what the last collection left.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use log::{error, info, warn};

use crate::{
    calibrate,
    cli::RunArgs,
    collect::window::Sampler,
    loader::{self, LoadOptions},
    metrics::{Exporter, Options},
    pods::Pods,
    privileges, workload,
};

/// What the collection thread publishes for the HTTP side.
#[derive(Default)]
struct Shared {
    metrics: String,
    snapshot: Option<String>,
    ready: bool,
    /// Set when the collection thread failed: /healthz turns 503.
    failed: Option<String>,
}

type SharedRef = Arc<RwLock<Shared>>;

pub fn run(args: &RunArgs) -> Result<i32> {
    let thresholds = args.advice.thresholds()?;
    let kube = args.kube.config()?;
    if args.max_workloads == 0 {
        return Err(anyhow!("--max-workloads must be at least 1"));
    }
    // Bind first: a port in use is reported before the probes are loaded.
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (another copyscope, or another exporter, is using it: pick one with --listen or COPYSCOPE_LISTEN)"
            } else {
                ""
            };
            anyhow!("cannot listen on {}: {e}{hint}", args.listen)
        })?;
    let addr = listener.local_addr()?;

    // Before the probes attach: the costs an application pays without copyscope.
    let calibration = calibrate::calibrate();
    info!(
        "calibrated: memory copy {:.2} GB/s, system call {:.0} ns",
        calibration.memcpy_bytes_per_second / 1e9,
        calibration.syscall_seconds * 1e9
    );
    let mut loaded = loader::load(&LoadOptions {
        watch_only: false,
        debug_log: false,
    })?;
    loader::require_all(&loaded.probes)?;
    for p in &loaded.probes {
        match p.method {
            Some(m) => info!("probe {}/{}: {m} ({})", p.family, p.hook, p.detail),
            None => warn!("probe {}/{} not attached: {}", p.family, p.hook, p.detail),
        }
    }

    // Turned on before the capabilities are dropped (it needs more than reading does).
    let stats_fd = if args.bpf_stats {
        Some(loader::enable_bpf_stats()?)
    } else {
        None
    };
    // Attached: keep what collecting still needs, drop the rest, before any thread starts
    // (threads inherit the reduced sets).
    match privileges::keep_only(&privileges::RUN_KEEPS) {
        Ok(d) => eprintln!(
            "copyscope: attached; keeping {} and dropping {} other capabilities{}",
            if d.kept.is_empty() {
                "no capabilities".to_string()
            } else {
                d.kept.join(", ")
            },
            d.dropped.len(),
            if d.bounding {
                " (bounding set too)"
            } else {
                ""
            }
        ),
        Err(e) => warn!("could not drop capabilities: {e:#}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };

    let shared: SharedRef = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_secs_f64(args.interval);
    let opts = Options {
        max_workloads: args.max_workloads,
        pid_labels: args.pid_labels,
        idle_windows: (args.workload_ttl / args.interval).ceil().max(1.0) as u64,
    };
    let bpf_stats = stats_fd.is_some();
    let pods = kube.map(Pods::watch).transpose()?;
    let collector_thread = {
        let shared = shared.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("collect".into())
            .spawn(move || {
                let r = collect_loop(
                    &mut loaded,
                    &shared,
                    &stop,
                    interval,
                    opts,
                    thresholds,
                    calibration,
                    bpf_stats,
                    pods,
                );
                if let Err(e) = &r {
                    error!("collection stopped: {e:#}");
                    shared.write().unwrap().failed = Some(format!("{e:#}"));
                }
                // Dropping `loaded` detaches every program.
                drop(loaded);
                r
            })?
    };

    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/snapshot", get(snapshot))
        .route("/", get(index))
        .with_state(shared.clone());
    eprintln!(
        "copyscope: serving http://{addr}/metrics (collecting every {} s)",
        args.interval
    );
    let served = runtime.block_on(async {
        let stop_http = stop.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                info!("shutting down");
                stop_http.store(true, Ordering::SeqCst);
            })
            .await
    });
    stop.store(true, Ordering::SeqCst);
    let collected = collector_thread
        .join()
        .map_err(|_| anyhow!("the collection thread panicked"))?;
    served.context("serving HTTP")?;
    collected?;
    drop(stats_fd);
    Ok(0)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn collect_loop(
    loaded: &mut loader::Loaded,
    shared: &SharedRef,
    stop: &AtomicBool,
    interval: Duration,
    opts: Options,
    thresholds: crate::advisor::Thresholds,
    calibration: crate::advisor::Calibration,
    bpf_stats: bool,
    pods: Option<Pods>,
) -> Result<()> {
    let mut exporter = Exporter::new(opts, thresholds, calibration, &loaded.kernel, bpf_stats);
    let mut sampler = Sampler::new(loaded, calibration, thresholds)?;
    if let Some(p) = pods {
        sampler.set_pods(p);
    }
    let mut started = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Sleep in short steps so that a shutdown is prompt.
        let until = started + interval;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now().min(until)));
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        started = Instant::now();
        let t0 = Instant::now();
        let sample = sampler.sample(loaded)?;
        let snap = &sample.snapshot;
        let containers: HashMap<u32, Option<String>> = snap
            .processes
            .iter()
            .map(|p| (p.pid, p.container_id.clone()))
            .collect();
        // Workload findings are what /metrics shows; the snapshot keeps per-process ones.
        exporter.observe(
            snap,
            &mut |pid| containers.get(&pid).cloned().flatten(),
            &mut workload::open_file_sizes,
        );
        exporter.set_programs(&sample.programs);
        exporter.set_map_entries(sample.map_entries);
        if let Some((known, up)) = sample.pods {
            exporter.set_pods(known, up);
        }
        exporter.set_collection_seconds(t0.elapsed().as_secs_f64());
        let text = exporter.render();
        let json = serde_json::to_string(snap)?;
        let mut s = shared.write().unwrap();
        s.metrics = text;
        s.snapshot = Some(json);
        if !s.ready {
            info!("first collection done: ready");
        }
        s.ready = true;
    }
    Ok(())
}

async fn metrics(State(s): State<SharedRef>) -> impl IntoResponse {
    let s = s.read().unwrap();
    if !s.ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "copyscope: first collection not done yet\n".to_string(),
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.clone(),
    )
}

async fn healthz(State(s): State<SharedRef>) -> impl IntoResponse {
    match &s.read().unwrap().failed {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("collection failed: {e}\n"),
        ),
    }
}

async fn readyz(State(s): State<SharedRef>) -> impl IntoResponse {
    let s = s.read().unwrap();
    if s.ready && s.failed.is_none() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn snapshot(State(s): State<SharedRef>) -> impl IntoResponse {
    match &s.read().unwrap().snapshot {
        Some(j) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            j.clone(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"first collection not done yet"}"#.to_string(),
        ),
    }
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><body><h1>copyscope</h1><ul><li><a href=\"/metrics\">/metrics</a></li>\
<li><a href=\"/api/v1/snapshot\">/api/v1/snapshot</a></li><li><a href=\"/healthz\">/healthz</a></li>\
<li><a href=\"/readyz\">/readyz</a></li></ul></body></html>\n",
    )
}
