//! The HTTP server of `copyscope run` against clients that misbehave: a header sent by
//! halves (slowloris), connections that send nothing, more connections from one address
//! than it keeps, a TLS handshake that stalls, methods other than GET, oversized headers
//! and bodies; and its web configuration (`--web-config`): TLS with a CA made by openssl
//! for the test, client certificates, basic auth, and the files it refuses at start.
//!
//! The connection limits are tested on the server alone, in this process (no eBPF
//! programs): `serve` starts it with a router of two routes.

use crate::common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use copyscope::http::{Limits, Server};

use common::{
    COPYSCOPE,
    agent::{Guard, get, launch, require_tool, response, start_agent, wait_for},
    tls,
};

/// What the server may take to send a request head (copyscope::http::LIMITS).
const HEADER_READ: Duration = Duration::from_secs(10);
/// Connections the server keeps open from one address in the test of many.
const PER_SOURCE: usize = 256;

/// One raw request on a new connection: (status, the whole response as text). A status
/// of 0 when the server answered nothing (closed the connection).
fn raw(addr: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    // A write into a connection the server closed early may fail: what it answered
    // before closing still counts.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

/// The value of a response header (names are case-insensitive).
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_header_sent_by_halves_is_cut_off_while_scrapes_go_on() {
    require_kernel!();
    let agent = start_agent(&["--interval", "1"]);
    let mut slow = TcpStream::connect(&agent.addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: copyscope\r\n")
        .unwrap();
    let stalled = Instant::now();
    // Meanwhile a whole request is answered at once.
    let (status, body) = get(&agent.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("copyscope_build_info"), "{body}");
    assert!(stalled.elapsed() < HEADER_READ / 2);
    // The stalled one is closed, unanswered, once its time is up.
    slow.set_read_timeout(Some(HEADER_READ * 2)).unwrap();
    let mut buf = Vec::new();
    let read = slow.read_to_end(&mut buf);
    let after = stalled.elapsed();
    assert!(
        read.is_ok(),
        "closed, not still open: {read:?} after {after:?}"
    );
    assert!(
        after >= HEADER_READ - Duration::from_secs(1) && after < HEADER_READ * 2,
        "closed after {after:?}"
    );
    assert!(
        buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn idle_and_slow_connections_never_hold_up_a_scrape_of_the_agent() {
    require_kernel!();
    let agent = start_agent(&["--interval", "1"]);
    // More than the server keeps from one address: it sheds the ones that sent nothing.
    let attack = Attack::open(&agent.addr, 300, 100);
    let (status, body) = get(&agent.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("copyscope_build_info"), "{body}");
    // Every idle one is closed in the end: shed, or past the first-byte deadline.
    wait_for(HEADER_READ, "the idle connections to be closed", || {
        (attack.idle_closed() == attack.idle.len()).then_some(())
    });
    assert_eq!(get(&agent.addr, "/readyz").unwrap().0, 200);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn only_get_and_head_are_allowed_and_nothing_oversized() {
    require_kernel!();
    let agent = start_agent(&["--interval", "1"]);
    let addr = &agent.addr;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for path in ["/metrics", "/", "/api/v1/snapshot", "/no-such-path"] {
            let (status, text) = raw(
                addr,
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            assert_eq!(status, 405, "{method} {path}: {text}");
            assert_eq!(header(&text, "allow"), Some("GET, HEAD"), "{text}");
        }
    }
    // HEAD: the headers of GET, no body.
    let (status, text) = raw(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body: {text}");
    // 20 KiB of header: 431, or the connection closed.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let (status, text) = raw(addr, big.as_bytes()).unwrap();
    assert!(status == 431 || status == 0, "{text}");
    // A body, declared or chunked: 413.
    let declared = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n{}",
        "b".repeat(65536)
    );
    assert_eq!(raw(addr, declared.as_bytes()).unwrap().0, 413);
    let chunked = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        8192,
        "c".repeat(8192)
    );
    assert_eq!(raw(addr, chunked.as_bytes()).unwrap().0, 413);
    // And the server still answers.
    assert_eq!(get(addr, "/metrics").unwrap().0, 200);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by it,
/// made by openssl in `dir`: (ca.crt, server.crt, server.key, client.crt, client.key).
fn certificates(dir: &Path) -> [PathBuf; 5] {
    let ca = tls::ca(dir, "copyscope test CA");
    let (server_crt, server_key) = tls::issue(
        dir,
        "server",
        "server",
        "serverAuth",
        "subjectAltName=IP:127.0.0.1\n",
    );
    let (client_crt, client_key) = tls::issue(dir, "client", "client", "clientAuth", "");
    [ca, server_crt, server_key, client_crt, client_key]
}

/// A TLS client trusting `ca`, with a client certificate if given.
fn tls_client(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    })
}

/// An HTTPS GET with an optional `user:password`: (status, body).
fn tls_get(
    config: &Arc<rustls::ClientConfig>,
    addr: &str,
    path: &str,
    basic: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ClientConnection::new(config.clone(), "127.0.0.1".try_into().unwrap())
        .map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let auth = basic.map_or(String::new(), |b| {
        format!("Authorization: Basic {}\r\n", base64(b.as_bytes()))
    });
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    s.flush()?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        // The response is all there; only the close_notify is missing.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(response(&buf))
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `copyscope run --interval 1 --web-config FILE` serving HTTPS on a free port of
/// 127.0.0.1, once `/readyz` answers 200 to `client` (it needs no credentials).
fn start_https(web_config: &Path, client: &Arc<rustls::ClientConfig>) -> (Guard, String) {
    let agent = launch(
        &[],
        &[
            "--no-pin",
            "--interval",
            "1",
            "--web-config",
            web_config.to_str().unwrap(),
        ],
    );
    wait_for(Duration::from_secs(30), "the agent to be ready", || {
        tls_get(client, &agent.addr, "/readyz", None)
            .ok()
            .filter(|(s, _)| *s == 200)
    });
    (agent.child, agent.addr)
}

/// Not an HTTP answer: an error, or bytes that are no HTTP response.
fn refused(r: &std::io::Result<(u16, String)>) -> bool {
    !matches!(r, Ok((s, _)) if *s != 0)
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn tls_with_basic_auth_answers_only_the_right_password_and_takes_a_renewed_certificate() {
    require_kernel!();
    if !require_tool("openssl", "openssl") {
        return;
    }
    let d = common::scratch("http-tls");
    let [ca, cert, key, _, _] = certificates(&d);
    let hash = bcrypt::hash("right password", 4).unwrap();
    let config = d.join("web-config.yml");
    // Relative paths: from the file's directory.
    assert_eq!(cert.parent(), Some(d.as_path()));
    std::fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: {}\n  min_version: TLS12\n\
basic_auth_users:\n  prometheus: '{hash}'\n\
http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n",
            key.display()
        ),
    )
    .unwrap();
    let client = tls_client(&ca, None);
    let (_agent, addr) = start_https(&config, &client);

    let metrics = |basic| tls_get(&client, &addr, "/metrics", basic).unwrap();
    let (status, body) = metrics(None);
    assert_eq!(status, 401, "no credentials: {body}");
    assert_eq!(metrics(Some("prometheus:wrong password")).0, 401);
    assert_eq!(metrics(Some("someone:right password")).0, 401);
    let (status, body) = metrics(Some("prometheus:right password"));
    assert_eq!(status, 200);
    assert!(body.contains("copyscope_build_info"), "{body}");
    // Again, from the cache of verified credentials.
    assert_eq!(metrics(Some("prometheus:right password")).0, 200);
    assert_eq!(
        tls_get(&client, &addr, "/api/v1/snapshot", None).unwrap().0,
        401
    );
    // The kubelet's probes carry no credentials.
    assert_eq!(tls_get(&client, &addr, "/healthz", None).unwrap().0, 200);
    // The 401 says how to authenticate, and the configured header is on every answer.
    let tcp = TcpStream::connect(&addr).unwrap();
    let conn =
        rustls::ClientConnection::new(client.clone(), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        header(&text, "www-authenticate").is_some_and(|v| v.starts_with("Basic ")),
        "{text}"
    );
    assert_eq!(header(&text, "x-content-type-options"), Some("nosniff"));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = get(&addr, "/healthz");
    assert!(refused(&plain), "{plain:?}");
    // Nor does a client that does not trust the server's CA.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let [other_ca, ..] = certificates(&other);
    let other_client = tls_client(&other_ca, None);
    let r = tls_get(&other_client, &addr, "/healthz", None);
    assert!(refused(&r), "{r:?}");

    // A renewed certificate (here: of the other CA) is taken up without a restart.
    std::fs::copy(other.join("server.crt"), &cert).unwrap();
    std::fs::copy(other.join("server.key"), &key).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the agent to serve the new certificate",
        || {
            tls_get(&other_client, &addr, "/healthz", None)
                .ok()
                .filter(|(s, _)| *s == 200)
        },
    );
    // (A new client: one that connected before resumes its TLS session.)
    let r = tls_get(&tls_client(&ca, None), &addr, "/healthz", None);
    assert!(refused(&r), "the old CA's clients: {r:?}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn required_client_certificates_turn_away_a_client_without_one() {
    require_kernel!();
    if !require_tool("openssl", "openssl") {
        return;
    }
    let d = common::scratch("http-mtls");
    let [ca, _, _, client_cert, client_key] = certificates(&d);
    let config = d.join("web-config.yml");
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    .unwrap();
    let with_cert = tls_client(&ca, Some((&client_cert, &client_key)));
    let (_agent, addr) = start_https(&config, &with_cert);
    let (status, body) = tls_get(&with_cert, &addr, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("copyscope_build_info"));
    let without = tls_client(&ca, None);
    for path in ["/metrics", "/healthz"] {
        let r = tls_get(&without, &addr, path, None);
        assert!(refused(&r), "{path} without a client certificate: {r:?}");
    }
    // A certificate of another CA is no better.
    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let [_, _, _, other_cert, other_key] = certificates(&other);
    let r = tls_get(
        &tls_client(&ca, Some((&other_cert, &other_key))),
        &addr,
        "/metrics",
        None,
    );
    assert!(refused(&r), "{r:?}");
}

#[test]
fn a_bad_web_config_is_one_clear_error_before_anything_loads() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let d = common::scratch("http-bad-config");
    certificates(&d);
    let hash = bcrypt::hash("x", 4).unwrap();
    for (name, text, want) in [
        (
            "unknown-key.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  certfile: x\n"
                .to_string(),
            "tls_server_config: unknown field `certfile`",
        ),
        (
            "missing-cert.yml",
            "tls_server_config:\n  cert_file: no-such.crt\n  key_file: server.key\n".to_string(),
            "tls_server_config.cert_file",
        ),
        (
            "not-pem.yml",
            "tls_server_config:\n  cert_file: not-pem.yml\n  key_file: server.key\n".to_string(),
            "tls_server_config.cert_file",
        ),
        (
            "key-of-another.yml",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n".to_string(),
            "tls_server_config.cert_file",
        ),
        (
            "bad-hash.yml",
            format!("basic_auth_users:\n  good: '{hash}'\n  prometheus: plain-text\n"),
            "basic_auth_users.prometheus: not a bcrypt hash",
        ),
    ] {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(COPYSCOPE)
            .args(["run", "--listen", "127.0.0.1:0", "--web-config"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one line: {err}");
        assert!(
            lines[0].starts_with(&format!("copyscope: web config {}: ", path.display()))
                && lines[0].contains(want),
            "{name}: names the file and {want:?}: {err}"
        );
    }
    // A missing file, too.
    let out = Command::new(COPYSCOPE)
        .args(["run", "--listen", "127.0.0.1:0", "--web-config"])
        .arg(d.join("no-such.yml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("no-such.yml") && err.contains("No such file"),
        "{err}"
    );
}

/// Connections from this test that misbehave: `idle` ones connect and send nothing,
/// `slow` ones send the start of a request head and never finish it.
struct Attack {
    idle: Vec<TcpStream>,
    slow: Vec<TcpStream>,
}

impl Attack {
    fn open(addr: &str, idle: usize, slow: usize) -> Attack {
        let idle = (0..idle)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let slow = (0..slow)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                // A write may fail on a connection the server already shed.
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a");
                s
            })
            .collect();
        Attack { idle, slow }
    }

    fn idle_closed(&self) -> usize {
        self.idle.iter().filter(|s| closed(s)).count()
    }

    fn slow_closed(&self) -> usize {
        self.slow.iter().filter(|s| closed(s)).count()
    }
}

/// Whether the server has closed (or reset) a connection to which it sends nothing,
/// without waiting.
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1024];
    let r = loop {
        match (&*s).read(&mut buf) {
            // An answer (408) before the close: read on.
            Ok(n) if n > 0 => continue,
            r => break r,
        }
    };
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Whether the server closed (or reset) a connection within `limit` of waiting on it,
/// rather than leaving it open.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// copyscope's HTTP server with `limits`, in this process on a free port of 127.0.0.1:
/// `/metrics` answers at once, `/hold` when the test releases it. Stopped when dropped.
struct InProcess {
    addr: String,
    /// Requests of /hold that have begun.
    holding: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
    _runtime: tokio::runtime::Runtime,
}

impl InProcess {
    fn start(web: Option<copyscope::webconfig::Loaded>, limits: Limits) -> InProcess {
        use axum::routing::get;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let holding = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let app = axum::Router::new()
            .route("/metrics", get(|| async { "copyscope_build_info 1\n" }))
            .route(
                "/hold",
                get({
                    let (holding, release) = (holding.clone(), release.clone());
                    move || async move {
                        let released = release.notified();
                        holding.fetch_add(1, Ordering::SeqCst);
                        released.await;
                        "released\n"
                    }
                }),
            );
        let server = Server::new(web).unwrap().with_limits(limits);
        runtime.spawn(server.serve(listener, app, std::future::pending()));
        InProcess {
            addr,
            holding,
            release,
            _runtime: runtime,
        }
    }
}

/// Limits whose deadlines never strike during a test, so that only the rule under test
/// closes connections.
const LONG: Limits = Limits {
    first_byte: Duration::from_secs(300),
    tls_handshake: Duration::from_secs(300),
    header_read: Duration::from_secs(300),
    request: Duration::from_secs(600),
    ..copyscope::http::LIMITS
};

#[test]
fn a_scrape_is_answered_while_hundreds_of_idle_and_slow_connections_are_open() {
    // Fewer than the 700 connections below kept from one address, so that some are shed.
    let server = InProcess::start(
        None,
        Limits {
            per_source: PER_SOURCE,
            ..copyscope::http::LIMITS
        },
    );
    let attack = Attack::open(&server.addr, 500, 200);
    let (status, body) = get(&server.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "copyscope_build_info 1\n");
    // More than one address may keep were open: the server shed the difference, the
    // connections that had sent nothing first, so every slow one is still there.
    wait_for(Duration::from_secs(30), "connections to be shed", || {
        (attack.idle_closed() >= 500 + 200 + 1 - PER_SOURCE).then_some(())
    });
    assert_eq!(attack.slow_closed(), 0);
    // And the scrapes go on.
    for _ in 0..10 {
        assert_eq!(get(&server.addr, "/metrics").unwrap().0, 200);
    }
}

#[test]
fn a_connection_that_sends_nothing_is_reset_at_the_first_byte_deadline() {
    let limits = Limits {
        first_byte: Duration::from_secs(1),
        ..LONG
    };
    let server = InProcess::start(None, limits);
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    let mut started = TcpStream::connect(&server.addr).unwrap();
    started.write_all(b"G").unwrap();
    // The header deadline is minutes away: only the first-byte one can close it.
    assert!(closed_within(&mut silent, Duration::from_secs(60)));
    // One byte was enough for the other, which may now take its time over its head.
    assert!(!closed(&started));
    started.write_all(b"ET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    started.read_to_end(&mut answer).unwrap();
    assert_eq!(response(&answer), (200, "copyscope_build_info 1\n".into()));
}

#[test]
fn one_address_keeps_its_newest_connections_and_sheds_the_oldest_silent_one() {
    let limits = Limits {
        per_source: 4,
        ..LONG
    };
    let server = InProcess::start(None, limits);
    let silent: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    // The oldest go: six of ten, beyond the four an address keeps.
    wait_for(
        Duration::from_secs(30),
        "six connections to be shed",
        || silent[..6].iter().all(closed).then_some(()),
    );
    assert!(silent[6..].iter().all(|s| !closed(s)));
    // A scrape from the same address is answered, and takes the place of the oldest
    // silent one left.
    assert_eq!(get(&server.addr, "/metrics").unwrap().0, 200);
    wait_for(Duration::from_secs(30), "the seventh to be shed", || {
        closed(&silent[6]).then_some(())
    });
    assert!(silent[7..].iter().all(|s| !closed(s)));
}

#[test]
fn a_connection_with_a_request_in_flight_is_never_shed() {
    let limits = Limits {
        per_source: 4,
        ..LONG
    };
    let server = InProcess::start(None, limits);
    let held: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || get(&addr, "/hold").unwrap())
        })
        .collect();
    wait_for(Duration::from_secs(30), "four requests in flight", || {
        (server.holding.load(Ordering::SeqCst) == 4).then_some(())
    });
    // Nothing of this address can be shed: a fifth connection is closed unanswered.
    let (status, text) = raw(&server.addr, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        status, 0,
        "no answer while every connection is busy: {text}"
    );
    server.release.notify_waiters();
    for h in held {
        assert_eq!(h.join().unwrap(), (200, "released\n".into()));
    }
    assert_eq!(get(&server.addr, "/metrics").unwrap().0, 200);
}

#[test]
fn a_tls_handshake_that_stalls_is_reset_at_its_deadline_while_others_are_served() {
    if !require_tool("openssl", "openssl") {
        return;
    }
    let d = common::scratch("http-tls-stall");
    let [ca, ..] = certificates(&d);
    let config = d.join("web-config.yml");
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let web = copyscope::webconfig::load(&config).unwrap();
    let limits = Limits {
        first_byte: Duration::from_secs(1),
        tls_handshake: Duration::from_secs(2),
        ..LONG
    };
    let server = InProcess::start(Some(web), limits);
    // A TLS record header that announces 16 KiB of handshake, and one byte of it.
    let mut stalled = TcpStream::connect(&server.addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01])
        .unwrap();
    let client = tls_client(&ca, None);
    let (status, body) = tls_get(&client, &server.addr, "/metrics", None).unwrap();
    assert_eq!((status, body.as_str()), (200, "copyscope_build_info 1\n"));
    // The header deadline is minutes away: only the handshake one can close it.
    assert!(closed_within(&mut stalled, Duration::from_secs(60)));
    assert_eq!(
        tls_get(&client, &server.addr, "/metrics", None).unwrap().0,
        200
    );
}
