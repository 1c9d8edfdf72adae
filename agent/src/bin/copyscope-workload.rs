//! Workloads with known answers, for copyscope's kernel tests and benchmarks. Each one
//! makes an exact number of syscalls of an exact size and prints what it did as JSON.
//!
//!   copyscope-workload pread FILE COUNT SIZE        COUNT pread(SIZE) at offset 0
//!   copyscope-workload pipe COUNT SIZE              COUNT write(SIZE) into a pipe, a thread reads
//!   copyscope-workload tcp COUNT SIZE               COUNT send(SIZE) over loopback TCP, a thread recv()s
//!   copyscope-workload sendfile FILE                sendfile FILE -> loopback TCP socket
//!   copyscope-workload splice FILE                  splice FILE -> pipe -> loopback TCP socket
//!   copyscope-workload copy-file-range SRC DST      copy_file_range SRC -> DST
//!   copyscope-workload direct FILE COUNT SIZE       COUNT O_DIRECT pread(SIZE)
//!   copyscope-workload badfd COUNT                  COUNT read() on a closed fd (EBADF)
//!   copyscope-workload threads THREADS COUNT FILE   THREADS threads, COUNT pread(1) each
//!   copyscope-workload pread-timed FILE COUNT SIZE  COUNT pread(SIZE), reports ns per call
//!   copyscope-workload getppid-timed COUNT          COUNT getppid(), reports ns per call
//!   copyscope-workload switch-timed ROUNDS          two threads pass a byte back and forth over
//!                                                   two pipes ROUNDS times (two context
//!                                                   switches a round at least), reports ns
//!                                                   per round
//!   copyscope-workload drop-cache FILE              fsync, then drop FILE (only) from the page cache
//!   copyscope-workload read FILE                    read() FILE to the end, 64 KiB at a time
//!   copyscope-workload mmap-read FILE               mmap FILE and touch every page
//!   copyscope-workload write-file FILE PAGES        write PAGES pages of 4 KiB to a new FILE
//!   copyscope-workload pipe-sleep COUNT             a thread blocks in read() on an empty pipe COUNT times
//!   copyscope-workload spin MILLIS                  two threads share CPU 0, spinning MILLIS ms
//!   copyscope-workload serve FILE ADDR SECONDS      read() FILE and write() it to a TCP socket
//!                                                   connected to ADDR, over and over, SECONDS s
//!   copyscope-workload pwrite FILE COUNT SIZE       COUNT pwrite(SIZE) at offset 0 (the dynamic
//!                                                   loader and the runtime make none)
//!   copyscope-workload pwritev2 FILE COUNT SIZE     the same with pwritev2 (hardly any program
//!                                                   makes one)
//!   copyscope-workload pwrite-on-cpus FILE COUNT CPUS  one thread per CPU of the list (0,1),
//!                                                   pinned to it, COUNT pwrite(1) each
//!   copyscope-workload steady FILE SECONDS RATE [SIZE]  RATE pwrite(SIZE, default 1) a second,
//!                                                   for SECONDS s
//!   copyscope-workload spawn PROCS PARALLEL ARGS... PROCS runs of `copyscope-workload ARGS...`,
//!                                                   PARALLEL at a time (fork + exec each)
//!   copyscope-workload tick FILE PROCS SECONDS PREFIX  PROCS forked processes named PREFIX0,
//!                                                   PREFIX1, ..., each making one pread(1) of
//!                                                   FILE a second (spread over the second) for
//!                                                   SECONDS s; `ready` on stderr once all run
//!   copyscope-workload mmsg COUNT N SIZE            COUNT sendmmsg of N messages of SIZE over
//!                                                   loopback UDP, each followed by a recvmmsg
//!                                                   of the N
//!   copyscope-workload zerocopy COUNT SIZE          COUNT send(SIZE), COUNT sendmsg(SIZE) and
//!                                                   COUNT sendmmsg of two messages of SIZE, with
//!                                                   MSG_ZEROCOPY over loopback TCP (SO_ZEROCOPY
//!                                                   set), a thread recv()s; the completions
//!                                                   read with recvmsg(MSG_ERRQUEUE)
//!   copyscope-workload uring-socket COUNT SIZE [sqpoll]  COUNT io_uring SENDs of SIZE over
//!                                                   loopback TCP, each received by an io_uring
//!                                                   RECV (MSG_WAITALL) on the other end; with
//!                                                   sqpoll, a SQPOLL ring
//!   copyscope-workload aio FILE COUNT SIZE BATCH    COUNT Linux AIO reads (IOCB_CMD_PREAD) of
//!                                                   SIZE from FILE, BATCH iocbs per io_submit,
//!                                                   reaped with io_getevents
//!
//! Before the workload, `--comm NAME` renames the process (what copyscope groups it by) and
//! `--cpu N` pins it to CPU N; the result then says which CPU it ended on.
//! The result goes to stdout, or to the file named by COPYSCOPE_WORKLOAD_OUT.
//!
//! With COPYSCOPE_WORKLOAD_GATE set, the timed workloads (`*-timed`) write `ready` and a
//! newline to stderr once warmed up, and start timing only when a byte arrives on stdin:
//! whoever runs them can take readings right around the timed loop.
use copyscope::bench::io::{
    Moved, SplicePipe, copy_file_range_all, sendfile_all, splice_all, write_all,
};
use std::{
    ffi::CString,
    io::Read as _,
    net::{TcpListener, TcpStream},
    os::fd::{AsRawFd, RawFd},
    thread,
};

