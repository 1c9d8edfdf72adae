//! Workloads on pipes and sockets: TCP, UDP batches, MSG_ZEROCOPY, io_uring, sendfile and
//! splice.

use super::*;

/// A connected loopback pair: (sender, receiver thread that recv()s to EOF and returns the byte count).
pub(super) fn tcp_pair() -> (TcpStream, thread::JoinHandle<u64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("bind: {e}")));
    let addr = l.local_addr().unwrap();
    let rx = thread::spawn(move || {
        let (s, _) = l.accept().unwrap_or_else(|e| die(&format!("accept: {e}")));
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            // SAFETY: recv into our buffer.
            let n = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if check(n, "recv") == 0 {
                return total;
            }
            total += n as u64;
        }
    });
    let tx = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("connect: {e}")));
    (tx, rx)
}

/// `pipe COUNT SIZE`: COUNT write(SIZE) into a pipe, a thread reads.
pub(super) fn pipe(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (count, size) = (num(a(1), "COUNT"), num(a(2), "SIZE") as usize);
    let mut fds = [0; 2];
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
        "pipe2",
    );
    let rfd = fds[0];
    let reader = thread::spawn(move || {
        let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(rfd) };
        let mut sink = Vec::new();
        f.read_to_end(&mut sink)
            .unwrap_or_else(|e| die(&format!("pipe read: {e}")));
        sink.len() as u64
    });
    let buf = vec![7u8; size];
    for _ in 0..count {
        let n = check(
            unsafe { libc::write(fds[1], buf.as_ptr().cast(), size) },
            "write",
        );
        if n != size {
            die("short pipe write");
        }
    }
    unsafe { libc::close(fds[1]) };
    let read = reader.join().unwrap();
    format!(
        r#"{{"calls":{count},"bytes":{},"read_bytes":{read}}}"#,
        count * size as u64
    )
}

/// `tcp COUNT SIZE`: COUNT send(SIZE) over loopback TCP, a thread recv()s.
pub(super) fn tcp(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (count, size) = (num(a(1), "COUNT"), num(a(2), "SIZE") as usize);
    let (tx, rx) = tcp_pair();
    let buf = vec![1u8; size];
    for _ in 0..count {
        // SAFETY: send from our buffer. A blocking send sends it all or fails.
        let n = check(
            unsafe { libc::send(tx.as_raw_fd(), buf.as_ptr().cast(), size, 0) },
            "send",
        );
        if n != size {
            die("short send");
        }
    }
    drop(tx);
    let got = rx.join().unwrap();
    format!(
        r#"{{"calls":{count},"bytes":{},"received":{got}}}"#,
        count * size as u64
    )
}

