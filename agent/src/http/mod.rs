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

use std::{future::Future, os::fd::AsRawFd as _, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    http::{HeaderName, HeaderValue},
};
use hyper_util::server::graceful::GracefulShutdown;
use log::{debug, info, warn};

use crate::webconfig::{self, ClientAuth};

mod auth;
mod connection;
mod routes;
mod table;
#[cfg(test)]
mod tests;

use auth::BasicAuth;
use connection::connection;
use table::{Entry, Table};

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

struct Shared {
    app: Router,
    server: Server,
}
