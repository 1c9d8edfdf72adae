//! The HTTP server of `copyscope run`: axum's router behind an accept loop of hyper
//! HTTP/1.1 connections with limits on everything a client controls, optional TLS (and
//! client certificates) and basic auth from the web configuration (`--web-config`).
//!
//! Every connection is accepted at once, whatever the others do: a connection that has
//! sent nothing costs a small task and its socket, and a scrape never waits in the
//! kernel's backlog behind idle ones. What bounds them is a table of the open
//! connections by source address, which sheds the least useful ones when full.
//!
//! Limits ([`LIMITS`]):
//! - the first byte must arrive within 2 s of the connection (a TLS ClientHello or a
//!   request head), else the connection is reset;
//! - a TLS handshake must be done within 4 s of the connection;
//! - a request's head must arrive within 10 s of its first byte (hyper's header timer,
//!   also the idle limit of a kept-alive connection);
//! - a whole request, from its head to the last byte of its response, gets 30 s;
//! - 1024 connections open from one source address: a new one sheds the oldest of that
//!   address's connections that has sent nothing yet (bytes waiting unread count as
//!   sent), else the oldest still sending its TLS handshake or request head, else the
//!   oldest kept-alive one waiting for its next request; a connection with a request in
//!   flight is never shed (when all 1024 have one, the new connection is closed);
//! - 4096 connections open in all (fewer when the open-files limit is lower; its soft
//!   limit is raised to the hard one at start): a new one sheds, by the same order, one
//!   of the source address with the most;
//! - out of file descriptors anyway: shed one the same way and accept again;
//! - a listen backlog of 4096 (the kernel caps it at net.core.somaxconn);
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
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd as _, RawFd},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    body::{Body, Bytes, HttpBody},
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header},
};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use log::{debug, info, warn};
use tokio::sync::{Notify, Semaphore};

use crate::webconfig::{self, ClientAuth};

/// What a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the connection to its first byte (a ClientHello, or a request head).
    pub first_byte: Duration,
    /// From the connection to the end of its TLS handshake.
    pub tls_handshake: Duration,
    /// To send a request head, from its first byte (and the idle limit of a kept-alive
    /// connection).
    pub header_read: Duration,
    /// From a request's head to the last byte of its response.
    pub request: Duration,
    /// Connections open at once, from all sources (lowered to what the open-files limit
    /// allows).
    pub connections: usize,
    /// Connections open at once from one source address.
    pub per_source: usize,
    /// The listen backlog asked of the kernel.
    pub backlog: u32,
    /// Request line and headers (hyper's read buffer).
    pub head_bytes: usize,
    /// Request body.
    pub body_bytes: usize,
    /// How long a shutdown waits for the requests in flight.
    pub shutdown_grace: Duration,
}

pub const LIMITS: Limits = Limits {
    first_byte: Duration::from_secs(2),
    tls_handshake: Duration::from_secs(4),
    header_read: Duration::from_secs(10),
    request: Duration::from_secs(30),
    connections: 4096,
    per_source: 1024,
    backlog: 4096,
    head_bytes: 16 * 1024,
    body_bytes: 1024,
    shutdown_grace: Duration::from_secs(5),
};

// A connection idle after its response is closed by the header timer before the request
// timer could mistake it for a request in flight.
const _: () = assert!(LIMITS.header_read.as_secs() < LIMITS.request.as_secs());
const _: () = assert!(LIMITS.first_byte.as_secs() < LIMITS.tls_handshake.as_secs());
const _: () = assert!(LIMITS.tls_handshake.as_secs() < LIMITS.header_read.as_secs());

/// File descriptors kept for everything but connections (the eBPF objects are open
/// already when the server starts; /proc reads and the like come on top).
const FD_SPARE: usize = 64;

/// Paths served without credentials: the kubelet's probes send none.
pub const UNAUTHENTICATED: [&str; 2] = ["/healthz", "/readyz"];

