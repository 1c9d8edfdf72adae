//! Which pod each container belongs to, from the Kubernetes API: one list, then a watch,
//! of the pods on this node (`fieldSelector=spec.nodeName=NODE`), kept as a map from
//! container id to pod, namespace and container name. `copyscope_container_info` exports
//! it so queries can join workloads (labelled by container id) to pods.
//!
//! When the API server cannot be reached the map keeps what it last knew (empty at first),
//! the metrics fall back to container ids alone, and the watcher retries with back-off.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead as _, Read as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use log::{info, warn};
use serde_json::Value;

pub use crate::model::PodRef;

/// The service account's token and CA bundle, as Kubernetes mounts them in every pod.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Seconds the API server keeps one watch open before the watcher resumes it.
const WATCH_SECONDS: u64 = 300;
/// The largest pod list or watch event read (a node's pods are far smaller).
const BODY_LIMIT: u64 = 64 << 20;

/// Where the API server is and which node's pods to follow.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL, e.g. https://10.96.0.1:443.
    pub api: String,
    pub node: String,
    /// A bearer token file, read again for every request (projected tokens rotate).
    pub token_file: Option<PathBuf>,
    /// PEM certificates to trust for an https API server.
    pub ca_file: Option<PathBuf>,
}

impl Config {
    /// From the command line: the node name turns pod labels on. Without an explicit API
    /// URL, the in-cluster one (KUBERNETES_SERVICE_HOST/PORT) is used.
    pub fn resolve(
        node: Option<&str>,
        api: Option<&str>,
        token_file: &Path,
        ca_file: &Path,
    ) -> Result<Option<Config>> {
        let Some(node) = node.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let api = match api.filter(|a| !a.is_empty()) {
            Some(a) => a.trim_end_matches('/').to_string(),
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    anyhow!(
                        "--kube-node is set but there is no API server to ask: run in a pod \
                         (KUBERNETES_SERVICE_HOST) or give --kube-api URL"
                    )
                })?;
                let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or("443".into());
                // An IPv6 service address needs brackets in a URL.
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            bail!("--kube-api {api:?} is not an http:// or https:// URL");
        }
        let https = api.starts_with("https://");
        let ca = (https && ca_file.exists()).then(|| ca_file.to_path_buf());
        if https && ca.is_none() {
            bail!(
                "the API server {api} is https but the CA file {} does not exist: give --kube-ca-file",
                ca_file.display()
            );
        }
        Ok(Some(Config {
            api,
            node: node.to_string(),
            token_file: token_file.exists().then(|| token_file.to_path_buf()),
            ca_file: ca,
        }))
    }
}

/// namespace/name -> the pod's started containers (id, meta).
pub type PodMap = HashMap<String, Vec<(String, PodRef)>>;

#[derive(Default)]
struct State {
    pods: PodMap,
    /// Whether the last request to the API server worked.
    up: bool,
}

/// The pods on this node as the watcher last saw them (shared with its thread).
#[derive(Clone, Default)]
pub struct Pods {
    state: Arc<Mutex<State>>,
    node: Arc<str>,
}

impl Pods {
    /// Start watching in a background thread; returns at once.
    pub fn watch(cfg: Config) -> Result<Pods> {
        let agent = http_agent(&cfg)?;
        let pods = Pods {
            state: Arc::default(),
            node: cfg.node.as_str().into(),
        };
        let state = pods.clone();
        info!(
            "watching the pods of node {} at {} for container names",
            cfg.node, cfg.api
        );
        std::thread::Builder::new()
            .name("pods".into())
            .spawn(move || state.follow(&agent, &cfg))
            .context("starting the pod watcher")?;
        Ok(pods)
    }

    /// The node whose pods these are.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Container id -> pod, namespace and container name.
    pub fn containers(&self) -> BTreeMap<String, PodRef> {
        let s = self.state.lock().unwrap();
        s.pods.values().flatten().cloned().collect()
    }

    /// Whether the API server answered the last request.
    pub fn up(&self) -> bool {
        self.state.lock().unwrap().up
    }

    fn set_up(&self, up: bool) {
        self.state.lock().unwrap().up = up;
    }

