//! A fake Kubernetes API server for the pod-label tests: https on 127.0.0.1 with a
//! cluster CA and server certificate made by openssl for the test, answering pod lists and
//! pod watches from a
//! script of responses in the API's own format (`tests/fixtures/kube/`), and recording
//! every request. Plus a fake container: a cgroup whose path carries a container id, as
//! the container runtimes lay them out, for the workload to run in.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

/// What the fake server answers to one request.
pub enum Reply {
    /// A JSON document with this status.
    Json(u16, String),
    /// A watch: these events (one JSON object per line, chunked), then the stream stays
    /// open until the gate opens (or the server stops), then ends.
    Watch(Vec<String>, Gate),
}

/// Holds a watch stream open until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    fn wait(&self) {
        let mut open = self.0.0.lock().unwrap();
        while !*open {
            open = self.0.1.wait(open).unwrap();
        }
    }

    /// An already open gate: the watch ends after its events.
    pub fn opened() -> Gate {
        let g = Gate::default();
        g.open();
        g
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub target: String,
    pub authorization: Option<String>,
}

impl Seen {
    pub fn is_watch(&self) -> bool {
        self.target.contains("watch=1")
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        q.split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }
}

struct Script {
    lists: VecDeque<Reply>,
    watches: VecDeque<Reply>,
    seen: Vec<Seen>,
    /// Every gate handed out, opened when the server stops.
    gates: Vec<Gate>,
}

pub struct FakeApi {
    pub url: String,
    /// The CA the agent must trust (the server's own self-signed certificate).
    pub ca_file: PathBuf,
    script: Arc<Mutex<Script>>,
}

impl FakeApi {
    /// Serve on a free port of 127.0.0.1 with a fresh certificate made in `dir`. Lists are
    /// answered in order (the last one repeats); watches too (when none is left, a watch
    /// stays open until the server stops).
    pub fn start(dir: &Path, lists: Vec<Reply>, watches: Vec<Reply>) -> FakeApi {
        let (ca, cert, key) = certificates(dir);
        let tls = Arc::new(server_config(&cert, &key));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let mut gates: Vec<Gate> = Vec::new();
        for r in lists.iter().chain(&watches) {
            if let Reply::Watch(_, g) = r {
                gates.push(g.clone());
            }
        }
        let script = Arc::new(Mutex::new(Script {
            lists: lists.into(),
            watches: watches.into(),
            seen: Vec::new(),
            gates,
        }));
        let s = script.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (tls, s) = (tls.clone(), s.clone());
                std::thread::spawn(move || serve(conn, tls, s));
            }
        });
        FakeApi {
            url,
            ca_file: ca,
            script,
        }
    }

    /// `copyscope run --interval 1` following this server's pods of `node`, with the
    /// bearer token in the file `token`.
    pub fn start_agent(&self, node: &str, token: &Path) -> super::agent::Agent {
        super::agent::start_agent(&[
            "--interval",
            "1",
            "--kube-node",
            node,
            "--kube-api",
            &self.url,
            "--kube-token-file",
            token.to_str().unwrap(),
            "--kube-ca-file",
            self.ca_file.to_str().unwrap(),
        ])
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        for g in &self.script.lock().unwrap().gates {
            g.open();
        }
    }
}

/// A cluster CA and the API server's certificate signed by it (for 127.0.0.1), as
/// kubeadm lays them out: (ca.crt, apiserver.crt, apiserver.key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = super::tls::ca(dir, "kubernetes");
    let (cert, key) = super::tls::issue(
        dir,
        "apiserver",
        "kube-apiserver",
        "serverAuth",
        "subjectAltName=IP:127.0.0.1,DNS:kubernetes.default.svc\n",
    );
    (ca, cert, key)
}

fn server_config(cert: &Path, key: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap()
}

