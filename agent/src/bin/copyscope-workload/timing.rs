//! Workloads in time: timed loops, context switches, steady rates, many processes.

use super::*;

/// `procs` forked processes, each one pread(1) of `fd` a second for `secs` s, their
/// phases spread evenly over the second. They die with this process (PR_SET_PDEATHSIG);
/// whoever runs it may also kill its process group. Returns when all have ended.
pub(super) fn ticks(fd: RawFd, procs: u64, secs: u64, prefix: &str) {
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
                    tv_sec: (at / 1_000_000_000) as _,
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

/// `pread-timed FILE COUNT SIZE`: COUNT pread(SIZE), reports ns per call.
pub(super) fn pread_timed(args: &[String]) -> String {
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
pub(super) fn getppid_timed(args: &[String]) -> String {
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
pub(super) fn switch_timed(args: &[String]) -> String {
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

/// `pipe-sleep COUNT`: a thread blocks in read() on an empty pipe COUNT times.
pub(super) fn pipe_sleep(args: &[String]) -> String {
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
pub(super) fn spin(args: &[String]) -> String {
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

/// `steady FILE SECONDS RATE [SIZE]`: RATE pwrite(SIZE, default 1) a second, for SECONDS s.
pub(super) fn steady(args: &[String]) -> String {
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
pub(super) fn spawn(args: &[String]) -> String {
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
pub(super) fn tick(args: &[String]) -> String {
    let a = |i: usize| args.get(i);
    let usage = "tick FILE PROCS SECONDS PREFIX";
    let fd = open(a(1).unwrap_or_else(|| die(usage)), libc::O_RDONLY);
    let (procs, secs) = (num(a(2), "PROCS"), num(a(3), "SECONDS"));
    let prefix = a(4).unwrap_or_else(|| die(usage));
    ticks(fd, procs, secs, prefix);
    format!(r#"{{"processes":{procs},"seconds":{secs}}}"#)
}
