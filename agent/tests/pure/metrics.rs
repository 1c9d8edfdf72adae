//! The Prometheus exposition from fixed windows: compared with golden files and linted
//! by promtool (Debian package `prometheus`, installed by `cargo xtask setup`).
//! `COPYSCOPE_BLESS=1 cargo test --test pure metrics::` rewrites the golden files.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use copyscope::{
    advisor::{Calibration, Thresholds},
    metrics::{BuildInfo, Exporter, Options, ProcessStats},
    model::{PodRef, ProbeRow, ProcessRow, SchedRow, Snapshot},
    testing::RowBuilder,
};

const M: u64 = 1 << 20;
const CID: &str = "3f5ad7e2c1b0a99887766554433221100ffeeddccbbaa0099887766554433221";

fn process(pid: u32, comm: &str, rows: &[(&str, &str, u64, u64)]) -> ProcessRow {
    let mut b = RowBuilder::new(pid, comm).seconds_per_call(1e-6);
    for (s, k, calls, bytes) in rows {
        b = b.syscall(s, k, *calls, *bytes);
    }
    let mut p = b.build();
    p.context_switches = SchedRow {
        voluntary: 10,
        involuntary: 2,
        in_io: 7,
    };
    p
}

fn window(processes: Vec<ProcessRow>) -> Snapshot {
    Snapshot {
        duration_seconds: 10.0,
        end_unix_seconds: 1_790_000_000.0,
        host: "node-1".into(),
        kernel: "6.18.44-test".into(),
        probes: vec![
            ProbeRow {
                name: "syscalls_tpbtf".into(),
                family: "syscalls".into(),
                hook: "sys_enter".into(),
                method: Some("tp_btf".into()),
                attached: true,
            },
            ProbeRow {
                name: "copies_file_f".into(),
                family: "copies".into(),
                hook: "file_read".into(),
                method: None,
                attached: false,
            },
        ],
        processes,
        dropped: BTreeMap::from([
            ("syscall_stats_full".into(), 0),
            ("program_runs_missed".into(), 3),
        ]),
        cpu_copy_method: BTreeMap::from([
            ("file_read".into(), "syscalls".into()),
            ("socket_send".into(), "tracepoint".into()),
        ]),
        bpf_stats: vec![],
        command: None,
        calibration: None,
        advice: vec![],
    }
}

/// The scenario's findings save a few hundredths of a percent of a CPU: under the default
/// minimum saving (0.1%), so these expositions are made with `--advise-min-saving 0.0001`.
const MIN_SAVING: f64 = 0.0001;

fn exporter(max_workloads: usize, pid_labels: bool) -> Exporter {
    exporter_with(max_workloads, pid_labels, MIN_SAVING)
}

fn exporter_with(max_workloads: usize, pid_labels: bool, min_cpu_saved: f64) -> Exporter {
    Exporter::new(
        Options {
            max_workloads,
            pid_labels,
            idle_windows: 3,
        },
        Thresholds {
            min_cpu_saved,
            ..Thresholds::default()
        },
        Calibration {
            memcpy_bytes_per_second: 8e9,
            syscall_seconds: 200e-9,
        },
        "6.18.44-test",
        false,
    )
    .with_build_info(BuildInfo {
        revision: "0123456789ab".into(),
        rustc: "1.91.0".into(),
    })
    .with_process_stats(
        ProcessStats {
            cpu_seconds: 12.5,
            resident_bytes: 40 * M,
            virtual_bytes: 900 * M,
            open_fds: 23,
            max_fds: Some(1 << 20),
            start_time_seconds: 1_789_999_000.0,
        },
        4096,
    )
}

fn containers(pid: u32) -> Option<String> {
    (pid >= 200).then(|| CID.to_string())
}

