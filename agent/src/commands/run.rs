//! `copyscope run`: the long-running agent. A collection thread owns the kernel programs
//! and harvests them every interval; an HTTP server (crate::http: hyper connections with
//! limits, TLS and basic auth, under axum's router) serves `/metrics`, `/healthz`,
//! `/readyz` and `/api/v1/snapshot` from what the last collection left.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use log::{debug, error, info, warn};

use crate::{
    calibrate,
    cli::RunArgs,
    collect::window::Sampler,
    http,
    loader::{self, LoadOptions},
    metrics::{Exporter, Options},
    model::Snapshot,
    pods::Pods,
    privileges, webconfig, workload,
};

/// What the collection thread publishes for the HTTP side.
#[derive(Default)]
struct Shared {
    /// The exposition; each scrape shares it rather than copying it.
    metrics: Bytes,
    /// The last window, written as JSON when asked for.
    snapshot: Option<Arc<Snapshot>>,
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
    let (server, user, listener) = bind(args)?;
    let addr = listener.local_addr()?;

    let (mut loaded, calibration, resumed) = load(args)?;

    // Turned on before the capabilities are dropped (it needs more than reading does).
    let stats_fd = if args.bpf_stats {
        Some(loader::enable_bpf_stats()?)
    } else {
        None
    };
    // Attached: keep what collecting still needs, drop the rest, before any thread starts
    // (threads inherit the reduced sets); then become --user.
    drop_privileges(user.as_ref())?;
    // Loading parsed the kernel's BTF and the object (tens of MB, freed by now): give
    // the freed heap back, so that the steady RSS is what collecting holds.
    crate::collect::footprint::release_free_memory();
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
                    resumed,
                );
                if let Err(e) = &r {
                    error!("collection stopped: {e:#}");
                    shared.write().unwrap().failed = Some(format!("{e:#}"));
                }
                // Dropping `loaded` detaches the programs that are not pinned.
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
        "copyscope: serving {}://{addr}/metrics (collecting every {} s{})",
        server.scheme(),
        args.interval,
        server.describe()
    );
    let collector = collector_thread.thread().clone();
    let served = runtime.block_on(async {
        let stop_http = stop.clone();
        let collector = collector.clone();
        server
            .serve(listener, app, async move {
                shutdown_signal().await;
                info!("shutting down");
                stop_http.store(true, Ordering::SeqCst);
                collector.unpark();
            })
            .await
    });
    stop.store(true, Ordering::SeqCst);
    collector.unpark();
    let collected = collector_thread
        .join()
        .map_err(|_| anyhow!("the collection thread panicked"))?;
    served.context("serving HTTP")?;
    collected?;
    drop(stats_fd);
    Ok(0)
}