    /// List, then watch from the list's resource version; relist when the watch says
    /// the version is gone (410), back off on errors. Runs for the life of the process.
    fn follow(&self, agent: &ureq::Agent, cfg: &Config) {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        loop {
            let r = self.list(agent, cfg).and_then(|rv| {
                if failing {
                    info!("the Kubernetes API answers again");
                    failing = false;
                }
                backoff = Duration::from_secs(1);
                self.watch_from(agent, cfg, rv)
            });
            match r {
                // The resource version expired: list again at once.
                Ok(()) => continue,
                Err(e) => {
                    self.set_up(false);
                    if !failing {
                        warn!(
                            "cannot follow the pods in the Kubernetes API: {e:#}; container ids \
                             stay without pod names until it answers (retrying)"
                        );
                        failing = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }

    /// One list: replaces the map; returns the list's resource version.
    fn list(&self, agent: &ureq::Agent, cfg: &Config) -> Result<String> {
        let url = format!(
            "{}/api/v1/pods?fieldSelector={}",
            cfg.api,
            node_selector(cfg)
        );
        let mut resp = get(agent, cfg, &url, Duration::from_secs(30))?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .context("reading the pod list")?;
        let list: Value = serde_json::from_str(&body).context("the pod list is not JSON")?;
        let (rv, pods) = parse_pod_list(&list)?;
        let mut s = self.state.lock().unwrap();
        s.pods = pods;
        s.up = true;
        Ok(rv)
    }

    /// Apply watch events until the server ends the watch; Ok(()) when a relist is due.
    fn watch_from(&self, agent: &ureq::Agent, cfg: &Config, mut rv: String) -> Result<()> {
        loop {
            let url = format!(
                "{}/api/v1/pods?fieldSelector={}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={rv}",
                cfg.api,
                node_selector(cfg)
            );
            let resp = get(agent, cfg, &url, Duration::from_secs(WATCH_SECONDS + 30))?;
            self.set_up(true);
            let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
            let mut line = String::new();
            let mut events = 0u64;
            loop {
                line.clear();
                let n = std::io::Read::by_ref(&mut reader)
                    .take(BODY_LIMIT)
                    .read_line(&mut line)
                    .context("reading the pod watch")?;
                if n == 0 {
                    break;
                }
                if line.trim().is_empty() {
                    continue;
                }
                let ev: Value = serde_json::from_str(&line).context("a watch event is not JSON")?;
                events += 1;
                match apply_event(&mut self.state.lock().unwrap().pods, &ev)? {
                    Event::Applied(v) | Event::Bookmark(v) => rv = v,
                    Event::Expired => return Ok(()),
                }
            }
            log::debug!("pod watch ended after {events} events; resuming at {rv}");
        }
    }
}

fn node_selector(cfg: &Config) -> String {
    // `spec.nodeName=NODE`, with = as %3D; node names are DNS subdomains (no other escaping).
    format!("spec.nodeName%3D{}", cfg.node)
}

fn http_agent(cfg: &Config) -> Result<ureq::Agent> {
    let mut b = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .user_agent(concat!("copyscope/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &cfg.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", ca.display());
        }
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(b.build().into())
}

/// A GET with the bearer token; an error carrying the API's message for non-2xx answers.
fn get(
    agent: &ureq::Agent,
    cfg: &Config,
    url: &str,
    body_timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>> {
    let mut req = agent
        .get(url)
        .header("Accept", "application/json")
        .config()
        .timeout_recv_body(Some(body_timeout))
        .build();
    if let Some(f) = &cfg.token_file {
        let token =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        req = req.header("Authorization", format!("Bearer {}", token.trim()));
    }
    let mut resp = req.call().with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        let hint = match status {
            401 => ": the token was refused",
            403 => ": the service account needs list and watch on pods (the chart's ClusterRole)",
            _ => "",
        };
        bail!("GET {url}: HTTP {status}{hint}: {}", msg.trim());
    }
    Ok(resp)
}

/// A PodList's resource version and its pods' containers.
pub fn parse_pod_list(list: &Value) -> Result<(String, PodMap)> {
    if list["kind"] != "PodList" {
        bail!("expected a PodList, got kind {}", list["kind"]);
    }
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the pod list has no metadata.resourceVersion")?
        .to_string();
    let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    Ok((rv, items.iter().filter_map(pod_entry).collect()))
}

/// What one watch event did.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The pod was added, changed or deleted; the new resource version.
    Applied(String),
    /// Nothing changed; the watch has reached this resource version.
    Bookmark(String),
    /// The resource version is too old (410 Gone): list again.
    Expired,
}

/// Apply one watch event (`{"type": ..., "object": ...}`) to the pod map.
pub fn apply_event(pods: &mut PodMap, ev: &Value) -> Result<Event> {
    let obj = &ev["object"];
    let rv = || {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string)
            .context("a watch event's object has no resourceVersion")
    };
    match ev["type"].as_str() {
        Some("ADDED" | "MODIFIED") => {
            if let Some((key, containers)) = pod_entry(obj) {
                pods.insert(key, containers);
            }
            Ok(Event::Applied(rv()?))
        }
        Some("DELETED") => {
            if let Some((key, _)) = pod_entry(obj) {
                pods.remove(&key);
            }
            Ok(Event::Applied(rv()?))
        }
        Some("BOOKMARK") => Ok(Event::Bookmark(rv()?)),
        Some("ERROR") if obj["code"] == 410 => Ok(Event::Expired),
        Some("ERROR") => bail!(
            "the watch failed: {} (code {})",
            obj["message"].as_str().unwrap_or("no message"),
            obj["code"]
        ),
        other => bail!("unknown watch event type {other:?}"),
    }
}

/// namespace/name and the containers of a pod that have started (those have ids): regular,
/// init and ephemeral.
fn pod_entry(pod: &Value) -> Option<(String, Vec<(String, PodRef)>)> {
    let meta = &pod["metadata"];
    let (name, namespace) = (meta["name"].as_str()?, meta["namespace"].as_str()?);
    let mut containers = Vec::new();
    for field in [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ] {
        for c in pod["status"][field].as_array().into_iter().flatten() {
            let Some(id) = c["containerID"].as_str().and_then(container_id) else {
                continue;
            };
            containers.push((
                id,
                PodRef {
                    pod: name.to_string(),
                    namespace: namespace.to_string(),
                    container: c["name"].as_str().unwrap_or("").to_string(),
                },
            ));
        }
    }
    Some((format!("{namespace}/{name}"), containers))
}

/// `containerd://ID`, `cri-o://ID`, `docker://ID` -> ID, in the form cgroup paths give it.
pub fn container_id(s: &str) -> Option<String> {
    let id = s.rsplit("://").next()?;
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const A: &str = "4f3a5c0f2b9d8e7a6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615";
    const B: &str = "9b8a7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";

    fn pod(ns: &str, name: &str, rv: &str, statuses: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": "u"},
            "spec": {"nodeName": "node-1"},
            "status": statuses,
        })
    }

