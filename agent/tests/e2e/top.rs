//! `copyscope top` end to end: the real binary in a real terminal (tmux), driven with
//! send-keys and read with capture-pane, against a workload with a known hot process.

use crate::common;

use std::{
    io::Read as _,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::*;

/// Why tmux tests cannot run, if they cannot.
fn tmux_missing() -> Option<String> {
    match Command::new("tmux").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => {
            let why = "tmux is not installed (cargo xtask setup installs it)";
            assert!(!common::strict(), "{why}");
            Some(why.into())
        }
    }
}

/// A tmux session running one command in a 120x32 terminal; killed on drop.
struct Tmux {
    name: String,
}

impl Tmux {
    fn start(name: &str, cmd: &str) -> Tmux {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", name])
            .output();
        // After the command ends the pane shows its exit code, so a clean quit (and a
        // restored terminal) can be checked.
        let wrapped = format!("{cmd}; echo TOP-EXITED-$?; sleep 60");
        let out = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "120",
                "-y",
                "32",
                &wrapped,
            ])
            .env("TERM", "xterm-256color")
            .output()
            .unwrap();
        assert_ok(&out, "tmux new-session");
        Tmux { name: name.into() }
    }

    fn capture(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let out = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .output()
            .unwrap();
        assert_ok(&out, "tmux send-keys");
    }

    /// Wait until `ok` holds for the screen; the screen it held for.
    fn wait_for(&self, what: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

/// A process that reads a file and writes it to a socket (the sendfile pattern), with a
/// receiver in this test process draining the socket.
struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, secs: u64) -> Server {
        let f = dir.join("page");
        write_file(&f, 8 << 20);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        let child = Command::new(WORKLOAD)
            .args(["serve", f.to_str().unwrap(), &addr, &secs.to_string()])
            .env("COPYSCOPE_WORKLOAD_OUT", dir.join("serve-result"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The line of the screen that shows the serving process.
fn server_line(screen: &str, pid: u32) -> Option<&str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn top_shows_the_hot_process_with_its_advice_and_quits_cleanly() {
    require_kernel!();
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    let d = scratch("top-local");
    let server = Server::start(&d, 120);
    let pid = server.child.id();
    let t = Tmux::start(
        "copyscope-top-local",
        &format!("{COPYSCOPE} top --interval 1"),
    );
    let screen = t.wait_for("the serving process flagged for sendfile", 60, |s| {
        server_line(s, pid).is_some_and(|l| l.contains("copyscope-work") && l.contains("sendfile"))
    });
    assert!(screen.contains("local probes"), "{screen}");
    assert!(screen.contains("CPU copy"), "{screen}");
    // Sorted by advice: a flagged process is the first line under the column titles (the
    // remote test's server, running at the same time, may tie with this one).
    let first = screen
        .lines()
        .skip_while(|l| !l.starts_with("PID"))
        .nth(1)
        .unwrap_or("");
    assert!(
        first.contains("copyscope-work") && first.contains("sendfile"),
        "{screen}"
    );

    // Filter to it, open its detail: the finding with its evidence and saving.
    t.keys(&["/"]);
    t.keys(&["-l", &pid.to_string()]);
    t.keys(&["Enter"]);
    t.wait_for("the filter", 10, |s| {
        s.contains(&format!("filter \"{pid}\""))
    });
    t.keys(&["Enter"]);
    let detail = t.wait_for("the detail view", 10, |s| s.contains("evidence:"));
    assert!(
        detail.contains(&format!("pid {pid} copyscope-work")),
        "{detail}"
    );
    assert!(detail.contains("estimated saving"), "{detail}");
    assert!(
        detail.contains("read") && detail.contains("socket"),
        "{detail}"
    );

    // Help, then quit: the terminal comes back and the exit code is 0.
    t.keys(&["Escape"]);
    t.keys(&["?"]);
    t.wait_for("the help", 10, |s| s.contains("reverse the sort"));
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");
    assert!(
        !end.contains("ADVICE"),
        "the alternate screen is gone: {end}"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn top_from_a_remote_agent_shows_its_windows_and_survives_the_agent_going_away() {
    require_kernel!();
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    let d = scratch("top-remote");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut agent = Command::new(COPYSCOPE)
        .args([
            "run",
            "--no-pin",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--interval",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server::start(&d, 120);
    let pid = server.child.id();
    let url = format!("http://127.0.0.1:{port}");
    let t = Tmux::start(
        "copyscope-top-remote",
        &format!("{COPYSCOPE} top --from {url} --interval 1"),
    );
    let screen = t.wait_for("the agent's window with the serving process", 60, |s| {
        server_line(s, pid).is_some_and(|l| l.contains("sendfile"))
    });
    assert!(screen.contains(&format!("agent {url}")), "{screen}");
    // The agent goes away: the header says so, the last window stays, top keeps running.
    let _ = agent.kill();
    let _ = agent.wait();
    let gone = t.wait_for("the unreachable agent in the header", 30, |s| {
        s.contains("agent unreachable")
    });
    assert!(server_line(&gone, pid).is_some(), "{gone}");
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");
}

#[test]
fn top_from_an_endpoint_that_is_not_an_agent_says_so_and_keeps_running() {
    if let Some(why) = tmux_missing() {
        skip!(format!("{why}"));
    }
    // A server that answers every request with JSON that is not a snapshot.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    thread::spawn(move || {
        for mut c in l.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = r#"{"status":"ok","processes":"many"}"#;
            let _ = std::io::Write::write_all(
                &mut c,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let t = Tmux::start(
        "copyscope-top-malformed",
        &format!("{COPYSCOPE} top --from {url} --interval 1"),
    );
    let screen = t.wait_for("the malformed answer in the header", 30, |s| {
        s.contains("is not a copyscope snapshot")
    });
    assert!(
        screen.contains("bad answer from the agent: http://"),
        "{screen}"
    );
    assert!(screen.contains("waiting for the first window"), "{screen}");
    t.keys(&["q"]);
    let end = t.wait_for("top to exit", 15, |s| s.contains("TOP-EXITED-"));
    assert!(end.contains("TOP-EXITED-0"), "{end}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn top_that_cannot_attach_says_why_before_drawing_anything() {
    require_kernel!();
    let out = Command::new(COPYSCOPE)
        .args(["top"])
        .env(
            "COPYSCOPE_DISABLE_METHODS",
            "tp_btf,raw_tracepoint,tracepoint",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("disabled by COPYSCOPE_DISABLE_METHODS"),
        "{err}"
    );
    // Nothing was drawn: no escape sequences for the alternate screen.
    assert!(!out.stdout.contains(&0x1b), "{:?}", out.stdout);
}