/// How long a verified user and password are taken without another bcrypt.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Verified credentials remembered at most (the oldest go first).
const AUTH_CACHE_ENTRIES: usize = 64;
/// bcrypt verifications at once: each costs tens of milliseconds of CPU.
const BCRYPT_AT_ONCE: usize = 2;
/// Shed connections are logged at most this often.
const SHED_LOG_EVERY: Duration = Duration::from_secs(60);

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

    /// The same server with other limits than [`LIMITS`].
    pub fn with_limits(self, limits: Limits) -> Server {
        Server { limits, ..self }
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
        set_backlog(&listener, limits.backlog);
        let open_files = raise_open_files_limit();
        let cap = connection_cap(limits.connections, open_files, open_now());
        if cap < limits.connections {
            warn!(
                "serving at most {cap} connections at once: the open-files limit is \
{open_files} (raise it, e.g. LimitNOFILE= or ulimit -n, for up to {})",
                limits.connections
            );
        }
        let table = Arc::new(Table::new(cap, limits.per_source));
        let shared = Arc::new(Shared { app, server: self });
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        accept_failed(&e, &table).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let source = peer.ip().to_canonical();
            let Some((id, slot)) = table.admit(source, tcp.as_raw_fd()) else {
                // Every connection of this source, or of every source, has a request in
                // flight: this one goes.
                let _ = tcp.set_zero_linger();
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let entry = Entry {
                table: table.clone(),
                source,
                id,
                slot,
            };
            tokio::spawn(connection(
                tcp,
                peer,
                entry,
                shared.clone(),
                graceful.watcher(),
            ));
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

/// Ask the kernel for a longer accept queue than the standard library's 128: calling
/// listen(2) again on a listening socket only changes its backlog.
fn set_backlog(listener: &tokio::net::TcpListener, backlog: u32) {
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: listen(2) on a socket this listener owns.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        warn!(
            "a listen backlog of {backlog}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Raise the soft limit of open files to the hard limit: each connection holds one.
/// Returns the soft limit in force.
fn raise_open_files_limit() -> usize {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return usize::MAX;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            } else {
                debug!(
                    "raising the open-files limit to {}: {}",
                    l.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    usize::try_from(l.rlim_cur).unwrap_or(usize::MAX)
}

/// File descriptors open now (0 when /proc does not say).
fn open_now() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Connections at once: `wanted`, or what the open-files limit leaves (at least 16).
fn connection_cap(wanted: usize, open_files: usize, open_now: usize) -> usize {
    wanted.min(
        open_files
            .saturating_sub(open_now)
            .saturating_sub(FD_SPARE)
            .max(16),
    )
}

/// accept(2) failed: out of descriptors (shed a connection, then accept again), or a
/// connection reset before it was accepted (nothing to do). Never the end of the server.
async fn accept_failed(e: &std::io::Error, table: &Table) {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            if table.shed_one() {
                table.note_shed(None);
                // Let the shed connection's task close its socket.
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                warn!("accepting a connection: {e}; none can be shed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR) => {
            debug!("accepting a connection: {e}")
        }
        _ => {
            warn!("accepting a connection: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Where a connection is, and so how readily it is shed (in this order).
const FRESH: u8 = 0;
/// Bytes came: a TLS handshake or a request head is under way.
const STARTED: u8 = 1;
/// Kept alive after a response, waiting for the next request.
const IDLE: u8 = 2;
/// A request in flight: never shed.
const BUSY: u8 = 3;

/// One open connection in the [`Table`].
struct Slot {
    state: AtomicU8,
    /// The socket while the connection is [`FRESH`] (-1 after): its first bytes may have
    /// come before its task saw them.
    fd: AtomicI32,
    /// Told when the connection is shed.
    shed: Notify,
}

impl Slot {
    /// Whether a connection still taken for [`FRESH`] has bytes waiting: then it is
    /// [`STARTED`]. (A peek from the accept loop, which alone accepts sockets, so the
    /// descriptor is the connection's or, in a race with its end, one that is no
    /// socket of a connection.)
    fn started_unseen(&self) -> bool {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            return false;
        }
        let mut byte = 0u8;
        // SAFETY: recv of one byte into a valid buffer; MSG_PEEK leaves it for the reader.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
            && self
                .state
                .compare_exchange(FRESH, STARTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// The open connections by source address (oldest first).
struct Table {
    cap: usize,
    per_source: usize,
    open: Mutex<Open>,
    /// Shed since the last log line, and when that was.
    shed: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Open {
    next: u64,
    count: usize,
    by_source: HashMap<IpAddr, BTreeMap<u64, Arc<Slot>>>,
}

impl Open {
    /// The connection of `source` to shed first: the oldest in the lowest state.
    fn victim(&self, source: &IpAddr) -> Option<u64> {
        let conns = self.by_source.get(source)?;
        let mut best: Option<(u8, u64)> = None;
        for (&id, slot) in conns {
            let mut state = slot.state.load(Ordering::Acquire);
            if state == FRESH {
                if !slot.started_unseen() {
                    return Some(id);
                }
                state = STARTED;
            }
            if state != BUSY && best.is_none_or(|(s, _)| state < s) {
                best = Some((state, id));
            }
        }
        best.map(|(_, id)| id)
    }

    fn take(&mut self, source: &IpAddr, id: u64) -> Option<Arc<Slot>> {
        let conns = self.by_source.get_mut(source)?;
        let slot = conns.remove(&id)?;
        if conns.is_empty() {
            self.by_source.remove(source);
        }
        self.count -= 1;
        Some(slot)
    }

    /// Shed one connection of the source with the most that has one to shed.
    fn shed_from_largest(&mut self) -> Option<Arc<Slot>> {
        let mut sources: Vec<(usize, IpAddr)> = self
            .by_source
            .iter()
            .map(|(ip, c)| (c.len(), *ip))
            .collect();
        sources.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        sources.into_iter().find_map(|(_, ip)| {
            let id = self.victim(&ip)?;
            self.take(&ip, id)
        })
    }
}

impl Table {
    fn new(cap: usize, per_source: usize) -> Table {
        Table {
            cap: cap.max(1),
            per_source: per_source.max(1),
            open: Mutex::default(),
            shed: AtomicU64::new(0),
            logged: Mutex::new(None),
        }
    }

    /// A place for a new connection from `source`, shedding others to make room; None
    /// when every connection that would have to go has a request in flight.
    fn admit(&self, source: IpAddr, fd: RawFd) -> Option<(u64, Arc<Slot>)> {
        let mut shed = Vec::new();
        let slot = {
            let mut open = self.open.lock().unwrap();
            if open.by_source.get(&source).map_or(0, BTreeMap::len) >= self.per_source {
                let id = open.victim(&source)?;
                shed.extend(open.take(&source, id));
            }
            if open.count >= self.cap {
                shed.push(open.shed_from_largest()?);
            }
            let slot = Arc::new(Slot {
                state: AtomicU8::new(FRESH),
                fd: AtomicI32::new(fd),
                shed: Notify::new(),
            });
            let id = open.next;
            open.next += 1;
            open.by_source
                .entry(source)
                .or_default()
                .insert(id, slot.clone());
            open.count += 1;
            (id, slot)
        };
        for s in &shed {
            s.shed.notify_one();
            self.note_shed(Some(source));
        }
        Some(slot)
    }

    /// Shed one connection, of the source with the most: false if none can go.
    fn shed_one(&self) -> bool {
        let shed = self.open.lock().unwrap().shed_from_largest();
        shed.inspect(|s| s.shed.notify_one()).is_some()
    }

    fn remove(&self, source: &IpAddr, id: u64) {
        self.open.lock().unwrap().take(source, id);
    }

    fn note_shed(&self, source: Option<IpAddr>) {
        let n = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.logged.lock().unwrap();
        if logged.is_some_and(|t| t.elapsed() < SHED_LOG_EVERY) {
            return;
        }
        *logged = Some(Instant::now());
        self.shed.store(0, Ordering::Relaxed);
        let why = match source {
            Some(ip) => format!(
                "more connections than {} from one address or {} in all (the latest from {ip})",
                self.per_source, self.cap
            ),
            None => "out of file descriptors".to_string(),
        };
        warn!("shed {n} connections since the last report: {why}");
    }
}

/// A connection's place in the [`Table`], given up when the connection ends.
struct Entry {
    table: Arc<Table>,
    source: IpAddr,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.remove(&self.source, self.id);
    }
}

struct Shared {
    app: Router,
    server: Server,
}

/// Reset a connection when it is closed (no FIN, no TIME_WAIT): for the ones that sent
/// nothing, or never finished what they started, when they are cut off.
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket still open (its owner is alive), with a value of
    // the stated size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    entry: Entry,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    let limits = shared.server.limits;
    let accepted = Instant::now();
    let slot = entry.slot.clone();
    // Until the first byte, the connection is this small task and its socket. (A peek:
    // readable() may answer at once for a new socket.)
    let mut byte = [0u8; 1];
    let came = tokio::select! {
        r = tokio::time::timeout(limits.first_byte, tcp.peek(&mut byte)) => {
            matches!(r, Ok(Ok(n)) if n > 0)
        }
        () = slot.shed.notified() => false,
    };
    slot.fd.store(-1, Ordering::Release);
    if !came {
        debug!(
            "connection from {peer}: shed, closed, or nothing sent within {:?}",
            limits.first_byte
        );
        let _ = tcp.set_zero_linger();
        return;
    }
    slot.state.store(STARTED, Ordering::Release);
    let fd = tcp.as_raw_fd();
    let mut serve = Box::pin(serve_started(
        tcp,
        peer,
        accepted,
        shared,
        slot.clone(),
        watcher,
    ));
    tokio::select! {
        reset = &mut serve => if reset {
            reset_on_close(fd);
        },
        () = slot.shed.notified() => {
            debug!("connection from {peer}: shed");
            // Kept alive between requests: a plain close, which clients retry on.
            if slot.state.load(Ordering::Acquire) == STARTED {
                reset_on_close(fd);
            }
        }
    }
    // The socket closes here, then the place in the table goes.
    drop(serve);
    drop(entry);
}

/// Serve a connection that has sent its first byte: its TLS handshake (by
/// [`Limits::tls_handshake`] after `accepted`) and its requests. True when it is to be
/// reset (a handshake cut off).
async fn serve_started(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    watcher: Watcher,
) -> bool {
    let limits = shared.server.limits;
    let Some(acceptor) = &shared.server.tls else {
        serve_connection(TokioIo::new(tcp), peer, shared.clone(), slot, watcher).await;
        return false;
    };
    let deadline = tokio::time::Instant::from_std(accepted + limits.tls_handshake);
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            serve_connection(TokioIo::new(tls), peer, shared.clone(), slot, watcher).await;
            false
        }
        Ok(Err(e)) => {
            debug!("TLS handshake with {peer}: {e}");
            false
        }
        Err(_) => {
            debug!(
                "TLS handshake with {peer}: not done within {:?}",
                limits.tls_handshake
            );
            true
        }
    }
}

/// A response's body that marks its connection idle (kept alive, sheddable) once it is
/// sent or dropped.
struct Tracked {
    body: Body,
    _done: Done,
}

struct Done(Arc<Slot>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.state.store(IDLE, Ordering::Release);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    watcher: Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = shared.server.limits;
    // When the latest request's head arrived.
    let started: Arc<Mutex<Option<Instant>>> = Arc::default();
    let service = {
        let started = started.clone();
        hyper::service::service_fn(move |req| {
            *started.lock().unwrap() = Some(Instant::now());
            slot.state.store(BUSY, Ordering::Release);
            let done = Done(slot.clone());
            let shared = shared.clone();
            async move {
                let resp = respond(req, &shared).await;
                Ok::<_, Infallible>(resp.map(|body| Tracked { body, _done: done }))
            }
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
    /// What making the decoy took (the highest cost of any user): every failed check
    /// takes at least this long, so that neither an unknown user nor a user whose hash
    /// is cheaper can be told apart by the time a wrong password takes.
    failure_floor: Duration,
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
        let t = Instant::now();
        let decoy = bcrypt::hash("copyscope decoy", cost).context("a bcrypt hash")?;
        let failure_floor = t.elapsed();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no random numbers for the credentials cache's key"))?;
        Ok(BasicAuth {
            users,
            decoy,
            failure_floor,
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
        let Ok(slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let started = Instant::now();
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        drop(slot);
        let ok = verified && known;
        if !ok {
            // A wrong user or password answers no sooner than the dearest hash would:
            // the time says nothing about which users exist or how their hashes were made.
            // A sleep, not CPU: the slot is free for other checks meanwhile.
            tokio::time::sleep(self.failure_floor.saturating_sub(started.elapsed())).await;
        }
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

/// Standard base64 with padding (RFC 4648 section 4), as basic auth sends it; bits past
/// the last byte are ignored.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::{
        Engine as _,
        alphabet::STANDARD,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    const BASIC: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    BASIC.decode(s).ok()
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
        use base64::Engine as _;
        let enc = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..20 {
            assert_eq!(base64_decode(&enc(&data[..n])).unwrap(), &data[..n]);
        }
    }

    /// The ids open from `source`, oldest first.
    fn ids(t: &Table, source: &str) -> Vec<u64> {
        let open = t.open.lock().unwrap();
        open.by_source
            .get(&source.parse::<IpAddr>().unwrap())
            .map_or(Vec::new(), |c| c.keys().copied().collect())
    }

    #[test]
    fn the_table_sheds_the_silent_then_the_unfinished_then_the_idle_never_the_busy() {
        let t = Table::new(100, 4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let admit = |state| {
            let (id, slot) = t.admit(a, -1).unwrap();
            slot.state.store(state, Ordering::Release);
            id
        };
        // Oldest first within a state: two silent ones, the older goes.
        let (busy, idle, silent, started) =
            (admit(BUSY), admit(IDLE), admit(FRESH), admit(STARTED));
        assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, silent, started]);
        let newer_silent = admit(FRESH);
        assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, started, newer_silent]);
        let b1 = admit(BUSY);
        assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, started, b1]);
        let b2 = admit(BUSY);
        assert_eq!(ids(&t, "10.0.0.1"), [busy, idle, b1, b2]);
        let b3 = admit(BUSY);
        assert_eq!(ids(&t, "10.0.0.1"), [busy, b1, b2, b3]);
        // All busy: the next one is refused, and other addresses are not affected.
        assert!(t.admit(a, -1).is_none());
        assert!(t.admit("10.0.0.2".parse().unwrap(), -1).is_some());
        // A connection that ends makes room.
        t.remove(&a, b2);
        assert!(t.admit(a, -1).is_some());
        assert_eq!(t.open.lock().unwrap().count, 5);
    }

    #[test]
    fn a_connection_whose_bytes_wait_unread_is_not_taken_for_silent() {
        use std::{io::Write as _, os::fd::AsRawFd as _};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        client.write_all(b"GET").unwrap();
        // Wait (blocking) until the bytes are there, without taking them.
        accepted.peek(&mut [0u8; 1]).unwrap();
        let t = Table::new(100, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (spoke, slot) = t.admit(a, accepted.as_raw_fd()).unwrap();
        let (silent, _) = t.admit(a, -1).unwrap();
        let (newest, _) = t.admit(a, -1).unwrap();
        assert_eq!(ids(&t, "10.0.0.1"), [spoke, newest]);
        assert_eq!(slot.state.load(Ordering::Acquire), STARTED);
        assert!(silent < newest);
    }

    #[test]
    fn a_full_table_sheds_from_the_address_with_the_most() {
        let t = Table::new(4, 100);
        let (many, few): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first_many = t.admit(many, -1).unwrap().0;
        t.admit(few, -1).unwrap();
        t.admit(many, -1).unwrap();
        t.admit(many, -1).unwrap();
        t.admit(few, -1).unwrap();
        assert_eq!(ids(&t, "10.0.0.2").len(), 2);
        assert_eq!(ids(&t, "10.0.0.1").len(), 2);
        assert!(!ids(&t, "10.0.0.1").contains(&first_many));
        // Out of file descriptors: the same choice.
        assert!(t.shed_one());
        assert_eq!(t.open.lock().unwrap().count, 3);
    }

    #[test]
    fn the_connection_cap_leaves_room_for_everything_else() {
        assert_eq!(connection_cap(4096, 1_048_576, 100), 4096);
        assert_eq!(connection_cap(4096, 1024, 100), 1024 - 100 - FD_SPARE);
        assert_eq!(connection_cap(4096, 100, 100), 16);
    }

    /// A wrong password for a user with a cheap hash takes as long as one for an unknown
    /// user, whose check runs the decoy made at the dearest cost.
    #[tokio::test]
    async fn a_wrong_password_takes_as_long_whatever_the_users_cost() {
        let cheap = bcrypt::hash("right", 4).unwrap();
        let dear = bcrypt::hash("right", 10).unwrap();
        let auth =
            BasicAuth::new([("cheap".to_string(), cheap), ("dear".to_string(), dear)].into())
                .unwrap();
        let floor = auth.failure_floor;
        // A cost-10 hash takes tens of times what a cost-4 one does.
        let t = Instant::now();
        bcrypt::verify("wrong", &bcrypt::hash("right", 4).unwrap()).unwrap();
        let cost4 = t.elapsed();
        assert!(
            floor > cost4 * 4,
            "floor {floor:?}, one cost-4 check {cost4:?}"
        );
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        // cheap:wrong, nobody:wrong, dear:wrong
        for creds in ["Y2hlYXA6d3Jvbmc=", "bm9ib2R5Ondyb25n", "ZGVhcjp3cm9uZw=="] {
            let t = Instant::now();
            assert!(!auth.allows(&with(&format!("Basic {creds}"))).await);
            assert!(
                t.elapsed() >= floor,
                "{creds}: {:?} < {floor:?}",
                t.elapsed()
            );
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
