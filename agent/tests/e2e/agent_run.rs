//! `copyscope run` end to end: a real Prometheus (Debian package) scrapes a real agent
//! while a workload runs, and a real nginx is judged by the advisor with `sendfile off`
//! and `sendfile on`. Everything listens on 127.0.0.1 and is stopped at the end.

use crate::common;

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    WORKLOAD,
    agent::{Guard, free_port, get, require_tool, start_agent, wait_for},
    prometheus::Prometheus,
    scratch, write_file,
};
use serde_json::Value;

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn prometheus_scrapes_the_agent_and_sees_the_workload() {
    require_kernel!();
    if !require_tool("prometheus", "prometheus") {
        return;
    }
    let d = scratch("prometheus");
    let agent = start_agent(&["--interval", "1"]);
    let addr = agent.addr.clone();
    let prom = Prometheus::start(
        &d,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: copyscope\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    );
    let query = |q: &str| prom.query(q);
    // Prometheus is up and scraping the agent.
    wait_for(
        Duration::from_secs(60),
        "Prometheus to scrape copyscope",
        || query("up{job=\"copyscope\"} == 1").filter(|r| !r.is_empty()),
    );

    // A workload with a known answer: 20000 preads of 4096 bytes, after the same program
    // with none (the dynamic loader's own preads are the baseline).
    let f = d.join("data.bin");
    write_file(&f, 4096);
    let workload = |n: &str| {
        let out = Command::new(WORKLOAD)
            .args(["pread", f.to_str().unwrap(), n, "4096"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let value = |q: &str| -> Option<f64> { query(q)?.first()?["value"][1].as_str()?.parse().ok() };
    let calls_q = "sum(copyscope_syscalls_total{comm=\"copyscope-workl\",syscall=\"pread64\",fd_kind=\"file\"})";
    let bytes_q = "sum(copyscope_syscall_bytes_total{comm=\"copyscope-workl\",syscall=\"pread64\",fd_kind=\"file\"})";
    workload("0");
    let (calls0, bytes0) = wait_for(
        Duration::from_secs(30),
        "the baseline run in Prometheus",
        || Some((value(calls_q)?, value(bytes_q)?)),
    );
    // Its process is gone; its counts stay in the workload's series, scraped by Prometheus.
    workload("20000");
    let calls = wait_for(
        Duration::from_secs(30),
        "the workload's preads in Prometheus",
        || value(calls_q).filter(|v| *v >= 2.0 * calls0 + 20000.0),
    );
    // Each run makes the baseline's preads too: the series holds both runs.
    assert_eq!(
        calls - 2.0 * calls0,
        20000.0,
        "exactly the workload's preads"
    );
    let bytes = wait_for(Duration::from_secs(10), "the bytes", || {
        value(bytes_q).filter(|v| *v >= 2.0 * bytes0 + 20000.0 * 4096.0)
    });
    assert_eq!(bytes - 2.0 * bytes0, 20000.0 * 4096.0);
    // Mode switches are two per syscall, at least the preads'.
    let r = query("sum(copyscope_mode_switches_total{comm=\"copyscope-workl\"})").unwrap();
    let ms: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(ms >= 40000.0, "{ms}");
    // Self-metrics: build info and the syscall probes' methods.
    let r = query("copyscope_build_info").unwrap();
    assert_eq!(r.len(), 1);
    let r = query("copyscope_probe_attached{family=\"syscalls\",hook=\"sys_enter\"} == 1").unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    let r = query("copyscope_calibration_memcpy_bytes_per_second > 0").unwrap();
    assert_eq!(r.len(), 1);
}

/// nginx serving one file to `requests` HTTP clients, with `sendfile` on or off.
fn nginx_window(sendfile: bool) -> (Value, String) {
    let d = scratch(if sendfile { "nginx-on" } else { "nginx-off" });
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    let file = www.join("big.bin");
    write_file(&file, 8 << 20);
    let port = free_port();
    let conf = d.join("nginx.conf");
    let tmp = d.join("tmp").display().to_string();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
events {{ worker_connections 64; }}\n\
http {{\n  access_log off;\n  sendfile {sf};\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n  fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n\
  server {{ listen 127.0.0.1:{port}; root {www}; }}\n}}\n",
            dir = d.display(),
            sf = if sendfile { "on" } else { "off" },
            www = www.display(),
        ),
    )
    .unwrap();
    let nginx = Command::new("nginx")
        .args([
            "-p",
            d.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
            "-e",
        ])
        .arg(d.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let _nginx = Guard(nginx);
    let naddr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(20), "nginx to listen", || {
        TcpStream::connect(&naddr).ok()
    });
    let agent = start_agent(&["--interval", "2"]);
    let addr = agent.addr.clone();
    // Load for long enough that whole collection windows see it, then take a window
    // in which nginx served.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let naddr = naddr.clone();
        std::thread::spawn(move || {
            let mut served = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = get(&naddr, "/big.bin").unwrap();
                assert_eq!(status, 200);
                served += body.len() as u64;
            }
            served
        })
    };
    let mut seen = None;
    let end = Instant::now() + Duration::from_secs(40);
    let mut last = String::new();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        let Ok((200, body)) = get(&addr, "/api/v1/snapshot") else {
            continue;
        };
        if body == last {
            continue;
        }
        last = body.clone();
        let snap: Value = serde_json::from_str(&body).unwrap();
        let busy = snap["processes"].as_array().unwrap().iter().any(|p| {
            p["comm"] == "nginx" && {
                let moved = p["cpu_copy_bytes"]["from_user"].as_u64().unwrap()
                    + p["zero_copy_bytes"].as_u64().unwrap();
                moved > 32 << 20
            }
        });
        if busy {
            let (_, metrics) = get(&addr, "/metrics").unwrap();
            seen = Some((snap, metrics));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = load.join().unwrap();
    assert!(served > 0);
    seen.expect("no collection window saw nginx serve more than 32 MiB")
}