/// The web configuration's files, the user to become and the listening socket, checked
/// and bound before the probes load: a bad file or a port in use is reported first.
fn bind(
    args: &RunArgs,
) -> Result<(
    http::Server,
    Option<privileges::User>,
    std::net::TcpListener,
)> {
    let web = args
        .web_config
        .as_deref()
        .map(webconfig::load)
        .transpose()?;
    if let Some(w) = web.as_ref().filter(|w| w.empty) {
        warn!(
            "web config {}: no tls_server_config and no basic_auth_users: the HTTP server is \
             plain HTTP without authentication, as without --web-config",
            w.path.display()
        );
    }
    let server = http::Server::new(web)?;
    let user = args
        .user
        .as_deref()
        .map(privileges::User::resolve)
        .transpose()?;
    if let Some(u) = &user {
        u.check_switch()?;
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
    Ok((server, user, listener))
}

/// Calibrate (before the probes attach: the costs an application pays without
/// copyscope), load and attach the probes, and take up what a pinned earlier agent saved.
fn load(
    args: &RunArgs,
) -> Result<(
    loader::Loaded,
    crate::advisor::Calibration,
    Option<AgentSaved>,
)> {
    // Before the probes attach: the costs an application pays without copyscope.
    let mut calibration = calibrate::calibrate_apart();
    let loaded = loader::load(&LoadOptions {
        watch_only: false,
        debug_log: false,
        pin: pin_request(&args.pin),
        disabled_families: args.families.disable_families.clone(),
    })?;
    loader::require_all(&loaded.probes)?;
    // A pinned restart: the programs were attached while calibrating, so the first
    // agent's figures stand, and so do its totals.
    let resumed = loaded
        .pinned
        .as_ref()
        .and_then(|p| p.saved.as_ref()?.agent.clone())
        .and_then(|v| match serde_json::from_value::<AgentSaved>(v) {
            Ok(a) => Some(a),
            Err(e) => {
                warn!("the saved totals cannot be read ({e}): counters start from zero");
                None
            }
        });
    if let Some(a) = &resumed {
        calibration = a.calibration;
    }
    info!(
        "calibrated: memory copy {:.2} GB/s, system call {:.0} ns",
        calibration.memcpy_bytes_per_second / 1e9,
        calibration.syscall_seconds * 1e9
    );
    if let Some(p) = &loaded.pinned {
        eprintln!("copyscope: {}", pin_report(p, resumed.is_some()));
    }
    for p in &loaded.probes {
        match p.method {
            Some(m) => info!("probe {}/{}: {m} ({})", p.family, p.hook, p.detail),
            None => warn!("probe {}/{} not attached: {}", p.family, p.hook, p.detail),
        }
    }
    Ok((loaded, calibration, resumed))
}

/// Keep only the capabilities collecting needs, become `user`, and say what was kept.
fn drop_privileges(user: Option<&privileges::User>) -> Result<()> {
    match privileges::keep_only_as(&privileges::RUN_KEEPS, user) {
        Ok(d) => {
            let kept = if d.kept.is_empty() {
                "no capabilities".to_string()
            } else {
                d.kept.join(", ")
            };
            eprintln!(
                "copyscope: attached; keeping {kept} and dropping {} other capabilities{}{}",
                d.dropped.len(),
                if d.bounding {
                    " (bounding set too)"
                } else {
                    ""
                },
                if d.no_new_privs {
                    "; no new privileges (NoNewPrivs)"
                } else {
                    ""
                }
            );
            match &d.user {
                Some(u) => eprintln!("copyscope: switched to user {u}, keeping {kept}"),
                // SAFETY: getuid cannot fail.
                None if unsafe { libc::getuid() } == 0 => eprintln!(
                    "copyscope: still uid 0, with only the capabilities above: no --user \
                     was given, and no other uid is safe to pick unasked (nobody is shared \
                     with other services, which could then signal or trace the agent); give \
                     --user a dedicated user to leave uid 0"
                ),
                None => {}
            }
        }
        // Never go on as root when asked not to.
        Err(e) if user.is_some() => return Err(e),
        Err(e) => warn!("could not drop capabilities: {e:#}"),
    }
    Ok(())
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
    resumed: Option<AgentSaved>,
) -> Result<()> {
    let mut exporter = Exporter::new(opts, thresholds, calibration, &loaded.kernel, bpf_stats);
    let mut sampler = Sampler::new(loaded, calibration, thresholds)?;
    if let Some(a) = resumed {
        sampler.restore(a.sampler);
        exporter.restore(a.exporter);
    }
    let mut save_failed = false;
    if let Some(p) = pods {
        sampler.set_pods(p);
    }
    let mut trim = crate::collect::footprint::Trim::default();
    // Harvests made between windows because exits were filling the maps.
    let mut early: u64 = 0;
    let mut started = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // Parked until the next window (a shutdown unparks this thread at once), looking
        // every second whether a burst of exits is filling the kernel maps.
        let until = started + interval;
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::park_timeout((until - now).min(EXIT_POLL));
            if Instant::now() < until && !stop.load(Ordering::SeqCst) {
                match sampler.harvest_exits_if_filling() {
                    Ok(true) => {
                        early += 1;
                        debug!("exited processes filling the kernel maps: harvested early");
                    }
                    Ok(false) => {}
                    // The window's own harvest says it if the maps cannot be read.
                    Err(e) => debug!("looking at the exited processes: {e:#}"),
                }
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        started = Instant::now();
        let t0 = Instant::now();
        let sample = sampler.sample(loaded)?;
        let snap = &sample.snapshot;
        // Workload findings are what /metrics shows; the snapshot keeps per-process ones.
        exporter.observe(
            snap,
            &mut |p| p.container_id.clone(),
            &mut workload::open_file_sizes,
        );
        exporter.set_programs(&sample.programs);
        exporter.set_early_harvests(early);
        exporter.set_map_entries(sample.map_entries);
        let resident = crate::collect::footprint::resident_bytes();
        exporter.set_memory(sample.map_memory, resident);
        if let Some((known, up)) = sample.pods {
            exporter.set_pods(known, up);
        }
        // Saved before it is published: what /metrics shows, a restart continues from.
        if let Some(p) = loaded.pinned.as_mut() {
            let state = AgentSaved {
                calibration,
                sampler: sampler.save(),
                exporter: exporter.save(),
            };
            match serde_json::to_value(&state)
                .map_err(anyhow::Error::from)
                .and_then(|v| loaded_save(p, &loaded.probes, v))
            {
                Ok(_) => save_failed = false,
                Err(e) if !save_failed => {
                    warn!("saving the totals in the pin failed: {e:#}");
                    save_failed = true;
                }
                Err(_) => {}
            }
        }
        exporter.set_collection_seconds(t0.elapsed().as_secs_f64());
        let text = Bytes::from(exporter.render());
        let snap = Arc::new(sample.snapshot);
        let mut s = shared.write().unwrap();
        s.metrics = text;
        let last = s.snapshot.replace(snap);
        let first = !s.ready;
        s.ready = true;
        drop(s);
        if first {
            info!("first collection done: ready");
        }
        // The previous window's state and the collection's garbage: back to the system
        // when the heap has grown (a trim walks the whole heap; in between, the next
        // windows reuse what this one freed).
        drop(last);
        if trim.due(crate::collect::footprint::free_heap_bytes()) {
            crate::collect::footprint::release_free_memory();
            trim.done();
        }
    }
    Ok(())
}

/// How often `run` looks, between two windows, whether exits are filling the kernel maps.
const EXIT_POLL: Duration = Duration::from_secs(1);

/// The agent's totals, saved in the pin after every collection.
#[derive(serde::Serialize, serde::Deserialize)]
struct AgentSaved {
    calibration: crate::advisor::Calibration,
    sampler: crate::collect::window::SamplerSaved,
    exporter: crate::metrics::ExporterSaved,
}

fn loaded_save(
    p: &mut loader::Pinned,
    probes: &[loader::ProbeStatus],
    agent: serde_json::Value,
) -> Result<usize> {
    p.store.write(&crate::pin::Saved {
        probes: probes.iter().map(loader::save_probe).collect(),
        agent: Some(agent),
    })
}

/// Where to pin: the path asked for, else the default when /sys/fs/bpf is a BPF file
/// system, else nowhere (said once).
fn pin_request(args: &crate::cli::PinArgs) -> Option<loader::PinRequest> {
    if args.no_pin {
        return None;
    }
    let path = match &args.pin_path {
        Some(p) => p.clone(),
        None => {
            let p = std::path::PathBuf::from(crate::pin::DEFAULT_PATH);
            if !crate::pin::on_bpffs(&p) {
                eprintln!(
                    "copyscope: not pinning: /sys/fs/bpf is not a BPF file system (mount one \
                     with `mount -t bpf bpf /sys/fs/bpf`); the programs detach when copyscope \
                     stops and counts restart from zero"
                );
                return None;
            }
            p
        }
    };
    Some(loader::PinRequest {
        path,
        repin: args.repin,
    })
}

/// One line on what pinning did.
fn pin_report(p: &loader::Pinned, resumed: bool) -> String {
    let at = p.dir.path().display();
    let mut line = match p.how {
        loader::PinHow::New => format!(
            "pinned the programs, maps and links at {at} (generation {})",
            p.generation
        ),
        loader::PinHow::Adopted => format!(
            "adopted the programs pinned at {at} (generation {}): they never stopped counting",
            p.generation
        ),
        loader::PinHow::Replaced { gap_seconds } => format!(
            "replaced the programs pinned at {at} (another build's) with this build's \
             (generation {}); no program was attached for {gap_seconds:.3} s",
            p.generation
        ),
    };
    if resumed {
        line.push_str("; totals continue from the last agent's");
    }
    if !p.unpinnable.is_empty() {
        line.push_str(&format!(
            "; the links of {} cannot be pinned on this kernel (BPF perf links need 5.15): \
             they stop counting while no agent runs",
            p.unpinnable.join(", ")
        ));
    }
    line
}

async fn metrics(State(s): State<SharedRef>) -> impl IntoResponse {
    let s = s.read().unwrap();
    if !s.ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Bytes::from_static(b"copyscope: first collection not done yet\n"),
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
    let snap = s.read().unwrap().snapshot.clone();
    match snap.map(|j| serde_json::to_string(&*j)) {
        Some(Ok(j)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            j,
        ),
        Some(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": format!("writing the snapshot: {e}") }).to_string(),
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