/// One connection: requests one after another (the client keeps connections alive).
fn serve(tcp: TcpStream, tls: Arc<rustls::ServerConfig>, script: Arc<Mutex<Script>>) {
    let conn = rustls::ServerConnection::new(tls).unwrap();
    let mut stream = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let target = head
            .first()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        let authorization = head.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        });
        let seen = Seen {
            target,
            authorization,
        };
        let reply = {
            let mut s = script.lock().unwrap();
            s.seen.push(seen.clone());
            if seen.is_watch() {
                s.watches.pop_front().unwrap_or_else(|| {
                    let g = Gate::default();
                    s.gates.push(g.clone());
                    Reply::Watch(vec![], g)
                })
            } else if s.lists.len() > 1 {
                s.lists.pop_front().unwrap()
            } else {
                match s.lists.front() {
                    Some(Reply::Json(code, body)) => Reply::Json(*code, body.clone()),
                    _ => Reply::Json(500, status(500, "no list scripted")),
                }
            }
        };
        let w = stream.get_mut();
        let ok = match reply {
            Reply::Json(code, body) => write!(
                w,
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .and_then(|_| w.flush()),
            Reply::Watch(events, gate) => (|| {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                for e in events {
                    let line = format!("{e}\n");
                    write!(w, "{:x}\r\n{line}\r\n", line.len())?;
                    w.flush()?;
                }
                gate.wait();
                write!(w, "0\r\n\r\n")?;
                w.flush()
            })(),
        };
        if ok.is_err() {
            return;
        }
    }
}

/// A Kubernetes Status document.
pub fn status(code: u16, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "code": code
    })
    .to_string()
}

/// A fixture from tests/fixtures/kube/, with `{{NAME}}` placeholders filled in.
pub fn fixture(name: &str, vars: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    let mut s =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!s.contains("{{"), "{name}: a placeholder is left");
    s
}

/// The watch events of a fixture file: one JSON object per line.
pub fn events(name: &str, vars: &[(&str, &str)]) -> Vec<String> {
    fixture(name, vars)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // Each line must be one compact JSON document, as the API server streams them.
            let v: serde_json::Value = serde_json::from_str(l).expect("a watch event line");
            v.to_string()
        })
        .collect()
}

/// A cgroup named as a container runtime names a container's (cgroup v2: the unified
/// hierarchy; v1: the pids hierarchy), removed on drop. Processes that move into it have
/// `id` as their container id in /proc/PID/cgroup.
pub struct FakeContainer {
    pub dir: PathBuf,
    /// The hierarchy's mount point: the directories above `dir`, up to it, are ours.
    root: PathBuf,
}

impl FakeContainer {
    /// A containerd container (systemd cgroup driver): `kubepods-pod<UID>.slice/
    /// cri-containerd-<ID>.scope`, in the cgroup v2 hierarchy where there is one (the
    /// kernel records a process's v2 cgroup at its exit), else in the v1 pids hierarchy.
    pub fn new(pod_uid: &str, id: &str) -> FakeContainer {
        FakeContainer::make(pod_uid, &format!("cri-containerd-{id}.scope"), id)
    }

    /// A CRI-O container: `kubepods-pod<UID>.slice/crio-<ID>.scope`.
    pub fn crio(pod_uid: &str, id: &str) -> FakeContainer {
        FakeContainer::make(pod_uid, &format!("crio-{id}.scope"), id)
    }

    fn make(pod_uid: &str, scope: &str, id: &str) -> FakeContainer {
        // Where the agent itself looks: the cgroup v2 mount from /proc/self/mountinfo.
        let (root, dir) = match copyscope::cgroups::cgroup2_mount() {
            Some(root) => {
                let dir = root
                    .join(format!("copyscope-test-kubepods-pod{pod_uid}.slice"))
                    .join(scope);
                (root, dir)
            }
            None => {
                let root = PathBuf::from("/sys/fs/cgroup/pids");
                let dir = root
                    .join("copyscope-test-kubepods")
                    .join(format!("pod{pod_uid}"))
                    .join(id);
                (root, dir)
            }
        };
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the cgroup {}: {e}", dir.display()));
        FakeContainer { dir, root }
    }

    /// A shell command line that moves itself into the cgroup, then runs `argv`.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec \"$@\"",
                self.dir.display()
            ))
            .arg("sh")
            .args(argv);
        c
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        // The processes have exited by now; the directories go bottom up.
        let mut d = Some(self.dir.as_path());
        while let Some(p) = d {
            if p == self.root || !p.starts_with(&self.root) {
                break;
            }
            if std::fs::remove_dir(p).is_err() {
                break;
            }
            d = p.parent();
        }
    }
}

/// How long the pod tests wait for the agent to reflect the API.
pub const WAIT: Duration = Duration::from_secs(30);