/// Two windows: a file server without sendfile (two worker processes, one workload), a
/// splice proxy in a container, and a small shell.
fn scenario(e: &mut Exporter) -> String {
    let first = window(vec![
        process(
            101,
            "nginx",
            &[
                ("read", "file", 800, 50 * M),
                ("write", "socket", 800, 50 * M),
            ],
        ),
        process(
            102,
            "nginx",
            &[
                ("read", "file", 800, 50 * M),
                ("write", "socket", 800, 50 * M),
            ],
        ),
        process(
            200,
            "proxy",
            &[
                ("splice", "socket->pipe", 100, 40 * M),
                ("splice", "pipe->socket", 100, 40 * M),
            ],
        ),
        process(300, "sh", &[("read", "pipe", 3, 30)]),
    ]);
    e.observe(&first, &mut |p| containers(p.pid), &mut |_| vec![]);
    let second = window(vec![process(
        101,
        "nginx",
        &[
            ("read", "file", 100, 10 * M),
            ("write", "socket", 100, 10 * M),
        ],
    )]);
    e.observe(&second, &mut |p| containers(p.pid), &mut |_| vec![]);
    // The Kubernetes API names the proxy's container; another pod's container has no
    // workload yet but is exported too, ready for joins.
    let pod = |pod: &str, container: &str| PodRef {
        pod: pod.into(),
        namespace: "edge".into(),
        container: container.into(),
    };
    e.set_pods(
        [
            (CID.to_string(), pod("proxy-7d9f", "proxy")),
            ("a".repeat(64), pod("cache-0", "redis")),
        ]
        .into(),
        true,
    );
    e.render()
}

fn golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("COPYSCOPE_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (COPYSCOPE_BLESS=1 writes it)", path.display()));
    assert!(
        text == want,
        "the exposition differs from {}; diff it, and bless with COPYSCOPE_BLESS=1 if intended:\n{text}",
        path.display()
    );
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exposition_by_workload_matches_the_golden_file_and_lints_clean() {
    let text = scenario(&mut exporter(100, false));
    golden("workloads.prom", &text);
    // Two nginx processes are one workload: 50+50+10 MiB read from files.
    assert!(text.contains(&format!(
        "copyscope_syscall_bytes_total{{comm=\"nginx\",container_id=\"\",syscall=\"read\",fd_kind=\"file\"}} {}",
        110 * M
    )));
    assert!(text.contains(&format!("comm=\"proxy\",container_id=\"{CID}\"")));
    assert!(
        text.contains(
            "copyscope_advice_info{comm=\"nginx\",container_id=\"\",pattern=\"sendfile\""
        )
    );
    assert!(text.contains("copyscope_advice_estimated_cpu_saved_seconds_total{comm=\"nginx\",container_id=\"\",pattern=\"sendfile\"}"));
    assert!(!text.contains("pid="));
    // One series per probe whatever its method; the method of an attached one beside it.
    assert!(text.contains("copyscope_probe_attached{family=\"syscalls\",hook=\"sys_enter\"} 1\n"));
    assert!(text.contains("copyscope_probe_attached{family=\"copies\",hook=\"file_read\"} 0\n"));
    assert!(text.contains(
        "copyscope_probe_method_info{family=\"syscalls\",hook=\"sys_enter\",method=\"tp_btf\"} 1\n"
    ));
    assert!(!text.contains("copyscope_probe_method_info{family=\"copies\""));
    assert!(text.contains(
        "copyscope_build_info{version=\"0.1.0\",revision=\"0123456789ab\",rustc=\"1.91.0\",kernel=\"6.18.44-test\"} 1\n"
    ));
    assert!(text.contains("copyscope_page_size_bytes 4096\n"));
    assert!(text.contains("process_cpu_seconds_total 12.5\n"));
    assert!(text.contains("process_open_fds 23\n"));
}