fn die(msg: &str) -> ! {
    eprintln!("copyscope-workload: {msg}");
    std::process::exit(2);
}

fn num(s: Option<&String>, what: &str) -> u64 {
    s.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| die(&format!("{what} must be a whole number")))
}

fn check(r: isize, what: &str) -> usize {
    if r < 0 {
        die(&format!("{what}: {}", std::io::Error::last_os_error()));
    }
    r as usize
}

fn open(path: &str, flags: i32) -> RawFd {
    let c = CString::new(path).unwrap_or_else(|_| die("path contains NUL"));
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        die(&format!("open {path}: {}", std::io::Error::last_os_error()));
    }
    fd
}

fn file_size(fd: RawFd) -> u64 {
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) } as isize, "fstat");
    st.st_size as u64
}

/// A connected loopback pair: (sender, receiver thread that recv()s to EOF and returns the byte count).
fn tcp_pair() -> (TcpStream, thread::JoinHandle<u64>) {
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

/// `--comm NAME` and `--cpu N` before the workload: applied, and taken off `args`.
fn options(args: &mut Vec<String>) -> Option<usize> {
    let mut cpu = None;
    while let Some(opt) = args.first().filter(|a| a.starts_with("--")).cloned() {
        let value = args
            .get(1)
            .cloned()
            .unwrap_or_else(|| die(&format!("{opt} needs a value")));
        args.drain(..2);
        match opt.as_str() {
            "--comm" => {
                let c = CString::new(value).unwrap_or_else(|_| die("--comm contains NUL"));
                // SAFETY: PR_SET_NAME with a NUL-terminated string (the kernel keeps 15 bytes).
                check(
                    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) } as isize,
                    "prctl(PR_SET_NAME)",
                );
            }
            "--cpu" => {
                let n = num(Some(&value), "--cpu") as usize;
                pin(n);
                cpu = Some(n);
            }
            other => die(&format!("unknown option {other}")),
        }
    }
    cpu
}

/// Pin the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) as isize,
            "sched_setaffinity",
        );
    }
}

/// With COPYSCOPE_WORKLOAD_GATE set: say `ready` on stderr, then wait for a byte on stdin.
fn gate() {
    if std::env::var_os("COPYSCOPE_WORKLOAD_GATE").is_none() {
        return;
    }
    eprintln!("ready");
    let mut b = [0u8; 1];
    // SAFETY: read into our buffer.
    if check(
        unsafe { libc::read(0, b.as_mut_ptr().cast(), 1) },
        "read stdin",
    ) == 0
    {
        die("stdin closed before the go byte");
    }
}