    #[test]
    fn container_ids_lose_their_runtime_scheme() {
        assert_eq!(
            container_id(&format!("containerd://{A}")).as_deref(),
            Some(A)
        );
        assert_eq!(container_id(&format!("cri-o://{B}")).as_deref(), Some(B));
        assert_eq!(
            container_id(&format!("docker://{}", A.to_uppercase())).as_deref(),
            Some(A)
        );
        assert_eq!(container_id("containerd://"), None);
    }

    #[test]
    fn a_pod_list_maps_every_started_container() {
        let list = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "1234"},
            "items": [
                pod("shop", "web-0", "1200", json!({
                    "containerStatuses": [
                        {"name": "nginx", "containerID": format!("containerd://{A}")},
                        {"name": "pending", "state": {"waiting": {"reason": "ContainerCreating"}}},
                    ],
                    "initContainerStatuses": [
                        {"name": "init", "containerID": format!("containerd://{B}")},
                    ],
                })),
                pod("kube-system", "starting", "1201", json!({})),
            ]
        });
        let (rv, pods) = parse_pod_list(&list).unwrap();
        assert_eq!(rv, "1234");
        assert_eq!(pods.len(), 2);
        let web = &pods["shop/web-0"];
        assert_eq!(web.len(), 2);
        assert_eq!(
            web[0],
            (
                A.to_string(),
                PodRef {
                    pod: "web-0".into(),
                    namespace: "shop".into(),
                    container: "nginx".into()
                }
            )
        );
        assert_eq!(web[1].1.container, "init");
        assert!(pods["kube-system/starting"].is_empty());
        assert!(parse_pod_list(&json!({"kind": "Status"})).is_err());
    }

    #[test]
    fn watch_events_add_change_delete_and_expire() {
        let mut pods = HashMap::new();
        let added = json!({"type": "ADDED", "object": pod("shop", "web-0", "7", json!({}))});
        assert_eq!(
            apply_event(&mut pods, &added).unwrap(),
            Event::Applied("7".into())
        );
        assert!(pods["shop/web-0"].is_empty());
        let running = json!({"type": "MODIFIED", "object": pod("shop", "web-0", "8", json!({
            "containerStatuses": [{"name": "nginx", "containerID": format!("containerd://{A}")}]
        }))});
        assert_eq!(
            apply_event(&mut pods, &running).unwrap(),
            Event::Applied("8".into())
        );
        assert_eq!(pods["shop/web-0"][0].0, A);
        let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "12"}}});
        assert_eq!(
            apply_event(&mut pods, &bookmark).unwrap(),
            Event::Bookmark("12".into())
        );
        let deleted = json!({"type": "DELETED", "object": pod("shop", "web-0", "13", json!({}))});
        apply_event(&mut pods, &deleted).unwrap();
        assert!(pods.is_empty());
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 7 (12)"}});
        assert_eq!(apply_event(&mut pods, &gone).unwrap(), Event::Expired);
        let denied = json!({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd down"}});
        let e = apply_event(&mut pods, &denied).unwrap_err().to_string();
        assert!(e.contains("etcd down"), "{e}");
        assert!(apply_event(&mut pods, &json!({"type": "WHAT"})).is_err());
    }

    #[test]
    fn pod_labels_need_a_node_and_an_api_server() {
        let none = Path::new("/nonexistent/token");
        assert!(
            Config::resolve(None, Some("http://127.0.0.1:1"), none, none)
                .unwrap()
                .is_none()
        );
        let c = Config::resolve(Some("node-1"), Some("http://127.0.0.1:8001/"), none, none)
            .unwrap()
            .unwrap();
        assert_eq!(c.api, "http://127.0.0.1:8001");
        assert_eq!(c.token_file, None);
        let e = Config::resolve(Some("node-1"), Some("ftp://x"), none, none).unwrap_err();
        assert!(e.to_string().contains("not an http"), "{e}");
        let e = Config::resolve(Some("node-1"), Some("https://10.0.0.1"), none, none).unwrap_err();
        assert!(e.to_string().contains("--kube-ca-file"), "{e}");
    }
}
