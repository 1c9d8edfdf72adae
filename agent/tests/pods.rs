//! Pod labels end to end: a real agent watches a fake Kubernetes API server (https, a
//! bearer token, responses in the API's format) while a workload runs in a fake container
//! (a cgroup named as containerd names them), and `copyscope_container_info` joins the
//! workload's container id to its pod, follows the watch, relists when the watch expires,
//! and falls back to bare container ids when the API refuses.

mod common;

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
    }
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
        log.contains("HTTP 403") && log.contains("needs get, list and watch on pods"),
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
