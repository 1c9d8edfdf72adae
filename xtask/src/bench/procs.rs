//! Processes the benchmarks start (each stopped by its pid and waited for, on every
//! path), the signals that end a benchmark between two steps, and what the agent
//! exports: its metrics, over HTTP, and its memory from /proc.

use super::*;

/// A process the benchmarks started. Dropping it (errors included) sends it `signal` unless
/// it has exited, and waits for it; SIGKILL if it is still there 30 s later.
pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) signal: i32,
    pub(super) what: String,
}

impl Proc {
    pub(super) fn spawn(cmd: &mut Command, signal: i32) -> Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", show(cmd)))?;
        let what = cmd.get_program().to_string_lossy().into_owned();
        Ok(Proc {
            child,
            signal,
            what,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Signal it (unless it has exited) and wait for it: its exit status.
    pub(super) fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still its.
        unsafe { libc::kill(self.pid() as i32, self.signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "xtask: {} (pid {}) still running 30 s after signal {}: killing it",
                    self.what,
                    self.pid(),
                    self.signal
                );
                self.child.kill()?;
                return Ok(self.child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xtask: stopping {} (pid {}): {e:#}", self.what, self.pid());
        }
    }
}

/// The lines of `stream`, read by a thread of their own until the end (so the writer never
/// blocks on a full pipe, whether or not anyone still listens).
pub(super) fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Wait for the first line for which `ready` answers; the lines before it go into the error.
pub(super) fn wait_for_line<T>(
    lines: &mpsc::Receiver<String>,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&str) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                if let Some(t) = ready(&l) {
                    return Ok(t);
                }
                seen.push(l);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("{what} exited before it was ready: {}", seen.join("\n"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!(
                    "{what} not ready after {} s: {}",
                    timeout.as_secs(),
                    seen.join("\n")
                )
            }
        }
    }
}

/// `copyscope run --no-pin --listen 127.0.0.1:0 --interval INTERVAL ARGS...`, once it
/// serves (HTTP or, with a web configuration, HTTPS): the process and the address it
/// serves on.
pub(super) fn start_copyscope_run(
    bin_dir: &Path,
    interval: f64,
    args: &[String],
) -> Result<(Proc, String)> {
    let mut agent = Proc::spawn(
        Command::new(bin_dir.join("copyscope"))
            .args(["run", "--no-pin", "--listen", "127.0.0.1:0", "--interval"])
            .arg(interval.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        libc::SIGTERM,
    )?;
    let lines = lines_of(agent.child.stderr.take().context("no stderr")?);
    let addr = wait_for_line(&lines, "copyscope run", Duration::from_secs(60), |l| {
        let rest = l
            .strip_prefix("copyscope: serving http://")
            .or_else(|| l.strip_prefix("copyscope: serving https://"))?;
        Some(rest.split('/').next().unwrap_or("").to_string())
    })?;
    Ok((agent, addr))
}

pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end the benchmark between two steps, through its error path (which
/// stops every process and restores the sysctl), instead of killing it in the middle.
pub(super) fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
}

pub(super) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// The sum of every series of `name` in an exposition whose labels include all of `labels`.
pub(super) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (l, v) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .iter()
                .all(|(k, want)| l.contains(&format!("{k}=\"{want}\"")))
                .then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

/// A plain HTTP/1.0 GET of `path`: the body of a 200 answer.
pub(super) fn http_get(addr: &str, path: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// A size field of /proc/PID/status (`VmRSS`, `VmHWM`, ...), in bytes.
pub(super) fn status_bytes(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
    Ok(kib * 1024.0)
}

/// VmRSS of a process, in bytes.
pub(super) fn resident(pid: u32) -> Result<f64> {
    status_bytes(pid, "VmRSS")
}
