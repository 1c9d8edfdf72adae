//! The HTTP server of `copyscope run`: axum's router behind an accept loop of hyper
//! HTTP/1.1 connections with limits on everything a client controls, optional TLS (and
//! client certificates) and basic auth from the web configuration (`--web-config`).
//!
//! Limits ([`LIMITS`]):
//! - a request's header must arrive within 10 s of the connection waiting for it (hyper
//!   starts that timer when it waits for a request head, so it is also the idle limit of a
//!   kept-alive connection, and the limit of a TLS handshake);
//! - a whole request, from its head to the last byte of its response, gets 30 s;
//! - 64 connections at once; more wait in the kernel's backlog;
//! - 16 KiB of request head (431 or a closed connection beyond), 1 KiB of request body
//!   (413 beyond);
//! - GET and HEAD only: any other method is 405 with `Allow: GET, HEAD`, on every path.
//!
//! With basic auth, every path but /healthz and /readyz needs credentials: the kubelet's
//! probes have none, and those two tell nothing but whether the agent is up.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    body::{Body, HttpBody as _},
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use log::{debug, info, warn};
use tokio::sync::Semaphore;

use crate::webconfig::{self, ClientAuth};

/// What a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a request head (the idle limit of a kept-alive connection, and of a TLS
    /// handshake, too).
    pub header_read: Duration,
    /// From a request's head to the last byte of its response.
    pub request: Duration,
    /// Connections served at once.
    pub connections: usize,
    /// Request line and headers (hyper's read buffer).
    pub head_bytes: usize,
    /// Request body.
    pub body_bytes: usize,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_grace: Duration,
}

pub const LIMITS: Limits = Limits {
    header_read: Duration::from_secs(10),
    request: Duration::from_secs(30),
    connections: 64,
    head_bytes: 16 * 1024,
    body_bytes: 1024,
    shutdown_grace: Duration::from_secs(5),
};

// A connection idle after its response is closed by the header timer before the request
// timer could mistake it for a request in flight.
const _: () = assert!(LIMITS.header_read.as_secs() < LIMITS.request.as_secs());

/// Paths served without credentials: the kubelet's probes send none.
pub const UNAUTHENTICATED: [&str; 2] = ["/healthz", "/readyz"];

/// How long a verified user and password are taken without another bcrypt.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Verified credentials remembered at most (the oldest go first).
const AUTH_CACHE_ENTRIES: usize = 64;
/// bcrypt verifications at once: each costs tens of milliseconds of CPU.
const BCRYPT_AT_ONCE: usize = 2;

/// The server, configured: TLS, basic auth and extra headers from the web configuration.
pub struct Server {
    tls: Option<tokio_rustls::TlsAcceptor>,
    client_auth: ClientAuth,
    auth: Option<BasicAuth>,
    headers: Vec<(HeaderName, HeaderValue)>,
    limits: Limits,
}

impl Server {
    /// Plain HTTP without `web`; takes a moment with basic auth users (one bcrypt, for
    /// the answers to unknown users).
    pub fn new(web: Option<webconfig::Loaded>) -> Result<Server> {
        let Some(web) = web else {
            return Ok(Server {
                tls: None,
                client_auth: ClientAuth::NoClientCert,
                auth: None,
                headers: Vec::new(),
                limits: LIMITS,
            });
        };
        let auth =
            if web.basic_auth_users.is_empty() {
                None
            } else {
                Some(BasicAuth::new(web.basic_auth_users).with_context(|| {
                    format!("web config {}: basic_auth_users", web.path.display())
                })?)
            };
        Ok(Server {
            tls: web.tls.map(tokio_rustls::TlsAcceptor::from),
            client_auth: web.client_auth,
            auth,
            headers: web.headers,
            limits: LIMITS,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// What a client needs besides the address, for the start-up line: "" for nothing.
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        match self.client_auth {
            ClientAuth::NoClientCert => {}
            ClientAuth::VerifyClientCertIfGiven => {
                what.push("client certificates verified when given")
            }
            ClientAuth::RequireAndVerifyClientCert => what.push("client certificates required"),
        }
        if self.auth.is_some() {
            what.push("basic auth, not on /healthz and /readyz");
        }
        if what.is_empty() {
            String::new()
        } else {
            format!("; {}", what.join(", "))
        }
    }

    /// Accept and serve connections until `shutdown` completes, then let the requests in
    /// flight finish (for [`Limits::shutdown_grace`] at most).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let limits = self.limits;
        let server = Arc::new(Shared { app, server: self });
        let slots = Arc::new(Semaphore::new(limits.connections));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            // A free slot first: beyond the limit, connections wait in the backlog.
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before it was
                        // accepted: not the end of the server.
                        warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let (server, watcher) = (server.clone(), graceful.watcher());
            tokio::spawn(async move {
                connection(tcp, peer, server, watcher).await;
                drop(slot);
            });
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(limits.shutdown_grace) => {
                info!("shutting down with requests still in flight");
            }
        }
        Ok(())
    }
}

struct Shared {
    app: Router,
    server: Server,
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    let limits = shared.server.limits;
    match &shared.server.tls {
        None => serve_connection(TokioIo::new(tcp), peer, shared, watcher).await,
        Some(acceptor) => {
            let accepted = tokio::time::timeout(limits.header_read, acceptor.accept(tcp)).await;
            match accepted {
                Ok(Ok(tls)) => {
                    serve_connection(TokioIo::new(tls), peer, shared.clone(), watcher).await
                }
                Ok(Err(e)) => debug!("TLS handshake with {peer}: {e}"),
                Err(_) => debug!(
                    "TLS handshake with {peer}: not done within {:?}",
                    limits.header_read
                ),
            }
        }
    }
}

