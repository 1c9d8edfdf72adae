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

mod aio;
mod files;
mod net;
mod timing;

use aio::*;
use files::*;
use net::*;
use timing::*;

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

/// A transfer loop's result, or its error as the workload's own.
fn or_die<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| die(&format!("{e:#}")))
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