/// `mmsg COUNT N SIZE`: COUNT sendmmsg of N messages of SIZE over loopback UDP, each
/// followed by one recvmmsg of the N. The bytes are the messages' msg_len, as the calls
/// report them.
pub(super) fn mmsg(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (count, n, size) = (
        num(a(1), "COUNT"),
        num(a(2), "N") as usize,
        num(a(3), "SIZE") as usize,
    );
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("{e}")));
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("{e}")));
    tx.connect(rx.local_addr().unwrap())
        .unwrap_or_else(|e| die(&format!("{e}")));
    let mut bufs = vec![vec![3u8; size]; n];
    let mut rbufs = vec![vec![0u8; size]; n];
    let iovecs = |bufs: &mut [Vec<u8>]| -> Vec<libc::iovec> {
        bufs.iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect()
    };
    let mut iov = iovecs(&mut bufs);
    let mut riov = iovecs(&mut rbufs);
    let headers = |iov: &mut [libc::iovec]| -> Vec<libc::mmsghdr> {
        iov.iter_mut()
            .map(|v| {
                // SAFETY: a plain C struct, all zeroes is valid.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect()
    };
    let mut msgs = headers(&mut iov);
    let mut rmsgs = headers(&mut riov);
    let (mut sent, mut received) = (0u64, 0u64);
    for _ in 0..count {
        // The system calls themselves: musl's sendmmsg() on 64-bit is a loop of sendmsg.
        // SAFETY: n headers, each pointing at one live buffer.
        let k = check(
            unsafe {
                libc::syscall(
                    libc::SYS_sendmmsg,
                    tx.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    0,
                )
            } as isize,
            "sendmmsg",
        );
        if k != n {
            die("sendmmsg sent fewer messages");
        }
        sent += msgs.iter().map(|m| u64::from(m.msg_len)).sum::<u64>();
        // SAFETY: as above; the N datagrams are queued already, so this does not wait.
        let k = check(
            unsafe {
                libc::syscall(
                    libc::SYS_recvmmsg,
                    rx.as_raw_fd(),
                    rmsgs.as_mut_ptr(),
                    n as libc::c_uint,
                    0,
                    std::ptr::null_mut::<libc::timespec>(),
                )
            } as isize,
            "recvmmsg",
        );
        if k != n {
            die("recvmmsg received fewer messages");
        }
        received += rmsgs.iter().map(|m| u64::from(m.msg_len)).sum::<u64>();
    }
    format!(
        r#"{{"calls":{count},"messages":{},"sent":{sent},"received":{received}}}"#,
        count * n as u64
    )
}

/// MSG_ZEROCOPY completions read from a socket's error queue so far.
#[derive(Default)]
pub(super) struct Completions {
    notifications: u64,
    /// Sends reported complete (each notification covers a range of them).
    completed: u64,
    /// Of those, the ones the kernel copied after all (SO_EE_CODE_ZEROCOPY_COPIED).
    copied: u64,
}

impl Completions {
    /// Read the error queue of `fd` while it holds anything, waiting up to `wait_ms` for
    /// the first entry. Poll first, so that no read finds it empty.
    fn drain(&mut self, fd: RawFd, wait_ms: i32) {
        const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
        const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;
        let mut wait = wait_ms;
        loop {
            let mut p = libc::pollfd {
                fd,
                events: 0,
                revents: 0,
            };
            // SAFETY: one pollfd. An error-queue entry shows as POLLERR.
            if check(unsafe { libc::poll(&mut p, 1, wait) } as isize, "poll") == 0
                || p.revents & libc::POLLERR == 0
            {
                return;
            }
            wait = 0;
            let mut control = [0u64; 16];
            // SAFETY: a plain C struct, all zeroes is valid.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: msg points at our control buffer.
            let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE) };
            if check(n, "recvmsg(MSG_ERRQUEUE)") != 0 {
                die("an error-queue message with data");
            }
            // SAFETY: the kernel filled msg's control messages.
            let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
            if c.is_null() {
                die("an error-queue message without a control message");
            }
            // SAFETY: an IP_RECVERR control message holds a sock_extended_err.
            let e = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::sock_extended_err>())
            };
            if e.ee_origin != SO_EE_ORIGIN_ZEROCOPY {
                die(&format!("an error-queue message of origin {}", e.ee_origin));
            }
            let sends = u64::from(e.ee_data.wrapping_sub(e.ee_info)) + 1;
            self.notifications += 1;
            self.completed += sends;
            if e.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                self.copied += sends;
            }
        }
    }
}