#[test]
fn a_live_exporter_says_its_build_and_its_own_process_figures() {
    let text = Exporter::new(
        Options {
            max_workloads: 10,
            pid_labels: false,
            idle_windows: 3,
        },
        Thresholds::default(),
        Calibration {
            memcpy_bytes_per_second: 8e9,
            syscall_seconds: 200e-9,
        },
        "6.18.44-test",
        false,
    )
    .render();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"))
            .parse()
            .unwrap()
    };
    // This test process, read from /proc/self (checked against /proc/self/status in
    // metrics.rs's unit tests).
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_start_time_seconds") > 1.6e9);
    let page: f64 = String::from_utf8_lossy(
        &Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .parse()
    .unwrap();
    assert_eq!(value("copyscope_page_size_bytes"), page);
    // The revision is a commit of this tree (or "unknown" outside one), rustc a version.
    let info = text
        .lines()
        .find(|l| l.starts_with("copyscope_build_info{"))
        .unwrap();
    let label = |k: &str| {
        info.split(&format!("{k}=\""))
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let revision = label("revision");
    assert!(
        revision == "unknown" || revision.chars().all(|c| c.is_ascii_hexdigit()),
        "{info}"
    );
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(o) = git.ok().filter(|o| o.status.success()) {
        // Built from this checkout (HEAD may have moved since the build only by a commit
        // made after it, in which case the build is rerun).
        assert_eq!(
            revision,
            String::from_utf8_lossy(&o.stdout).trim(),
            "{info}"
        );
    }
    let rustc = label("rustc");
    assert!(rustc.split('.').count() >= 3, "{info}");
}

#[test]
fn findings_under_the_minimum_saving_are_never_exported() {
    // The same scenario with the default minimum (0.1% of a CPU): nginx's first window
    // (100 MiB served through user memory) is worth a finding, its second (10 MiB) is not.
    // The last window's finding has no series, and the saving counter holds the first
    // window's alone.
    let saved = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "copyscope_advice_estimated_cpu_saved_seconds_total{comm=\"nginx\",container_id=\"\",pattern=\"sendfile\"} ",
                )
            })
            .map(|v| v.parse::<f64>().unwrap())
            .unwrap_or_else(|| panic!("no saving for nginx:\n{text}"))
    };
    let all = scenario(&mut exporter(100, false));
    let text = scenario(&mut exporter_with(
        100,
        false,
        Thresholds::default().min_cpu_saved,
    ));
    assert!(!text.contains("copyscope_advice_info{"), "{text}");
    assert!(
        !text.contains("copyscope_advice_estimated_cpu_saved_ratio{comm=\"nginx\""),
        "{text}"
    );
    assert!(
        saved(&text) < saved(&all),
        "the second window's finding, under the minimum, added nothing: {} of {}",
        saved(&text),
        saved(&all)
    );
    assert!(text.contains("copyscope_syscalls_total{comm=\"nginx\""));
}

#[test]
fn the_cardinality_cap_folds_the_quietest_workloads_and_pid_labels_are_opt_in() {
    let text = scenario(&mut exporter(1, true));
    golden("capped_with_pids.prom", &text);
    // The busiest (one nginx process) keeps its series; the rest are summed as "other".
    assert!(text.contains("comm=\"nginx\",container_id=\"\",pid=\"101\""));
    assert!(text.contains("comm=\"other\",container_id=\"\",pid=\"0\""));
    assert!(!text.contains("comm=\"proxy\""));
    assert!(text.contains("copyscope_workloads_folded_total 3"));
}

#[test]
fn counters_never_fall_and_idle_workloads_expire() {
    let mut e = exporter(100, false);
    let a = scenario(&mut e);
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let s = "copyscope_mode_switches_total{comm=\"nginx\",container_id=\"\"}";
    let before = value(&a, s).unwrap();
    // Idle windows: counters stay, then the workload's series go after idle_windows (3).
    for _ in 0..3 {
        e.observe(&window(vec![]), &mut |p| containers(p.pid), &mut |_| vec![]);
        assert_eq!(value(&e.render(), s), Some(before));
    }
    let evicted = "copyscope_workloads_evicted_total{reason=\"idle\"}";
    let last = e.render();
    let (workloads, before) = (
        value(&last, "copyscope_workloads ").unwrap(),
        value(&last, evicted).unwrap(),
    );
    e.observe(&window(vec![]), &mut |p| containers(p.pid), &mut |_| vec![]);
    let text = e.render();
    assert_eq!(value(&text, s), None);
    // Every workload went at once, and each is counted.
    assert_eq!(value(&text, "copyscope_workloads "), Some(0.0));
    assert_eq!(value(&text, evicted), Some(before + workloads));
}

#[test]
fn the_readme_lists_every_metric() {
    let names = copyscope::metrics::names();
    // Every family the exporter renders is in the list.
    let text = scenario(&mut exporter(100, false));
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split(' ').next().unwrap();
        assert!(
            names.contains(name),
            "{name} is missing from metrics::names()"
        );
    }
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    for name in names {
        assert!(
            readme.contains(&format!("`{name}`")),
            "the README does not list {name}"
        );
    }
}
