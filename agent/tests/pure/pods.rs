//! Pod labels end to end: a real agent watches a fake Kubernetes API server (https, a
//! bearer token, responses in the API's format) while a workload runs in a fake container
//! (a cgroup named as containerd names them), and `copyscope_container_info` joins the
//! workload's container id to its pod, follows the watch, relists when the watch expires,
//! and falls back to bare container ids when the API refuses.

use crate::common;

use std::process::{Command, Stdio};

use common::{
    COPYSCOPE, WORKLOAD,
    agent::{Guard, wait_for},
    kube::{FakeApi, FakeContainer, Gate, Reply, WAIT, events, fixture, status},
    scratch, write_file,
};

const NODE: &str = "node-1";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.copyscope-test";

/// A container id unique to this run (64 hex digits, like containerd's).
fn id(tag: u8) -> String {
    let pid = std::process::id() as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!("{tag:02x}{pid:016x}{nanos:016x}{:030x}", tag as u64)
}

fn info_line(id: &str, pod: &str, ns: &str, container: &str) -> String {
    format!(
        "copyscope_container_info{{container_id=\"{id}\",pod=\"{pod}\",namespace=\"{ns}\",container=\"{container}\"}} 1"
    )
}

/// A pread loop inside the fake container, running until the test ends (the agent reads a
/// process's container from /proc while the process lives).
fn workload_in(container: &FakeContainer, dir: &std::path::Path) -> Guard {
    let file = dir.join("data");
    write_file(&file, 4096);
    Guard(
        container
            .command(&[
                WORKLOAD,
                "pread",
                file.to_str().unwrap(),
                "1000000000",
                "64",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the workload"),
    )
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn pods_from_the_kubernetes_api_name_the_workloads_containers() {
    require_kernel!();
    let d = scratch("pods-watch");
    let token = d.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (server, init, job) = (id(1), id(2), id(3));
    let vars = [
        ("NODE", NODE),
        ("SERVER", server.as_str()),
        ("INIT", init.as_str()),
        ("JOB", job.as_str()),
    ];
    let list = |rv: &str| {
        let mut v = vars.to_vec();
        v.push(("RV", rv));
        fixture("pods-list.json", &v)
    };
    let (list1, list2) = (list("48213"), list("48380"));
    let watch1 = events("pods-watch.jsonl", &vars);
    let expired = events("pods-watch-expired.jsonl", &vars);
    let hold = Gate::default();
    let api = FakeApi::start(
        &d,
        vec![Reply::Json(200, list1), Reply::Json(200, list2)],
        vec![
            Reply::Watch(watch1, hold.clone()),
            Reply::Watch(expired, Gate::opened()),
        ],
    );
    let agent = api.start_agent(NODE, &token);
    let container = FakeContainer::new("6b1d2f4e-8c3a-4e7b-9f21-0a5c7d3e9b11", &server);
    let _workload = workload_in(&container, &d);

    // The workload's series carry its container id, and the info series names its pod.
    let want = [
        info_line(&server, "web-0", "shop", "server"),
        info_line(&init, "web-0", "shop", "migrate"),
        info_line(&job, "report-28876530-x7k2p", "batch", "report"),
        format!(
            "copyscope_syscalls_total{{comm=\"copyscope-workl\",container_id=\"{server}\",syscall=\"pread64\",fd_kind=\"file\"}}"
        ),
        "copyscope_kubernetes_api_up 1".to_string(),
    ];
    let text = wait_for(WAIT, "the pod names and the workload in /metrics", || {
        let m = agent.metrics();
        want.iter().all(|w| m.contains(w.as_str())).then_some(m)
    });
    // The snapshot API (and `copyscope top --from`) names the pod too.
    let pod = wait_for(WAIT, "the pod in /api/v1/snapshot", || {
        let (_, body) = common::agent::get(&agent.addr, "/api/v1/snapshot").ok()?;
        let snap: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(
            snap["host"], NODE,
            "the node's name, not the pod's host name"
        );
        snap["processes"]
            .as_array()?
            .iter()
            .find(|p| p["container_id"] == server.as_str() && p["pod"].is_object())
            .map(|p| p["pod"].clone())
    });
    assert_eq!(
        pod,
        serde_json::json!({"pod": "web-0", "namespace": "shop", "container": "server"})
    );
    // A container that has not started has no id, so no series.
    assert!(!text.contains("container=\"log-shipper\""), "{text}");

    // The watch ends; resuming from its bookmark gets 410 Gone; the relist no longer has
    // the batch pod.
    hold.open();
    wait_for(WAIT, "the relist to drop the finished pod", || {
        let m = agent.metrics();
        (!m.contains(&job) && m.contains(&want[0])).then_some(())
    });
    let seen = wait_for(WAIT, "the watch after the relist", || {
        let s = api.seen();
        (s.len() >= 5).then_some(s)
    });
    let kinds: Vec<(bool, Option<&str>)> = seen[..5]
        .iter()
        .map(|s| (s.is_watch(), s.query("resourceVersion")))
        .collect();
    assert_eq!(
        kinds,
        [
            (false, None),
            (true, Some("48213")),
            (true, Some("48252")),
            (false, None),
            (true, Some("48380")),
        ],
        "list, watch, resume at the bookmark, relist after 410, watch: {seen:?}"
    );
    for s in &seen {
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{s:?}"
        );
        assert_eq!(
            s.query("fieldSelector"),
            Some(format!("spec.nodeName%3D{NODE}").as_str()),
            "only this node's pods: {s:?}"
        );
        // A list or a watch of the pod collection, never a get of one pod by name: the
        // two verbs the chart's ClusterRole grants are all the agent needs.
        assert!(s.target.starts_with("/api/v1/pods?"), "{s:?}");
    }
    let role = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/helm/copyscope/templates/clusterrole.yaml"),
    )
    .unwrap();
    let verbs: Vec<&str> = role
        .lines()
        .filter_map(|l| l.trim().strip_prefix("verbs: "))
        .collect();
    assert_eq!(verbs, [r#"["list", "watch"]"#], "the chart's ClusterRole");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_refused_api_leaves_container_ids_without_pod_names() {
    require_kernel!();
    let d = scratch("pods-refused");
    let token = d.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let forbidden = status(
        403,
        "pods is forbidden: User \"system:serviceaccount:copyscope:copyscope\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
    );
    let api = FakeApi::start(&d, vec![Reply::Json(403, forbidden)], vec![]);
    let agent = api.start_agent(NODE, &token);
    let server = id(4);
    let container = FakeContainer::new("0a1b2c3d-0000-4000-8000-000000000004", &server);
    let _workload = workload_in(&container, &d);
    let want = [
        info_line(&server, "", "", ""),
        info_line("", "", "", ""),
        "copyscope_kubernetes_api_up 0".to_string(),
    ];
    let mut last = String::new();
    wait_for(WAIT, "bare container ids in /metrics", || {
        last = agent.metrics();
        want.iter().all(|w| last.contains(w.as_str())).then_some(())
    });
    let log = agent.log();
    assert!(
        log.contains("HTTP 403") && log.contains("needs list and watch on pods"),
        "the agent says why and what to grant:\n{log}"
    );
    // It warns once, not at every retry.
    assert_eq!(log.matches("cannot follow the pods").count(), 1, "{log}");
}

#[test]
fn a_node_name_without_an_api_server_is_a_clear_error() {
    let out = Command::new(COPYSCOPE)
        .args(["run", "--listen", "127.0.0.1:0", "--kube-node", NODE])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("COPYSCOPE_KUBE_API")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--kube-node is set but there is no API server") && err.contains("--kube-api"),
        "{err}"
    );
}

/// Short-lived processes in a container: `procs` of them, each making `calls` pwrite(1)
/// calls under the comm `name`, spawned by a process that moved itself into the
/// container's cgroup first. Each is gone long before its window is reported.
fn short_lived_in(container: &FakeContainer, file: &std::path::Path, name: &str) -> Command {
    let mut c = container.command(&[
        WORKLOAD,
        "spawn",
        &SHORT_PROCS.to_string(),
        "4",
        "--comm",
        name,
        "pwrite",
        file.to_str().unwrap(),
        &SHORT_CALLS.to_string(),
        "1",
    ]);
    c.stdin(Stdio::null()).env(
        "COPYSCOPE_WORKLOAD_OUT",
        file.with_extension(format!("{name}.json")),
    );
    c
}

const SHORT_PROCS: u64 = 40;
const SHORT_CALLS: u64 = 1000;

/// A unique comm for this run's short-lived workload (15 bytes at most).
fn short_comm(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn short_lived_processes_are_billed_to_their_container_under_snapshot() {
    require_kernel!();
    let d = scratch("pods-short-snapshot");
    let file = d.join("pwrite.bin");
    let (a, b) = (id(5), id(6));
    for (container, id, tag) in [
        (
            FakeContainer::new("5a5a5a5a-1111-4111-8111-111111111111", &a),
            &a,
            "ctrd",
        ),
        (
            FakeContainer::crio("5a5a5a5a-2222-4222-8222-222222222222", &b),
            &b,
            "crio",
        ),
    ] {
        let name = short_comm(tag);
        let cmd = short_lived_in(&container, &file, &name);
        let argv: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let out = Command::new(COPYSCOPE)
            .args(["snapshot", "--json", "--"])
            .args(&argv)
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(Stdio::null())
            .output()
            .expect("copyscope snapshot -- spawn in a container");
        common::assert_ok(&out, "copyscope snapshot -- spawn in a container");
        let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mine: Vec<&serde_json::Value> = snap["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["comm"] == name.as_str())
            .collect();
        assert_eq!(
            mine.len() as u64,
            SHORT_PROCS,
            "{tag}: every process is listed"
        );
        for p in &mine {
            assert_eq!(p["exited"], true, "{tag}: {p:#}");
            assert_eq!(
                p["container_id"].as_str(),
                Some(id.as_str()),
                "{tag}: an exited process is billed to its container: {p:#}"
            );
        }
        let calls: u64 = mine
            .iter()
            .map(|p| common::row(p, "pwrite64", "file").calls)
            .sum();
        common::assert_near(
            common::slack(&snap),
            calls,
            SHORT_PROCS * SHORT_CALLS,
            1,
            &format!("{tag}: pwrite64 calls in the container"),
        );
    }
}

/// `f` until it gives a value, for at most `limit`.
fn wait_for_or<T>(limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The value of the one series `prefix{labels} value` in an exposition, if present.
fn series_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn short_lived_processes_are_billed_to_their_container_and_pod_under_run() {
    require_kernel!();
    let d = scratch("pods-short-run");
    let token = d.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (server, init, job) = (id(7), id(8), id(9));
    let vars = [
        ("NODE", NODE),
        ("SERVER", server.as_str()),
        ("INIT", init.as_str()),
        ("JOB", job.as_str()),
        ("RV", "51000"),
    ];
    let api = FakeApi::start(
        &d,
        vec![Reply::Json(200, fixture("pods-list.json", &vars))],
        vec![Reply::Watch(Vec::new(), Gate::default())],
    );
    let agent = api.start_agent(NODE, &token);
    let file = d.join("pwrite.bin");
    let containerd = FakeContainer::new("6b1d2f4e-8c3a-4e7b-9f21-0a5c7d3e9b11", &server);
    let crio = FakeContainer::crio("7c2e3f5a-9d4b-4f8c-8a32-1b6d8e4f0c22", &init);
    for (container, id, tag, pod) in [
        (&containerd, &server, "ctrd", ("web-0", "shop", "server")),
        (&crio, &init, "crio", ("web-0", "shop", "migrate")),
    ] {
        let name = short_comm(tag);
        let out = short_lived_in(container, &file, &name)
            .output()
            .expect("spawning in the container");
        common::assert_ok(&out, "spawn in the container");
        let calls = format!(
            "copyscope_syscalls_total{{comm=\"{name}\",container_id=\"{id}\",syscall=\"pwrite64\",fd_kind=\"file\"}}"
        );
        let info = info_line(id, pod.0, pod.1, pod.2);
        let want = (SHORT_PROCS * SHORT_CALLS) as f64;
        let mut last = String::new();
        let m = wait_for_or(WAIT, || {
            last = agent.metrics();
            (series_value(&last, &calls).is_some_and(|v| v >= want) && last.contains(&info))
                .then(|| last.clone())
        })
        .unwrap_or_else(|| {
            let mine: Vec<&str> = last
                .lines()
                .filter(|l| l.contains(&name) || l.starts_with("copyscope_container_info"))
                .collect();
            panic!(
                "{tag}: the short-lived processes' calls never reached {want} in {id}:\n{}",
                mine.join("\n")
            )
        });
        assert_eq!(
            series_value(&m, &calls),
            Some(want),
            "{tag}: every call billed to the container {id}"
        );
        // Nothing of this comm outside the container.
        let outside = format!("copyscope_syscalls_total{{comm=\"{name}\",container_id=\"\"");
        assert!(
            !m.contains(&outside),
            "{tag}: calls billed outside the container:\n{m}"
        );
    }
}