/// `zerocopy COUNT SIZE`: COUNT send(SIZE) (the sendto system call), COUNT sendmsg(SIZE)
/// and COUNT sendmmsg of two messages of SIZE, all with MSG_ZEROCOPY, over a loopback TCP
/// connection with SO_ZEROCOPY set; the error queue is read after each call and at the end
/// until every send (each message of a sendmmsg is one) is reported complete.
pub(super) fn zerocopy(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (count, size) = (num(a(1), "COUNT"), num(a(2), "SIZE") as usize);
    let (tx, rx) = tcp_pair();
    let fd = tx.as_raw_fd();
    let one: libc::c_int = 1;
    // SAFETY: an int option.
    check(
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ZEROCOPY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of_val(&one) as libc::socklen_t,
            )
        } as isize,
        "setsockopt(SO_ZEROCOPY)",
    );
    let mut buf = vec![5u8; size];
    let mut done = Completions::default();
    // Sends: one per send and sendmsg, two per sendmmsg.
    let sends = 4 * count;
    for i in 0..3 * count {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: size,
        };
        let n = match i % 3 {
            // SAFETY: send from our buffer, which stays alive (and unchanged) until the
            // end. A blocking send sends it all or fails.
            0 => unsafe { libc::send(fd, buf.as_ptr().cast(), size, libc::MSG_ZEROCOPY) },
            1 => {
                // SAFETY: a plain C struct, all zeroes is valid.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                // SAFETY: msg points at one live buffer.
                unsafe { libc::sendmsg(fd, &msg, libc::MSG_ZEROCOPY) }
            }
            _ => {
                // SAFETY: a plain C struct, all zeroes is valid.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = &mut iov;
                h.msg_hdr.msg_iovlen = 1;
                let mut msgs = [h, h];
                // The system call itself: musl's sendmmsg() on 64-bit is a loop of sendmsg.
                // SAFETY: two headers, each pointing at the one live buffer.
                let k = check(
                    unsafe {
                        libc::syscall(
                            libc::SYS_sendmmsg,
                            fd,
                            msgs.as_mut_ptr(),
                            2 as libc::c_uint,
                            libc::MSG_ZEROCOPY,
                        )
                    } as isize,
                    "sendmmsg(MSG_ZEROCOPY)",
                );
                if k != 2 {
                    die("sendmmsg sent fewer messages");
                }
                msgs.iter().map(|m| m.msg_len as isize).sum::<isize>() / 2
            }
        };
        if check(n, "send(MSG_ZEROCOPY)") != size {
            die("short send");
        }
        done.drain(fd, 0);
    }
    while done.completed < sends {
        let before = done.completed;
        done.drain(fd, 5000);
        if done.completed == before {
            die("no MSG_ZEROCOPY completion within 5 s");
        }
    }
    drop(tx);
    let got = rx.join().unwrap();
    format!(
        r#"{{"pid":{},"calls":{},"bytes":{},"received":{got},"notifications":{},"completed":{},"copied":{}}}"#,
        std::process::id(),
        3 * count,
        sends * size as u64,
        done.notifications,
        done.completed,
        done.copied
    )
}

/// `uring-socket COUNT SIZE [sqpoll]`: over a loopback TCP connection, COUNT rounds of an
/// io_uring SEND of SIZE bytes (sent again from where it stopped when the kernel sends
/// fewer), then an io_uring RECV with MSG_WAITALL of what was sent, each waited for with
/// its own submit. Prints the operations and bytes as the completions give them, and the
/// submits made (`io_uring_enter` calls, when the ring has no SQPOLL thread).
pub(super) fn uring_socket(args: &[String]) -> String {
    use io_uring::{IoUring, opcode, types};
    let a = |i: usize| args.get(i);
    let (count, size) = (num(a(1), "COUNT"), num(a(2), "SIZE") as usize);
    let sqpoll = match a(3).map(String::as_str) {
        None => false,
        Some("sqpoll") => true,
        Some(o) => die(&format!("uring-socket COUNT SIZE [sqpoll], not {o:?}")),
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| die(&format!("bind: {e}")));
    let tx = TcpStream::connect(l.local_addr().unwrap())
        .unwrap_or_else(|e| die(&format!("connect: {e}")));
    let (rx, _) = l.accept().unwrap_or_else(|e| die(&format!("accept: {e}")));
    let mut builder = IoUring::builder();
    if sqpoll {
        builder.setup_sqpoll(2000);
    }
    let mut ring = builder
        .build(8)
        .unwrap_or_else(|e| die(&format!("io_uring_setup: {e}")));
    let buf = vec![7u8; size];
    let mut rbuf = vec![0u8; size];
    let (mut sends, mut sent, mut recvs, mut received, mut enters) = (0u64, 0u64, 0u64, 0u64, 0u64);
    // One operation, submitted and waited for: its result.
    let mut run = |ring: &mut IoUring, e: io_uring::squeue::Entry| -> usize {
        // SAFETY: the buffers the entry points at live until its completion, read below.
        unsafe { ring.submission().push(&e) }.unwrap_or_else(|_| die("io_uring queue full"));
        ring.submit_and_wait(1)
            .unwrap_or_else(|e| die(&format!("io_uring_enter: {e}")));
        enters += 1;
        let c = ring
            .completion()
            .next()
            .unwrap_or_else(|| die("io_uring_enter returned without a completion"));
        if c.result() < 0 {
            die(&format!(
                "an io_uring operation failed: {}",
                std::io::Error::from_raw_os_error(-c.result())
            ));
        }
        c.result() as usize
    };
    for _ in 0..count {
        let mut off = 0;
        while off < size {
            let e = opcode::Send::new(
                types::Fd(tx.as_raw_fd()),
                buf[off..].as_ptr(),
                (size - off) as u32,
            )
            .build();
            let n = run(&mut ring, e);
            if n == 0 {
                die("an io_uring SEND sent nothing");
            }
            sends += 1;
            sent += n as u64;
            off += n;
        }
        let e = opcode::Recv::new(types::Fd(rx.as_raw_fd()), rbuf.as_mut_ptr(), size as u32)
            .flags(libc::MSG_WAITALL)
            .build();
        let n = run(&mut ring, e);
        if n != size {
            die(&format!(
                "an io_uring RECV with MSG_WAITALL got {n} of {size} bytes"
            ));
        }
        recvs += 1;
        received += n as u64;
    }
    format!(
        r#"{{"pid":{},"sends":{sends},"sent":{sent},"recvs":{recvs},"received":{received},"submits":{enters}}}"#,
        std::process::id()
    )
}

