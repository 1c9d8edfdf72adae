//! The HTTP server of `copyscope run` against clients that misbehave: a header sent by
//! halves (slowloris), more connections than it serves at once, methods other than GET,
//! oversized headers and bodies; and its web configuration (`--web-config`): TLS with a
//! CA made by openssl for the test, client certificates, basic auth, and the files it
//! refuses at start.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    COPYSCOPE,
    agent::{Guard, get, launch, require_tool, response, start_agent, wait_for},
    tls,
};

/// What the server may take to send a request head (copyscope::http::LIMITS).
const HEADER_READ: Duration = Duration::from_secs(10);
/// Connections it serves at once.
const CONNECTIONS: usize = 64;

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
fn connections_beyond_the_limit_wait_for_a_free_one() {
    require_kernel!();
    let agent = start_agent(&["--interval", "1"]);
    // Every connection the server takes, each sending nothing.
    let idle: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| TcpStream::connect(&agent.addr).unwrap())
        .collect();
    let opened = Instant::now();
    // One more: it connects (the kernel's backlog) but is not served until the idle
    // ones are closed at the header timeout.
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    write!(s, "GET /readyz HTTP/1.0\r\n\r\n").unwrap();
    s.set_read_timeout(Some(HEADER_READ * 3)).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let waited = opened.elapsed();
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(
        waited >= HEADER_READ - Duration::from_secs(1),
        "served after {waited:?}, while {CONNECTIONS} connections were open"
    );
    drop(idle);
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
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            s.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    s
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