/// The result of a timed loop: `count` under the key `what`, `ns` in all, and the time per
/// one under `per`.
fn timed(what: &str, per: &str, count: u64, ns: u128) -> String {
    let each = ns as f64 / count.max(1) as f64;
    format!(r#"{{"{what}":{count},"{per}":{each:.2}}}"#)
}

/// `count` pwrite(size) at offset 0 of `fd`: the bytes written.
fn pwrites(fd: RawFd, count: u64, size: usize) -> u64 {
    let buf = vec![5u8; size];
    let mut bytes = 0;
    for _ in 0..count {
        // SAFETY: write from our buffer.
        bytes += check(
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), size, 0) },
            "pwrite",
        ) as u64;
    }
    bytes
}

/// The same with pwritev2 (one iovec, no flags).
fn pwritev2s(fd: RawFd, count: u64, size: usize) -> u64 {
    let buf = vec![5u8; size];
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: size,
    };
    let mut bytes = 0;
    for _ in 0..count {
        // SAFETY: write from our buffer, described by one iovec.
        bytes += check(unsafe { libc::pwritev2(fd, &iov, 1, 0, 0) }, "pwritev2") as u64;
    }
    bytes
}

/// `procs` forked processes, each one pread(1) of `fd` a second for `secs` s, their
/// phases spread evenly over the second. They die with this process (PR_SET_PDEATHSIG);
/// whoever runs it may also kill its process group. Returns when all have ended.
fn ticks(fd: RawFd, procs: u64, secs: u64, prefix: &str) {
    let now = || {
        // SAFETY: clock_gettime into a zeroed timespec.
        let mut t: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let start = now() + 1_000_000_000;
    let end = start + secs * 1_000_000_000;
    for i in 0..procs {
        // Made before the fork: the child allocates nothing.
        let comm = CString::new(format!("{prefix}{i}")).unwrap_or_else(|_| die("PREFIX"));
        let mut at = start + i * 1_000_000_000 / procs.max(1);
        // SAFETY: this process is single-threaded; the child makes system calls only.
        let pid = unsafe { libc::fork() };
        check(pid as isize, "fork");
        if pid > 0 {
            continue;
        }
        // SAFETY: system calls on our own process and buffers, then _exit.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
            // Forking all of them may take longer than the first second: a tick already
            // past is skipped, not made up.
            let late = now().saturating_sub(at);
            at += late.div_ceil(1_000_000_000) * 1_000_000_000;
            let mut b = 0u8;
            while at < end {
                let t = libc::timespec {
                    tv_sec: (at / 1_000_000_000) as libc::time_t,
                    tv_nsec: (at % 1_000_000_000) as libc::c_long,
                };
                while libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &t,
                    std::ptr::null_mut(),
                ) == libc::EINTR
                {}
                libc::pread(fd, (&mut b as *mut u8).cast(), 1, 0);
                at += 1_000_000_000;
            }
            libc::_exit(0);
        }
    }
    eprintln!("ready");
    let mut status = 0;
    // SAFETY: waiting for our own children.
    while unsafe { libc::wait(&mut status) } > 0 {}
}

/// A transfer loop's result, or its error as the workload's own.
fn or_die<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| die(&format!("{e:#}")))
}

/// `pread FILE COUNT SIZE`: COUNT pread(SIZE) at offset 0.
fn pread(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("pread FILE COUNT SIZE")),
        libc::O_RDONLY,
    );
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let mut buf = vec![0u8; size];
    let mut bytes = 0;
    for _ in 0..count {
        // SAFETY: read into our buffer.
        bytes += check(
            unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), size, 0) },
            "pread",
        ) as u64;
    }
    format!(r#"{{"calls":{count},"bytes":{bytes}}}"#)
}

/// `pread-timed FILE COUNT SIZE`: COUNT pread(SIZE), reports ns per call.
fn pread_timed(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("pread-timed FILE COUNT SIZE")),
        libc::O_RDONLY,
    );
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let mut buf = vec![0u8; size];
    // Warm the page cache and the code path.
    for _ in 0..1000 {
        check(
            unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), size, 0) },
            "pread",
        );
    }
    gate();
    let t = std::time::Instant::now();
    for _ in 0..count {
        check(
            unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), size, 0) },
            "pread",
        );
    }
    timed("calls", "ns_per_call", count, t.elapsed().as_nanos())
}

