//! Running `copyscope run` and the servers around it in a test: children that are stopped
//! however the test ends, plain HTTP gets, and polling with a limit.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::COPYSCOPE;

/// A child stopped (SIGTERM, then SIGKILL after 5 s) and reaped when the test ends.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first: the agent detaches its programs and exits cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `copyscope run`.
pub struct Agent {
    pub child: Guard,
    /// host:port it serves on.
    pub addr: String,
    /// Its stderr so far, line by line.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    pub fn metrics(&self) -> String {
        get(&self.addr, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// `copyscope run --listen 127.0.0.1:0 ARGS`, once it is ready (/readyz).
pub fn start_agent(args: &[&str]) -> Agent {
    start_agent_under(&[], args)
}

/// The same, started through `wrapper` (a program and its arguments that then runs
/// copyscope in the same process, e.g. `setpriv --bounding-set ... --`).
pub fn start_agent_under(wrapper: &[&str], args: &[&str]) -> Agent {
    let mut all = args.to_vec();
    // Tests that pin say where; the others never share the default pin of the host.
    if !args.iter().any(|a| *a == "--pin-path" || *a == "--no-pin") {
        all.push("--no-pin");
    }
    let agent = launch(wrapper, &all);
    wait_for(Duration::from_secs(30), "the agent to be ready", || {
        get(&agent.addr, "/readyz").ok().filter(|(s, _)| *s == 200)
    });
    agent
}

/// `copyscope run --listen 127.0.0.1:0 ARGS` through `wrapper`, once it has said where it
/// serves (http or https; readiness is the caller's to check). Its stderr is drained into
/// `Agent::log` for as long as it runs.
pub fn launch(wrapper: &[&str], args: &[&str]) -> Agent {
    let mut cmd = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(COPYSCOPE);
            c
        }
        None => Command::new(COPYSCOPE),
    };
    let mut child = cmd
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting copyscope run");
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        // Keeps draining stderr so the agent never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line
                    .strip_prefix("copyscope: serving http://")
                    .or_else(|| line.strip_prefix("copyscope: serving https://"))
                {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
                eprintln!("agent: {line}");
                log.lock().unwrap().push(line);
            }
        });
    }
    let child = Guard(child);
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "copyscope run did not say where it serves:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
    Agent { child, addr, log }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(response(&buf))
}

/// An HTTP response's status (0 when there is none) and body.
pub fn response(buf: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Poll `f` every 200 ms until it gives a value; fail after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// As root (COPYSCOPE_REQUIRE_KERNEL_TESTS) a missing program fails: setup installs it.
/// In a QEMU guest of `cargo xtask vm` (COPYSCOPE_TEST_GUEST: busybox and the host's /usr
/// are all it has) the test skips instead, naming the program. A skip is recorded.
pub fn require_tool(cmd: &str, package: &str) -> bool {
    if have(cmd) {
        return true;
    }
    let msg =
        format!("{cmd} is not installed (Debian package {package}; cargo xtask setup installs it)");
    assert!(
        std::env::var_os("COPYSCOPE_TEST_GUEST").is_some()
            || std::env::var_os("COPYSCOPE_REQUIRE_KERNEL_TESTS").is_none(),
        "{msg}"
    );
    super::record_skip_here(&msg);
    false
}

/// The sum of every series of `name` whose labels include all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(text, name)
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

/// (labels, value) of every series of `name`.
pub fn series<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.rsplit_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.parse().ok()?))
    })
}

/// A gauge's values by one label (series without that label are left out).
pub fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let key = format!("{label}=\"");
    series(text, name)
        .filter_map(|(l, v)| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')? + start;
            Some((l[start..end].to_string(), v))
        })
        .collect()
}
