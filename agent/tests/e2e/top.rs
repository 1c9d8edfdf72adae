//! `copyscope top` end to end: the real binary in a real terminal (tmux), driven with
//! send-keys and read with capture-pane, against a workload with a known hot process.

use crate::common;

use std::{
    io::Read as _,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::tls;
use common::*;

/// Why tmux tests cannot run, if they cannot.
fn tmux_missing() -> Option<String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => {
            let why = "tmux is not installed (cargo xtask setup installs it)";
            assert!(!common::strict(), "{why}");
            Some(why.into())
        }
    }
}

/// A tmux session running one command in a 120x32 terminal; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(name: &str, cmd: &str) -> Tmux {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .output();
        // After the command ends the pane shows its exit code, so a clean quit (and a
        // restored terminal) can be checked.
        let wrapped = format!("{cmd}; echo TOP-EXITED-$?; sleep 60");
        let out = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "120",
                "-y",
                "32",
                &wrapped,
            ])
            .env("TERM", "xterm-256color")
            .output()
            .unwrap();
        assert_ok(&out, "tmux new-session");
        Tmux { name: name.into() }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let out = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .output()
            .unwrap();
        assert_ok(&out, "tmux send-keys");
    }

    /// Wait until `ok` holds for the screen; the screen it held for.
    fn wait_for(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

/// A process that reads a file and writes it to a socket (the sendfile pattern), with a
/// receiver in this test process draining the socket.
struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, secs: u64) -> Server {
        let f = dir.join("page");
        write_file(&f, 8 << 20);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        let child = Command::new(WORKLOAD)
            .args(["serve", f.to_str().unwrap(), &addr, &secs.to_string()])
            .env("COPYSCOPE_WORKLOAD_OUT", dir.join("serve-result"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line of the screen that shows the serving process.
fn server_line(screen: &str, pid: u32) -> Option<&str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn top_shows_the_hot_process_with_its_advice_and_quits_cleanly() {
    require_kernel!();
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    let d = scratch("top-local");
    let server = Server::start(&d, 120);
    let pid = server.child.id();
    let t = Tmux::start(
        "copyscope-top-local",
        &format!("{COPYSCOPE} top --interval 1"),
    );
    let screen = t.wait_for("the serving process flagged for sendfile", 60, |s| {
        server_line(s, pid).is_some_and(|l| l.contains("copyscope-work") && l.contains("sendfile"))
    });
    assert!(screen.contains("local probes"), "{screen}");
    assert!(screen.contains("CPU copy"), "{screen}");
    // Sorted by advice: a flagged process is the first line under the column titles (the
    // remote test's server, running at the same time, may tie with this one).
    let first = screen
        .lines()
        .skip_while(|l| !l.starts_with("PID"))
        .nth(1)
        .unwrap_or("");
    assert!(
        first.contains("copyscope-work") && first.contains("sendfile"),
        "{screen}"
    );

    // Filter to it, open its detail: the finding with its evidence and saving.
    t.keys(&["/"]);
    t.keys(&["-l", &pid.to_string()]);
    t.keys(&["Enter"]);
    t.wait_for("the filter", 10, |s| {
        s.contains(&format!("filter \"{pid}\""))
    });
    t.keys(&["Enter"]);
    let detail = t.wait_for("the detail view", 10, |s| s.contains("evidence:"));
    assert!(
        detail.contains(&format!("pid {pid} copyscope-work")),
        "{detail}"
    );
    assert!(detail.contains("estimated saving"), "{detail}");
    assert!(
        detail.contains("read") && detail.contains("socket"),
        "{detail}"
    );

    // Help, then quit: the terminal comes back and the exit code is 0.
    t.keys(&["Escape"]);
    t.keys(&["?"]);
    t.wait_for("the help", 10, |s| s.contains("reverse the sort"));
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");
    assert!(
        !end.contains("ADVICE"),
        "the alternate screen is gone: {end}"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn top_from_a_remote_agent_shows_its_windows_and_survives_the_agent_going_away() {
    require_kernel!();
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    let d = scratch("top-remote");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut agent = Command::new(COPYSCOPE)
        .args([
            "run",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server::start(&d, 120);
    let pid = server.child.id();
    let url = format!("http://127.0.0.1:{port}");
    let t = Tmux::start(
        "copyscope-top-remote",
        &format!("{COPYSCOPE} top --from {url} --interval 1"),
    );
    let screen = t.wait_for("the agent's window with the serving process", 60, |s| {
        server_line(s, pid).is_some_and(|l| l.contains("sendfile"))
    });
    assert!(screen.contains(&format!("agent {url}")), "{screen}");
    // The agent goes away: the header says so, the last window stays, top keeps running.
    let _ = agent.kill();
    let _ = agent.wait();
    let gone = t.wait_for("the unreachable agent in the header", 30, |s| {
        s.contains("agent unreachable")
    });
    assert!(server_line(&gone, pid).is_some(), "{gone}");
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");
}

#[test]
fn top_from_an_endpoint_that_is_not_an_agent_says_so_and_keeps_running() {
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    // A server that answers every request with JSON that is not a snapshot.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    thread::spawn(move || {
        for mut c in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = r#"{"status":"ok","processes":"many"}"#;
            let _ = std::io::Write::write_all(
                &mut c,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let t = Tmux::start(
        "copyscope-top-malformed",
        &format!("{COPYSCOPE} top --from {url} --interval 1"),
    );
    let screen = t.wait_for("the malformed answer in the header", 30, |s| {
        s.contains("is not a copyscope snapshot")
    });
    assert!(
        screen.contains("bad answer from the agent: http://"),
        "{screen}"
    );
    assert!(screen.contains("waiting for the first window"), "{screen}");
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn top_that_cannot_attach_says_why_before_drawing_anything() {
    require_kernel!();
    let out = Command::new(COPYSCOPE)
        .args(["top"])
        .env(
            "COPYSCOPE_DISABLE_METHODS",
            "tp_btf,raw_tracepoint,tracepoint",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("disabled by COPYSCOPE_DISABLE_METHODS"),
        "{err}"
    );
    // Nothing was drawn: no escape sequences for the alternate screen.
    assert!(!out.stdout.contains(&0x1b), "{:?}", out.stdout);
}

/// copyscope's own HTTP server (`copyscope::http::Server`, as `copyscope run` starts it)
/// with a web configuration, in this process: `/api/v1/snapshot` answers the fixture
/// window of agent/tests/fixtures/snapshot.json, ended now, with the nginx worker's calls
/// going up by one per answer. No probes are loaded.
struct FakeAgent {
    addr: String,
    /// Answers of /api/v1/snapshot with 200 (past basic auth).
    served: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeAgent {
    fn start(web_config: &Path) -> FakeAgent {
        let web = copyscope::webconfig::load(web_config).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicU64::new(0));
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/snapshot.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let app = axum::Router::new().route(
            "/api/v1/snapshot",
            axum::routing::get({
                let served = served.clone();
                move || async move {
                    let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                    let mut s = fixture.clone();
                    s["end_unix_seconds"] = serde_json::json!(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs_f64()
                    );
                    for p in s["processes"].as_array_mut().unwrap() {
                        if p["pid"] == 4211 {
                            let calls = p["calls"].as_u64().unwrap();
                            p["calls"] = serde_json::json!(calls + n);
                        }
                    }
                    axum::Json(s)
                }
            }),
        );
        let server = copyscope::http::Server::new(Some(web)).unwrap();
        assert_eq!(server.scheme(), "https");
        runtime.spawn(server.serve(listener, app, std::future::pending()));
        FakeAgent {
            addr,
            served,
            _runtime: runtime,
        }
    }
}

#[test]
fn top_from_an_agent_with_tls_client_certificates_and_basic_auth_shows_its_rows() {
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    if !common::agent::require_tool("openssl", "openssl") {
        return;
    }
    let d = scratch("top-tls");
    let ca = tls::ca(&d, "copyscope top test CA");
    tls::issue(
        &d,
        "server",
        "server",
        "serverAuth",
        "subjectAltName=IP:127.0.0.1\n",
    );
    let (cert, key) = tls::issue(&d, "client", "client", "clientAuth", "");
    let hash = bcrypt::hash("top secret", 4).unwrap();
    let config = d.join("web-config.yml");
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n\
basic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let password = d.join("password");
    std::fs::write(&password, "top secret\n").unwrap();
    let agent = FakeAgent::start(&config);
    let url = format!("https://{}", agent.addr);
    let tls_args = format!(
        "--cacert {} --cert {} --key {}",
        ca.display(),
        cert.display(),
        key.display()
    );

    // Every credential: the agent's rows, refreshed.
    let t = Tmux::start(
        "copyscope-top-tls",
        &format!(
            "{COPYSCOPE} top --from {url} --interval 1 {tls_args} --user prometheus \
             --password-file {}",
            password.display()
        ),
    );
    let screen = t.wait_for("the agent's rows", 30, |s| {
        server_line(s, 4211).is_some_and(|l| l.contains("nginx"))
            && server_line(s, 1880).is_some_and(|l| l.contains("postgres"))
    });
    assert!(screen.contains(&format!("agent {url}")), "{screen}");
    let before = agent.served.load(Ordering::SeqCst);
    assert!(before >= 1);
    // Refreshed every second: more windows are fetched and drawn.
    t.wait_for("more windows", 15, |_| {
        agent.served.load(Ordering::SeqCst) >= before + 2
    });
    let live = t.capture();
    assert!(server_line(&live, 4211).is_some(), "{live}");
    assert!(!live.contains("agent refused"), "{live}");
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");

    // The password from the environment instead of a file.
    let t = Tmux::start(
        "copyscope-top-tls-env",
        &format!(
            "COPYSCOPE_PASSWORD='top secret' {COPYSCOPE} top --from {url} --interval 1 \
             {tls_args} --user prometheus"
        ),
    );
    t.wait_for("the agent's rows", 30, |s| server_line(s, 4211).is_some());
    t.keys(&["q"]);
    t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-0"));

    // No basic auth: the header says what to give, and no rows are invented.
    let served = agent.served.load(Ordering::SeqCst);
    let t = Tmux::start(
        "copyscope-top-tls-nouser",
        &format!("{COPYSCOPE} top --from {url} --interval 1 {tls_args}"),
    );
    let screen = t.wait_for("the 401 in the header", 30, |s| {
        s.contains("agent refused access")
    });
    assert!(screen.contains("--user NAME"), "{screen}");
    assert!(server_line(&screen, 4211).is_none(), "{screen}");
    t.keys(&["q"]);
    t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-0"));

    // A wrong password.
    std::fs::write(&password, "wrong\n").unwrap();
    let t = Tmux::start(
        "copyscope-top-tls-wrong",
        &format!(
            "{COPYSCOPE} top --from {url} --interval 1 {tls_args} --user prometheus \
             --password-file {}",
            password.display()
        ),
    );
    t.wait_for("the refused password in the header", 30, |s| {
        s.contains("password of prometheus was refused")
    });
    t.keys(&["q"]);
    t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-0"));

    // No client certificate: the TLS handshake fails, and says what is missing.
    let t = Tmux::start(
        "copyscope-top-tls-nocert",
        &format!(
            "COPYSCOPE_PASSWORD='top secret' {COPYSCOPE} top --from {url} --interval 1 \
             --cacert {} --user prometheus",
            ca.display()
        ),
    );
    let screen = t.wait_for("the handshake failure in the header", 30, |s| {
        s.contains("TLS with the agent failed")
    });
    assert!(screen.contains("client certificate"), "{screen}");
    t.keys(&["q"]);
    t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-0"));

    // No --cacert: the agent's certificate is not trusted.
    let t = Tmux::start(
        "copyscope-top-tls-noca",
        &format!(
            "COPYSCOPE_PASSWORD='top secret' {COPYSCOPE} top --from {url} --interval 1 \
             --cert {} --key {} --user prometheus",
            cert.display(),
            key.display()
        ),
    );
    let screen = t.wait_for("the untrusted certificate in the header", 30, |s| {
        s.contains("certificate is not trusted")
    });
    assert!(screen.contains("--cacert"), "{screen}");
    t.keys(&["q"]);
    t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-0"));
    // None of the refused runs got a snapshot.
    assert_eq!(agent.served.load(Ordering::SeqCst), served);
}

#[test]
fn top_refuses_bad_client_options_before_drawing_anything() {
    let d = scratch("top-client-options");
    let url = "https://127.0.0.1:9";
    for (args, env, want) in [
        (vec!["--key", "client.key"], None, "--cert <FILE>"),
        (
            vec!["--cacert", "no-such-ca.crt"],
            None,
            "reading the CA file (--cacert)",
        ),
        (vec!["--user", "prometheus"], None, "COPYSCOPE_PASSWORD"),
        (
            vec!["--user", "prometheus", "--password-file", "no-such-file"],
            Some("ignored"),
            "reading the password file",
        ),
    ] {
        let mut cmd = Command::new(COPYSCOPE);
        cmd.current_dir(&d)
            .args(["top", "--from", url])
            .args(&args)
            .env_remove("COPYSCOPE_PASSWORD")
            .stdin(Stdio::null());
        if let Some(p) = env {
            cmd.env("COPYSCOPE_PASSWORD", p);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
        // Nothing was drawn.
        assert!(!out.stdout.contains(&0x1b), "{args:?}: {:?}", out.stdout);
    }
}