fn nginx_advice(snap: &Value) -> Vec<&Value> {
    snap["advice"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["comm"] == "nginx")
        .collect()
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn nginx_with_sendfile_off_is_flagged_and_with_sendfile_on_is_not() {
    require_kernel!();
    if !require_tool("nginx", "nginx") {
        return;
    }
    let (off, metrics) = nginx_window(false);
    let advice = nginx_advice(&off);
    let sendfile = advice
        .iter()
        .find(|a| a["pattern"] == "sendfile")
        .unwrap_or_else(|| panic!("nginx with sendfile off not flagged: {advice:?}"));
    let saved = sendfile["estimated_cpu_seconds_saved_per_second"]
        .as_f64()
        .unwrap();
    assert!(saved > 0.0, "{sendfile}");
    assert!(
        sendfile["evidence"]["file_read_bytes_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(
        sendfile["recommendation"]
            .as_str()
            .unwrap()
            .contains("sendfile on")
    );
    // The same finding is a metric.
    assert!(
        metrics.contains(
            "copyscope_advice_info{comm=\"nginx\",container_id=\"\",pattern=\"sendfile\""
        ),
        "no advice series for nginx in /metrics"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("copyscope_advice_estimated_cpu_saved_seconds_total{comm=\"nginx\",container_id=\"\",pattern=\"sendfile\"}")
                && l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 0.0),
    );

    let (on, _) = nginx_window(true);
    let advice = nginx_advice(&on);
    assert!(
        advice.iter().all(|a| a["pattern"] != "sendfile"),
        "nginx with sendfile on flagged: {advice:?}"
    );
    let nginx = on["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["comm"] == "nginx")
        .unwrap();
    let zero = nginx["zero_copy_bytes"].as_u64().unwrap();
    assert!(zero > 32 << 20, "zero-copy bytes counted: {zero}");
    let sendfile_rows: u64 = nginx["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["syscall"] == "sendfile64")
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        sendfile_rows, zero,
        "nginx's zero-copy bytes are its sendfile bytes"
    );
    assert!(
        advice.iter().any(|a| a["pattern"] == "zero_copy"),
        "{advice:?}"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn sigterm_stops_the_agent_cleanly() {
    require_kernel!();
    let mut agent = start_agent(&["--interval", "1"]);
    let addr = agent.addr.clone();
    let (status, body) = get(&addr, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE copyscope_syscalls_total counter"));
    unsafe { libc::kill(agent.child.0.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = agent.child.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(Instant::now() < end, "the agent did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(0));
    assert!(TcpStream::connect(&addr).is_err(), "still listening");
    // Its programs are detached: no copyscope program stays loaded.
    let progs = Command::new("bpftool").args(["prog", "show"]).output();
    if let Ok(out) = progs {
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = agent.child.0.id().to_string();
        assert!(
            !text
                .lines()
                .any(|l| l.contains(&format!("pids copyscope({pid})"))),
            "programs of the stopped agent are still loaded"
        );
    }
}
