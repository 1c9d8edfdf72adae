//! One connection: its first byte, its TLS handshake and its HTTP/1.1 requests under the
//! limits.

use std::{
    convert::Infallible,
    net::SocketAddr,
    os::fd::{AsRawFd as _, RawFd},
    pin::Pin,
    sync::{Arc, Mutex, atomic::Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::Watcher,
};
use log::debug;

use super::{
    Shared,
    routes::respond,
    table::{BUSY, Entry, IDLE, STARTED, Slot},
};

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

pub(super) async fn connection(
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
/// [`Limits::tls_handshake`](super::Limits::tls_handshake) after `accepted`) and its
/// requests. True when it is to be reset (a handshake cut off).
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