/// `getppid-timed COUNT`: COUNT getppid(), reports ns per call.
fn getppid_timed(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    // A system call copyscope counts nowhere: what its syscall probes cost on the
    // calls they pass over.
    let count = num(a(1), "COUNT");
    for _ in 0..1000 {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    gate();
    let t = std::time::Instant::now();
    for _ in 0..count {
        // SAFETY: as above; the raw syscall, never a cached value.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    timed("calls", "ns_per_call", count, t.elapsed().as_nanos())
}

/// `switch-timed ROUNDS`: two threads pass a byte back and forth over two pipes ROUNDS
/// times, reports ns per round.
fn switch_timed(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    // Ping-pong: this thread writes a byte into one pipe, the other thread reads it
    // and answers on the second; each round blocks each thread once.
    let rounds = num(a(1), "ROUNDS");
    let (mut there, mut back) = ([0; 2], [0; 2]);
    for p in [&mut there, &mut back] {
        check(
            unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
            "pipe2",
        );
    }
    let warm = 1000;
    let (r, w) = (there[0], back[1]);
    let echo = thread::spawn(move || {
        let mut b = [0u8; 1];
        for _ in 0..warm + rounds {
            // SAFETY: read into and write from our buffer.
            check(unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }, "read");
            check(unsafe { libc::write(w, b.as_ptr().cast(), 1) }, "write");
        }
    });
    let (w, r) = (there[1], back[0]);
    let mut b = [0u8; 1];
    let mut ping = |n: u64| {
        for _ in 0..n {
            // SAFETY: write from and read into our buffer.
            check(unsafe { libc::write(w, b.as_ptr().cast(), 1) }, "write");
            check(unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }, "read");
        }
    };
    ping(warm);
    gate();
    let t = std::time::Instant::now();
    ping(rounds);
    let ns = t.elapsed().as_nanos();
    echo.join().unwrap();
    timed("rounds", "ns_per_round", rounds, ns)
}

/// `drop-cache FILE`: fsync, then drop FILE (only) from the page cache.
fn drop_cache(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("drop-cache FILE")),
        libc::O_RDONLY,
    );
    check(unsafe { libc::fsync(fd) } as isize, "fsync");
    let r = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        die(&format!("posix_fadvise: error {r}"));
    }
    r#"{"dropped":true}"#.to_string()
}

/// `read FILE`: read() FILE to the end, 64 KiB at a time.
fn read(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(a(1).unwrap_or_else(|| die("read FILE")), libc::O_RDONLY);
    let mut buf = vec![0u8; 65536];
    let mut total = 0u64;
    loop {
        let n = check(
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) },
            "read",
        );
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    format!(r#"{{"bytes":{total},"pages":{}}}"#, total.div_ceil(4096))
}

/// `mmap-read FILE`: mmap FILE and touch every page.
fn mmap_read(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("mmap-read FILE")),
        libc::O_RDONLY,
    );
    let size = file_size(fd) as usize;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap failed");
    }
    let mut sum = 0u64;
    for off in (0..size).step_by(4096) {
        sum += unsafe { std::ptr::read_volatile((p as *const u8).add(off)) } as u64;
    }
    unsafe { libc::munmap(p, size) };
    format!(r#"{{"pages":{},"sum":{sum}}}"#, size.div_ceil(4096))
}

/// `write-file FILE PAGES`: write PAGES pages of 4 KiB to a new FILE.
fn write_file(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("write-file FILE PAGES")),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    let pages = num(a(2), "PAGES");
    let buf = vec![3u8; 4096];
    for _ in 0..pages {
        check(
            unsafe { libc::write(fd, buf.as_ptr().cast(), 4096) },
            "write",
        );
    }
    format!(r#"{{"pages":{pages}}}"#)
}

/// `read-modify-write FILE`: pread each 4 KiB page of FILE, change its first byte, pwrite
/// it back.
fn read_modify_write(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("read-modify-write FILE")),
        libc::O_RDWR,
    );
    let pages = file_size(fd).div_ceil(4096);
    let mut buf = vec![0u8; 4096];
    for page in 0..pages {
        let off = (page * 4096) as libc::off_t;
        // SAFETY: read into and write from our buffer.
        let n = check(
            unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), 4096, off) },
            "pread",
        );
        buf[0] = buf[0].wrapping_add(1);
        check(
            unsafe { libc::pwrite(fd, buf.as_ptr().cast(), n as usize, off) },
            "pwrite",
        );
    }
    format!(r#"{{"pages":{pages}}}"#)
}