async fn serve_connection<I>(io: I, peer: SocketAddr, shared: Arc<Shared>, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = shared.server.limits;
    // When the latest request's head arrived.
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let service = {
        let started = started.clone();
        hyper::service::service_fn(move |req| {
            *started.lock().unwrap() = Some(Instant::now());
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(respond(req, &shared).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.head_bytes)
        .keep_alive(true)
        .serve_connection(io, service);
    let conn = watcher.watch(conn);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!("connection from {peer}: {e}");
                }
                return;
            }
            _ = tick.tick() => {
                // A request still in flight past its time (a slow body, or a client that
                // does not read the response): drop the connection. An idle connection
                // never gets here: the header timer closes it first.
                let since = *started.lock().unwrap();
                if since.is_some_and(|t| t.elapsed() > limits.request) {
                    debug!("connection from {peer}: a request took over {:?}", limits.request);
                    return;
                }
            }
        }
    }
}

async fn respond(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let server = &shared.server;
    let mut resp = check_and_route(req, shared).await;
    for (k, v) in &server.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn check_and_route(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let server = &shared.server;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "copyscope: only GET and HEAD",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (parts, body) = req.into_parts();
    let limit = server.limits.body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        let mut r = plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "copyscope: a request body is not expected",
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    if !body.is_end_stream() && axum::body::to_bytes(Body::new(body), limit).await.is_err() {
        return too_large();
    }
    let needs_auth = !UNAUTHENTICATED.contains(&parts.uri.path());
    let allowed = match &server.auth {
        Some(auth) if needs_auth => auth.allows(&parts.headers).await,
        _ => true,
    };
    if !allowed {
        let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"copyscope\", charset=\"UTF-8\""),
        );
        return r;
    }
    let req = Request::from_parts(parts, Body::empty());
    let mut app = shared.app.clone();
    match tower_service::Service::call(&mut app, req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// Basic auth against the bcrypt hashes of the web configuration, with a short cache of
/// verified credentials (keyed by an HMAC under a key made at start, so that neither the
/// passwords nor anything that tests them fast are kept).
struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Verified for unknown users too, so that they take as long as known ones.
    decoy: String,
    key: ring::hmac::Key,
    cache: Mutex<HashMap<Vec<u8>, Instant>>,
    bcrypt_slots: Semaphore,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let decoy = bcrypt::hash("copyscope decoy", cost).context("a bcrypt hash")?;
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no random numbers for the credentials cache's key"))?;
        Ok(BasicAuth {
            users,
            decoy,
            key,
            cache: Mutex::default(),
            bcrypt_slots: Semaphore::new(BCRYPT_AT_ONCE),
        })
    }

    async fn allows(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| basic_credentials(v.as_bytes()))
        else {
            return false;
        };
        // The user's length first: "ab"+"c" and "a"+"bc" differ.
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user.as_bytes());
        ctx.update(&password);
        let tag = ctx.sign().as_ref().to_vec();
        {
            let mut cache = self.cache.lock().unwrap();
            cache.retain(|_, at| at.elapsed() < AUTH_CACHE_TTL);
            if cache.contains_key(&tag) {
                return true;
            }
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let ok = verified && known;
        if ok {
            let mut cache = self.cache.lock().unwrap();
            if cache.len() >= AUTH_CACHE_ENTRIES {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    cache.remove(&k);
                }
            }
            cache.insert(tag, Instant::now());
        }
        ok
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn basic_credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Standard base64 with padding (RFC 4648 section 4), as basic auth sends it.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_basic_credentials() {
        // "prometheus:s3cr:et" (the password may hold colons).
        assert_eq!(
            basic_credentials(b"Basic cHJvbWV0aGV1czpzM2NyOmV0"),
            Some(("prometheus".into(), b"s3cr:et".to_vec()))
        );
        assert_eq!(
            basic_credentials(b"basic YTpi"),
            Some(("a".into(), b"b".to_vec()))
        );
        assert_eq!(
            basic_credentials(b"Basic YTo="),
            Some(("a".into(), b"".to_vec()))
        );
        for bad in [
            &b"Bearer YTpi"[..],
            b"Basic",
            b"Basic YWI=",
            b"Basic YTpi=",
            b"Basic Y=pi",
            b"Basic \xff\xfe",
        ] {
            assert_eq!(basic_credentials(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_round_trips_every_length() {
        let enc = |d: &[u8]| -> String {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for c in d.chunks(3) {
                let n = (c[0] as u32) << 16
                    | (*c.get(1).unwrap_or(&0) as u32) << 8
                    | *c.get(2).unwrap_or(&0) as u32;
                for i in 0..4 {
                    if i <= c.len() {
                        s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                    } else {
                        s.push('=');
                    }
                }
            }
            s
        };
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..20 {
            assert_eq!(base64_decode(&enc(&data[..n])).unwrap(), &data[..n]);
        }
    }

    #[tokio::test]
    async fn basic_auth_verifies_once_then_remembers() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = BasicAuth::new([("alice".to_string(), hash)].into()).unwrap();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        // alice:right, alice:wrong, bob:right
        assert!(!auth.allows(&HeaderMap::new()).await);
        assert!(!auth.allows(&with("Basic YWxpY2U6d3Jvbmc=")).await);
        assert!(!auth.allows(&with("Basic Ym9iOnJpZ2h0")).await);
        assert!(auth.cache.lock().unwrap().is_empty());
        assert!(auth.allows(&with("Basic YWxpY2U6cmlnaHQ=")).await);
        assert_eq!(auth.cache.lock().unwrap().len(), 1);
        assert!(auth.allows(&with("Basic YWxpY2U6cmlnaHQ=")).await);
        assert!(!auth.allows(&with("Basic YWxpY2U6d3Jvbmc=")).await);
    }
}