/// `serve FILE ADDR SECONDS`: read() FILE and write() it to a TCP socket connected to ADDR,
/// over and over, SECONDS s.
pub(super) fn serve(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    // A web server without sendfile: file -> user buffer -> socket.
    let path = a(1).unwrap_or_else(|| die("serve FILE ADDR SECONDS"));
    let addr = a(2).unwrap_or_else(|| die("serve FILE ADDR SECONDS"));
    let secs = num(a(3), "SECONDS");
    let sock =
        TcpStream::connect(addr.as_str()).unwrap_or_else(|e| die(&format!("connect {addr}: {e}")));
    let fd = open(path, libc::O_RDONLY);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut buf = vec![0u8; 65536];
    let mut bytes = 0u64;
    while std::time::Instant::now() < end {
        let n = check(
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
            "read",
        );
        if n == 0 {
            unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
            continue;
        }
        or_die(write_all(sock.as_raw_fd(), &buf[..n]));
        bytes += n as u64;
    }
    format!(r#"{{"bytes":{bytes}}}"#)
}

/// `sendfile FILE`: sendfile FILE -> loopback TCP socket.
pub(super) fn sendfile(args: &[String]) -> String {
    to_socket(args, "sendfile", |sock, fd, size| {
        sendfile_all(sock, fd, size, u64::MAX, false)
    })
}

/// `splice FILE`: splice FILE -> pipe -> loopback TCP socket.
pub(super) fn splice(args: &[String]) -> String {
    to_socket(args, "splice", |sock, fd, size| {
        splice_all(
            fd,
            sock,
            size,
            SplicePipe {
                size: None,
                flags: 0,
            },
        )
    })
}

/// FILE (`args[1]`) to a loopback TCP socket with `send`, whole, each call asking for all
/// that is left.
pub(super) fn to_socket(
    args: &[String],
    what: &str,
    send: impl FnOnce(RawFd, RawFd, u64) -> anyhow::Result<Moved>,
) -> String {
    let fd = open(
        args.get(1).unwrap_or_else(|| die("sendfile|splice FILE")),
        libc::O_RDONLY,
    );
    let size = file_size(fd);
    let (tx, rx) = tcp_pair();
    let moved = or_die(send(tx.as_raw_fd(), fd, size));
    if moved.bytes < size {
        die(&format!("{what} made no progress"));
    }
    drop(tx);
    let got = rx.join().unwrap();
    format!(
        r#"{{"calls":{},"bytes":{size},"received":{got},"max_call":{}}}"#,
        moved.calls, moved.max_call
    )
}