/// `pipe-sleep COUNT`: a thread blocks in read() on an empty pipe COUNT times.
fn pipe_sleep(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let count = num(a(1), "COUNT");
    let mut fds = [0; 2];
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as isize,
        "pipe2",
    );
    let (r, w) = (fds[0], fds[1]);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        tx.send(unsafe { libc::gettid() }).unwrap();
        let mut b = [0u8; 1];
        for _ in 0..count {
            check(unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }, "read");
        }
    });
    let tid = rx.recv().unwrap();
    let stat = format!("/proc/self/task/{tid}/stat");
    // The reader's state: the field after the parenthesised comm.
    let asleep = || {
        std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
        })
    };
    for _ in 0..count {
        // Write only once the reader sleeps (in read(): it blocks nowhere else), so
        // every read sleeps once, however busy the machine is.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
        thread::sleep(std::time::Duration::from_millis(1));
        while !asleep() && std::time::Instant::now() < give_up {
            thread::sleep(std::time::Duration::from_millis(1));
        }
        check(unsafe { libc::write(w, [1u8].as_ptr().cast(), 1) }, "write");
    }
    reader.join().unwrap();
    format!(r#"{{"reads":{count}}}"#)
}

/// `spin MILLIS`: two threads share CPU 0, spinning MILLIS ms.
fn spin(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let millis = num(a(1), "MILLIS");
    let spin = move || {
        // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let end = std::time::Instant::now() + std::time::Duration::from_millis(millis);
        let mut x = 0u64;
        while std::time::Instant::now() < end {
            x = x.wrapping_add(1);
        }
        x
    };
    let h: Vec<_> = (0..2).map(|_| thread::spawn(spin)).collect();
    let loops: u64 = h.into_iter().map(|t| t.join().unwrap()).sum();
    format!(r#"{{"loops":{loops}}}"#)
}

/// `pipe COUNT SIZE`: COUNT write(SIZE) into a pipe, a thread reads.
fn pipe(args: &[String]) -> String {
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
fn tcp(args: &[String]) -> String {
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

/// `direct FILE COUNT SIZE`: COUNT O_DIRECT pread(SIZE).
fn direct(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let path = a(1).unwrap_or_else(|| die("direct FILE COUNT SIZE"));
    let c = CString::new(path.as_str()).unwrap();
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        println!(r#"{{"unsupported":"O_DIRECT open: {e}"}}"#);
        std::process::exit(3);
    }
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let layout = std::alloc::Layout::from_size_align(size.max(4096), 4096).unwrap();
    // SAFETY: non-zero size layout; freed below.
    let buf = unsafe { std::alloc::alloc(layout) };
    let mut bytes = 0;
    for _ in 0..count {
        bytes += check(
            unsafe { libc::pread(fd, buf.cast(), size, 0) },
            "O_DIRECT pread",
        ) as u64;
    }
    unsafe { std::alloc::dealloc(buf, layout) };
    format!(r#"{{"calls":{count},"bytes":{bytes}}}"#)
}

/// `mmsg COUNT N SIZE`: COUNT sendmmsg of N messages of SIZE over loopback UDP, each
/// followed by one recvmmsg of the N. The bytes are the messages' msg_len, as the calls
/// report them.
fn mmsg(args: &[String]) -> String {
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
struct Completions {
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
fn zerocopy(args: &[String]) -> String {
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
fn uring_socket(args: &[String]) -> String {
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

/// include/uapi/linux/aio_abi.h, little-endian.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved2: u64,
    flags: u32,
    resfd: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// `aio FILE COUNT SIZE BATCH`: COUNT IOCB_CMD_PREAD of SIZE from FILE (the i-th at
/// offset i*SIZE, wrapping at the file's end), BATCH iocbs per io_submit, each batch
/// reaped with io_getevents.
fn aio(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let path = a(1).unwrap_or_else(|| die("aio FILE COUNT SIZE BATCH"));
    let (count, size, batch) = (
        num(a(2), "COUNT"),
        num(a(3), "SIZE") as usize,
        num(a(4), "BATCH") as usize,
    );
    if batch == 0 || !count.is_multiple_of(batch as u64) {
        die("COUNT must be a multiple of BATCH");
    }
    let fd = open(path, libc::O_RDONLY);
    // SAFETY: fstat into a zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) } as isize, "fstat");
    let blocks = (st.st_size as u64 / size as u64).max(1);
    let mut ctx: libc::c_ulong = 0;
    // SAFETY: io_setup writes the context id into ctx.
    if unsafe { libc::syscall(libc::SYS_io_setup, batch as libc::c_long, &mut ctx) } != 0 {
        let e = std::io::Error::last_os_error();
        println!(r#"{{"unsupported":"io_setup: {e}"}}"#);
        std::process::exit(3);
    }
    let mut bufs = vec![vec![0u8; size]; batch];
    let mut iocbs = vec![Iocb::default(); batch];
    let mut events = vec![IoEvent::default(); batch];
    let (mut submits, mut reaps, mut asked, mut completed) = (0u64, 0u64, 0u64, 0u64);
    let mut next = 0u64;
    // io_getevents' min_nr: wait for at least one event.
    const ONE: libc::c_long = 1;
    for _ in 0..count / batch as u64 {
        for (cb, buf) in iocbs.iter_mut().zip(bufs.iter_mut()) {
            *cb = Iocb {
                opcode: 0, // IOCB_CMD_PREAD
                fildes: fd as u32,
                buf: buf.as_mut_ptr() as u64,
                nbytes: size as u64,
                offset: ((next % blocks) * size as u64) as i64,
                ..Iocb::default()
            };
            next += 1;
            asked += size as u64;
        }
        let mut ptrs: Vec<*mut Iocb> = iocbs.iter_mut().map(|c| c as *mut Iocb).collect();
        // SAFETY: BATCH pointers to live iocbs whose buffers outlive their completion.
        let k = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                ctx,
                batch as libc::c_long,
                ptrs.as_mut_ptr(),
            )
        };
        if k != batch as libc::c_long {
            die(&format!(
                "io_submit: {k} ({})",
                std::io::Error::last_os_error()
            ));
        }
        submits += 1;
        let mut got = 0;
        while got < batch {
            // SAFETY: room for BATCH events; no timeout (waits for at least one).
            let k = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    ctx,
                    ONE,
                    (batch - got) as libc::c_long,
                    events.as_mut_ptr(),
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            if k <= 0 {
                die(&format!(
                    "io_getevents: {k} ({})",
                    std::io::Error::last_os_error()
                ));
            }
            reaps += 1;
            for e in &events[..k as usize] {
                if e.res < 0 {
                    die(&format!("an AIO read failed: {}", e.res));
                }
                completed += e.res as u64;
            }
            got += k as usize;
        }
    }
    // SAFETY: the context is ours and idle.
    unsafe { libc::syscall(libc::SYS_io_destroy, ctx) };
    unsafe { libc::close(fd) };
    format!(
        r#"{{"calls":{count},"bytes":{asked},"submits":{submits},"getevents":{reaps},"completed":{completed}}}"#
    )
}

/// `badfd COUNT`: COUNT read() on a closed fd (EBADF).
fn badfd(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let count = num(a(1), "COUNT");
    let mut buf = [0u8; 16];
    for _ in 0..count {
        // fd 987654 is far above anything open here.
        let r = unsafe { libc::read(987_654, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            die("read on a closed fd succeeded");
        }
    }
    format!(r#"{{"calls":{count},"errors":{count}}}"#)
}

/// `threads THREADS COUNT FILE`: THREADS threads, COUNT pread(1) each.
fn threads(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (threads, count) = (num(a(1), "THREADS"), num(a(2), "COUNT"));
    let fd = open(
        a(3).unwrap_or_else(|| die("threads THREADS COUNT FILE")),
        libc::O_RDONLY,
    );
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                let mut b = [0u8; 1];
                for _ in 0..count {
                    check(
                        unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 1, 0) },
                        "pread",
                    );
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    format!(
        r#"{{"calls":{},"bytes":{}}}"#,
        threads * count,
        threads * count
    )
}

/// `serve FILE ADDR SECONDS`: read() FILE and write() it to a TCP socket connected to ADDR,
/// over and over, SECONDS s.
fn serve(args: &[String]) -> String {
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

/// `pwrite-on-cpus FILE COUNT CPUS`: one thread per CPU of the list, pinned to it, COUNT
/// pwrite(1) each.
fn pwrite_on_cpus(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let usage = "pwrite-on-cpus FILE COUNT CPUS";
    let fd = open(
        a(1).unwrap_or_else(|| die(usage)),
        libc::O_WRONLY | libc::O_CREAT,
    );
    let count = num(a(2), "COUNT");
    let cpus: Vec<usize> = a(3)
        .unwrap_or_else(|| die(usage))
        .split(',')
        .map(|c| num(Some(&c.to_string()), "CPUS") as usize)
        .collect();
    let hs: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            thread::spawn(move || {
                pin(cpu);
                pwrites(fd, count, 1);
                // SAFETY: sched_getcpu has no preconditions.
                unsafe { libc::sched_getcpu() }
            })
        })
        .collect();
    let ended: Vec<String> = hs
        .into_iter()
        .map(|h| h.join().unwrap().to_string())
        .collect();
    format!(
        r#"{{"calls":{},"cpus":[{}]}}"#,
        count * cpus.len() as u64,
        ended.join(",")
    )
}

/// `steady FILE SECONDS RATE [SIZE]`: RATE pwrite(SIZE, default 1) a second, for SECONDS s.
fn steady(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("steady FILE SECONDS RATE [SIZE]")),
        libc::O_WRONLY | libc::O_CREAT,
    );
    let (secs, rate) = (num(a(2), "SECONDS"), num(a(3), "RATE"));
    let size = a(4).map_or(1, |s| num(Some(s), "SIZE") as usize);
    // Ticks of 10 ms, each with its share of the calls due by then.
    let start = std::time::Instant::now();
    let end = std::time::Duration::from_secs(secs);
    let (mut calls, mut bytes) = (0u64, 0u64);
    while start.elapsed() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        let n = due.saturating_sub(calls);
        bytes += pwrites(fd, n, size);
        calls += n;
        thread::sleep(std::time::Duration::from_millis(10));
    }
    format!(r#"{{"calls":{calls},"bytes":{bytes}}}"#)
}

/// `spawn PROCS PARALLEL ARGS...`: PROCS runs of `copyscope-workload ARGS...`, PARALLEL at
/// a time.
fn spawn(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let (procs, parallel) = (num(a(1), "PROCS"), num(a(2), "PARALLEL").max(1));
    let child_args = args.get(3..).unwrap_or_default();
    if child_args.is_empty() {
        die("spawn PROCS PARALLEL ARGS...");
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("own path: {e}")));
    let mut running = std::collections::VecDeque::new();
    let mut failed = 0u64;
    let mut wait = |c: std::process::Child| {
        let out = c
            .wait_with_output()
            .unwrap_or_else(|e| die(&format!("wait: {e}")));
        if !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stderr));
            failed += 1;
        }
    };
    for _ in 0..procs {
        if running.len() as u64 >= parallel {
            wait(running.pop_front().unwrap());
        }
        running.push_back(
            std::process::Command::new(&exe)
                .args(child_args)
                .env_remove("COPYSCOPE_WORKLOAD_OUT")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| die(&format!("spawning {exe:?}: {e}"))),
        );
    }
    running.into_iter().for_each(&mut wait);
    if failed > 0 {
        die(&format!("{failed} of {procs} processes failed"));
    }
    format!(r#"{{"processes":{procs}}}"#)
}

/// `tick FILE PROCS SECONDS PREFIX`: PROCS forked processes, each one pread(1) of FILE a
/// second for SECONDS s.
fn tick(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let usage = "tick FILE PROCS SECONDS PREFIX";
    let fd = open(a(1).unwrap_or_else(|| die(usage)), libc::O_RDONLY);
    let (procs, secs) = (num(a(2), "PROCS"), num(a(3), "SECONDS"));
    let prefix = a(4).unwrap_or_else(|| die(usage));
    ticks(fd, procs, secs, prefix);
    format!(r#"{{"processes":{procs},"seconds":{secs}}}"#)
}

/// `sendfile FILE`: sendfile FILE -> loopback TCP socket.
fn sendfile(args: &[String]) -> String {
    to_socket(args, "sendfile", |sock, fd, size| {
        sendfile_all(sock, fd, size, u64::MAX, false)
    })
}

/// `splice FILE`: splice FILE -> pipe -> loopback TCP socket.
fn splice(args: &[String]) -> String {
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
fn to_socket(
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

/// `copy-file-range SRC DST`: copy_file_range SRC -> DST, each call asking for all that is
/// left.
fn copy_file_range(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let src = open(
        a(1).unwrap_or_else(|| die("copy-file-range SRC DST")),
        libc::O_RDONLY,
    );
    let dst = open(
        a(2).unwrap_or_else(|| die("copy-file-range SRC DST")),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    let size = file_size(src);
    let moved = or_die(copy_file_range_all(src, dst, size, u64::MAX));
    if moved.bytes < size {
        die("copy_file_range made no progress");
    }
    format!(
        r#"{{"calls":{},"bytes":{size},"max_call":{}}}"#,
        moved.calls, moved.max_call
    )
}

/// `pwrite FILE COUNT SIZE`: COUNT pwrite(SIZE) at offset 0.
fn pwrite(args: &[String]) -> String {
    pwrite_with(args, pwrites)
}

/// `pwritev2 FILE COUNT SIZE`: the same with pwritev2.
fn pwritev2(args: &[String]) -> String {
    pwrite_with(args, pwritev2s)
}

/// COUNT writes of SIZE at offset 0 of FILE with `write`.
fn pwrite_with(args: &[String], write: fn(RawFd, u64, usize) -> u64) -> String {
    let a = |i: usize| args.get(i);
    let fd = open(
        a(1).unwrap_or_else(|| die("pwrite|pwritev2 FILE COUNT SIZE")),
        libc::O_WRONLY | libc::O_CREAT,
    );
    let (count, size) = (num(a(2), "COUNT"), num(a(3), "SIZE") as usize);
    let bytes = write(fd, count, size);
    format!(r#"{{"calls":{count},"bytes":{bytes}}}"#)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let pinned = options(&mut args);
    let op = args
        .first()
        .map(String::as_str)
        .unwrap_or_else(|| die("no workload given (see the source for the list)"));
    let out = match op {
        "pread" => pread(&args),
        "pread-timed" => pread_timed(&args),
        "getppid-timed" => getppid_timed(&args),
        "switch-timed" => switch_timed(&args),
        "drop-cache" => drop_cache(&args),
        "read" => read(&args),
        "mmap-read" => mmap_read(&args),
        "write-file" => write_file(&args),
        "read-modify-write" => read_modify_write(&args),
        "pipe-sleep" => pipe_sleep(&args),
        "spin" => spin(&args),
        "pipe" => pipe(&args),
        "tcp" => tcp(&args),
        "sendfile" => sendfile(&args),
        "splice" => splice(&args),
        "copy-file-range" => copy_file_range(&args),
        "direct" => direct(&args),
        "badfd" => badfd(&args),
        "mmsg" => mmsg(&args),
        "aio" => aio(&args),
        "zerocopy" => zerocopy(&args),
        "uring-socket" => uring_socket(&args),
        "threads" => threads(&args),
        "serve" => serve(&args),
        "pwrite" => pwrite(&args),
        "pwritev2" => pwritev2(&args),
        "pwrite-on-cpus" => pwrite_on_cpus(&args),
        "steady" => steady(&args),
        "spawn" => spawn(&args),
        "tick" => tick(&args),
        other => die(&format!("unknown workload {other:?}")),
    };
    // Where the workload ended, when it was pinned.
    let out = match pinned {
        // SAFETY: sched_getcpu has no preconditions.
        Some(_) => format!(
            r#"{},"cpu":{}}}"#,
            out.strip_suffix('}').unwrap_or(&out),
            unsafe { libc::sched_getcpu() }
        ),
        None => out,
    };
    // With COPYSCOPE_WORKLOAD_OUT the result goes to that file, so the workload's own
    // output does not mix with the pipe and socket traffic it measures.
    match std::env::var_os("COPYSCOPE_WORKLOAD_OUT") {
        Some(path) => std::fs::write(&path, format!("{out}\n"))
            .unwrap_or_else(|e| die(&format!("writing result: {e}"))),
        None => println!("{out}"),
    }
}
