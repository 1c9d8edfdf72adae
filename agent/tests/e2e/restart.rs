//! Pinned state across agent restarts: a workload that runs while the agent is stopped
//! and started again (cleanly, or killed) is counted exactly; another build replaces the
//! pinned programs and keeps the totals; a pin of another layout, a damaged one, a busy
//! one, one that another user owns or may write, one on a read-only bpffs and a path off
//! bpffs are refused with what to do; no other user can take the lock; links moved out
//! of the pin cannot make an event count twice; `copyscope unpin` removes copyscope's
//! pins and only those. Each test mounts its own BPF file system, so nothing touches the
//! host's /sys/fs/bpf.

use crate::common;

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::{
    COPYSCOPE, WORKLOAD,
    agent::{Agent, Guard, start_agent, wait_for},
    scratch,
};

/// A BPF file system mounted for one test, unmounted (and everything pinned in it
/// released) at the end.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount(name: &str) -> Bpffs {
        Bpffs::mount_with(name, "rw")
    }

    /// Mounted with `-o OPTIONS`.
    fn mount_with(name: &str, options: &str) -> Bpffs {
        let dir =
            std::env::temp_dir().join(format!("copyscope-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "bpf", "-o", options, "bpf"])
            .arg(&dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t bpf bpf {} failed", dir.display());
        Bpffs(dir)
    }

    fn pin(&self) -> PathBuf {
        self.0.join("copyscope")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The pwrite64 calls of the workload named `comm` (one per test: the tests run side by
/// side and every agent sees every process) as an agent counts them.
fn counted(agent: &Agent, comm: &str) -> Option<u64> {
    agent.metrics().lines().find_map(|l| {
        let ok = l.starts_with("copyscope_syscalls_total{")
            && l.contains(&format!("comm=\"{comm}\""))
            && l.contains("syscall=\"pwrite64\"");
        ok.then(|| l.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as u64))
            .flatten()
    })
}

fn pinned_agent(pin: &Path, extra: &[&str]) -> Agent {
    let mut args = vec!["--interval", "0.5", "--pin-path", pin.to_str().unwrap()];
    args.extend_from_slice(extra);
    start_agent(&args)
}

/// `copyscope-workload steady`: RATE pwrite(1) a second for SECONDS, its result in a file.
fn steady(dir: &Path, comm: &str, seconds: u32, rate: u32) -> (Guard, PathBuf) {
    let out = dir.join("steady.json");
    let child = Command::new(WORKLOAD)
        .args(["--comm", comm, "steady"])
        .arg(dir.join("steady.dat"))
        .args([seconds.to_string(), rate.to_string()])
        .env("COPYSCOPE_WORKLOAD_OUT", &out)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting the workload");
    (Guard(child), out)
}

fn finished(mut g: Guard, out: &Path) -> u64 {
    let st = g.0.wait().expect("waiting for the workload");
    assert!(st.success(), "the workload failed: {st}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    v["calls"].as_u64().expect("the workload's call count")
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_workload_running_across_restarts_is_counted_exactly() {
    require_kernel!();
    let fs = Bpffs::mount("exact");
    let pin = fs.pin();
    let d = scratch("restart-exact");
    // The agent first: it counts from its start, the workload's every call.
    let first = pinned_agent(&pin, &[]);
    let (work, out) = steady(&d, "cs-restart", 9, 400);
    assert!(
        first
            .log()
            .contains("pinned the programs, maps and links at"),
        "{}",
        first.log()
    );
    let seen = wait_for(Duration::from_secs(20), "the first agent to count", || {
        counted(&first, "cs-restart").filter(|&n| n > 0)
    });

    // A clean stop (SIGTERM): the programs stay attached, the workload goes on.
    drop(first);
    std::thread::sleep(Duration::from_millis(800));
    let second = pinned_agent(&pin, &[]);
    let log = second.log();
    assert!(log.contains("adopted the programs pinned at"), "{log}");
    assert!(log.contains("totals continue"), "{log}");
    let resumed = wait_for(
        Duration::from_secs(20),
        "the second agent's counter",
        || counted(&second, "cs-restart"),
    );
    assert!(
        resumed >= seen,
        "the counter went back from {seen} to {resumed} across the restart"
    );

    // A crash (SIGKILL): nothing is saved at exit, the last window's state is enough.
    let pid = second.child.0.id() as i32;
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(second);
    std::thread::sleep(Duration::from_millis(800));
    let third = pinned_agent(&pin, &[]);
    assert!(
        third.log().contains("adopted the programs pinned at"),
        "{}",
        third.log()
    );

    let calls = finished(work, &out);
    assert!(calls > 1000, "the workload made only {calls} calls");
    eprintln!("the workload made {calls} calls");
    let mut now = 0;
    let last = wait_for(
        Duration::from_secs(20),
        "the count to reach the workload's",
        || {
            now = counted(&third, "cs-restart").unwrap_or(0);
            (now >= calls).then_some(now)
        },
    );
    assert_eq!(
        last, calls,
        "counted {last} pwrite calls across two restarts, the workload made {calls}"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn another_build_replaces_the_pinned_programs_and_keeps_the_totals() {
    require_kernel!();
    let fs = Bpffs::mount("replace");
    let pin = fs.pin();
    let d = scratch("restart-replace");
    let first = pinned_agent(&pin, &[]);
    let (work, out) = steady(&d, "cs-replace", 5, 400);
    let seen = wait_for(Duration::from_secs(20), "the first agent to count", || {
        counted(&first, "cs-replace").filter(|&n| n > 0)
    });
    drop(first);
    // Anything handed to the programs at load time makes another build; disabling a
    // method that cannot attach here changes nothing else.
    let second = start_agent_env(&pin, &[("COPYSCOPE_DISABLE_METHODS", "uprobe")]);
    let log = second.log();
    assert!(log.contains("replaced the programs pinned at"), "{log}");
    assert!(log.contains("(generation 2)"), "{log}");
    assert!(pin.join("links/2").is_dir() && !pin.join("links/1").exists());
    let calls = finished(work, &out);
    let last = wait_for(Duration::from_secs(20), "the second agent to count", || {
        counted(&second, "cs-replace").filter(|&n| n > seen)
    });
    assert!(
        last >= seen && last <= calls,
        "after the replacement: {last}, before it {seen}, the workload made {calls}; the \
         second agent's log:\n{}",
        second.log()
    );
}

fn start_agent_env(pin: &Path, env: &[(&str, &str)]) -> Agent {
    // start_agent passes its environment on; set the variables for this process's
    // children only through a wrapper.
    let mut wrapper = vec!["env".to_string()];
    wrapper.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    let w: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    common::agent::start_agent_under(
        &w,
        &["--interval", "0.5", "--pin-path", pin.to_str().unwrap()],
    )
}

/// `copyscope run` expected to fail: its stderr.
fn refused(pin: &Path, extra: &[&str]) -> String {
    let out = Command::new(COPYSCOPE)
        .args(["run", "--listen", "127.0.0.1:0", "--pin-path"])
        .arg(pin)
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "copyscope run started on a bad pin");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn bpftool(args: &[&str]) {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn bad_pins_are_refused_with_what_to_do_and_unpin_clears_them() {
    require_kernel!();
    if !common::agent::require_tool("bpftool", "bpftool") {
        return;
    }
    let fs = Bpffs::mount("bad");
    let pin = fs.pin();
    let p = pin.to_str().unwrap().to_string();
    drop(pinned_agent(&pin, &[]));

    // One agent per pin.
    let holder = pinned_agent(&pin, &[]);
    let err = refused(&pin, &[]);
    assert!(
        err.contains("another copyscope is using the state pinned at"),
        "{err}"
    );
    drop(holder);

    // Another layout version.
    let meta = pin.join("maps/PIN_META");
    let mut value: Vec<String> = b"cpyscope".iter().map(|b| b.to_string()).collect();
    value.extend(["231", "3", "0", "0"].map(String::from)); // layout 999
    value.extend(std::iter::repeat_n("0".to_string(), 36));
    let mut args = vec![
        "map",
        "update",
        "pinned",
        meta.to_str().unwrap(),
        "key",
        "0",
        "0",
        "0",
        "0",
        "value",
    ];
    args.extend(value.iter().map(String::as_str));
    bpftool(&args);
    let err = refused(&pin, &[]);
    assert!(
        err.contains("has layout version 999, this copyscope uses version"),
        "{err}"
    );
    assert!(
        err.contains(&format!("copyscope unpin --pin-path {p}")),
        "{err}"
    );

    // --repin discards it and starts afresh.
    let fresh = pinned_agent(&pin, &["--repin"]);
    assert!(
        fresh
            .log()
            .contains("pinned the programs, maps and links at"),
        "{}",
        fresh.log()
    );
    drop(fresh);

    // A map that is not what this build defines.
    let stats = pin.join("maps/SYSCALL_STATS");
    std::fs::remove_file(&stats).unwrap();
    bpftool(&[
        "map",
        "create",
        stats.to_str().unwrap(),
        "type",
        "hash",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "8",
        "name",
        "imposter",
    ]);
    let err = refused(&pin, &[]);
    assert!(err.contains("is damaged (maps/SYSCALL_STATS is"), "{err}");
    assert!(err.contains("or start with --repin"), "{err}");

    // unpin removes everything; the next agent starts a new pin.
    let out = Command::new(COPYSCOPE)
        .args(["unpin", "--pin-path", &p])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed"));
    assert!(!pin.exists(), "{} is still there", pin.display());
    // Twice is fine (uninstall scripts): nothing to unpin, exit 0.
    let out = unpin(&pin);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("nothing to unpin at {p}")),
        "{out:?}"
    );
}

fn unpin(path: &Path) -> Output {
    Command::new(COPYSCOPE)
        .args(["unpin", "--pin-path"])
        .arg(path)
        .output()
        .unwrap()
}

/// A map that is not copyscope's, pinned at `path`.
fn foreign_map(path: &Path) {
    bpftool(&[
        "map",
        "create",
        path.to_str().unwrap(),
        "type",
        "hash",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "1",
        "name",
        "foo",
    ]);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn unpin_removes_copyscopes_pins_and_names_and_leaves_everything_else() {
    require_kernel!();
    if !common::agent::require_tool("bpftool", "bpftool") {
        return;
    }
    let fs = Bpffs::mount("unpin");
    let pin = fs.pin();
    drop(pinned_agent(&pin, &[]));
    assert!(pin.join("maps/PIN_META").exists());
    // Pins of others: beside copyscope's, in a directory of their own, and one in a
    // place of copyscope's layout that is not of the kind copyscope puts there.
    foreign_map(&pin.join("foo"));
    std::fs::create_dir(pin.join("cilium")).unwrap();
    foreign_map(&pin.join("cilium/x"));
    foreign_map(&pin.join("progs/foo"));

    let out = unpin(&pin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("removed"), "{err}");
    assert!(
        err.contains(&format!(
            "left in {} what is not copyscope's: cilium, foo, progs/foo",
            pin.display()
        )),
        "{err}"
    );
    for gone in ["maps", "links", "lock"] {
        assert!(
            pin.join(gone).symlink_metadata().is_err(),
            "{gone} is still there"
        );
    }
    let progs: Vec<_> = std::fs::read_dir(pin.join("progs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(progs, ["foo"], "the programs' pins are still there");
    for kept in ["foo", "cilium/x", "progs/foo"] {
        assert!(pin.join(kept).exists(), "{kept} was removed");
    }

    // Now no copyscope pin is there: refused, with what is there, nothing removed. The
    // same for the whole file system (pointed at /sys/fs/bpf by mistake).
    for not_ours in [&pin, &fs.0] {
        let out = unpin(not_ours);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!(
                "{} is not a copyscope pin (it has no maps/PIN_META that copyscope wrote): \
                 nothing removed",
                not_ours.display()
            )),
            "{err}"
        );
    }
    let err = String::from_utf8_lossy(&unpin(&fs.0).stderr).into_owned();
    assert!(err.contains("it holds copyscope"), "{err}");
    for kept in ["foo", "cilium/x", "progs/foo"] {
        assert!(pin.join(kept).exists(), "{kept} was removed");
    }

    // A path with nothing at it: nothing to unpin, exit 0.
    let missing = fs.0.join("never-pinned");
    let out = unpin(&missing);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("nothing to unpin at {}", missing.display())),
        "{out:?}"
    );
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_pin_directory_that_another_user_owns_or_may_write_is_refused_with_the_reason() {
    require_kernel!();
    let fs = Bpffs::mount("owner");
    let pin = fs.pin();
    let p = pin.display().to_string();

    // Made by another user (the bpffs root is writable by all, as `mount -t bpf` makes
    // it): that user could move the pins about.
    std::fs::create_dir(&pin).unwrap();
    chown(&pin, 65534);
    let err = refused(&pin, &[]);
    assert!(
        err.contains(&format!("the pin directory {p} (owner ")),
        "{err}"
    );
    assert!(
        err.contains("uid 65534), mode 0755) belongs to another user"),
        "{err}"
    );
    assert!(err.contains(&format!("`rm -r {p}`")), "{err}");
    // unpin does not touch it either.
    std::fs::create_dir(pin.join("maps")).unwrap();
    let out = unpin(&pin);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to another user"),
        "{out:?}"
    );
    assert!(pin.join("maps").exists());
    std::fs::remove_dir(pin.join("maps")).unwrap();

    // Root's, but writable by all.
    chown(&pin, 0);
    chmod(&pin, 0o777);
    let err = refused(&pin, &[]);
    assert!(
        err.contains(&format!(
            "the pin directory {p} (owner root (uid 0), mode 0777) is writable by other users"
        )),
        "{err}"
    );

    // Root's and 0700, with an entry another user made.
    chmod(&pin, 0o700);
    let maps = pin.join("maps");
    std::fs::create_dir(&maps).unwrap();
    chown(&maps, 65534);
    let err = refused(&pin, &[]);
    assert!(
        err.contains(&format!(
            "{} in the pin directory {p} (owner ",
            maps.display()
        )),
        "{err}"
    );
    assert!(err.contains("belongs to another user"), "{err}");
    std::fs::remove_dir(&maps).unwrap();

    // The file system's root itself (1777): writable by all.
    let err = refused(&fs.0, &[]);
    assert!(
        err.contains("mode 1777) is writable by other users"),
        "{err}"
    );
    assert!(
        err.contains(&format!("--pin-path {}", fs.0.join("copyscope").display())),
        "{err}"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_read_only_bpffs_is_refused_with_no_pin_as_a_way_out() {
    require_kernel!();
    let fs = Bpffs::mount_with("ro", "ro");
    let err = refused(&fs.pin(), &[]);
    assert!(err.contains("is on a read-only BPF file system"), "{err}");
    assert!(
        err.contains("or run without pinning with --no-pin"),
        "{err}"
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// `COMMAND` as nobody (uid and gid 65534, no other groups).
fn as_nobody(command: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(command)
        .output()
        .expect("running setpriv")
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_pin_is_0700_and_no_other_user_can_take_its_lock() {
    require_kernel!();
    if !common::agent::require_tool("setpriv", "util-linux")
        || !common::agent::require_tool("flock", "util-linux")
    {
        return;
    }
    let fs = Bpffs::mount("lock");
    let pin = fs.pin();
    let agent = pinned_agent(&pin, &[]);
    for dir in ["", "lock", "maps", "progs", "links", "links/1"] {
        let d = pin.join(dir);
        assert_eq!(mode(&d), 0o700, "{}", d.display());
        assert_eq!(std::fs::metadata(&d).unwrap().uid(), 0, "{}", d.display());
    }
    // Another user cannot open the lock (nor the directory), so cannot hold it.
    for target in [pin.join("lock"), pin.clone()] {
        let out = as_nobody(&["flock", "--nonblock", target.to_str().unwrap(), "true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nobody locked {}", target.display());
        assert!(err.contains("Permission denied"), "{err}");
    }
    drop(agent);

    // A pin directory an earlier copyscope made 0755 is made 0700 on the next start.
    chmod(&pin, 0o755);
    let again = pinned_agent(&pin, &[]);
    assert!(
        again.log().contains("adopted the programs pinned at"),
        "{}",
        again.log()
    );
    assert_eq!(mode(&pin), 0o700);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn links_moved_out_of_the_pin_cannot_make_an_event_count_twice() {
    require_kernel!();
    let fs = Bpffs::mount("twice");
    let pin = fs.pin();
    let d = scratch("restart-twice");
    drop(pinned_agent(&pin, &[]));
    // The links, still attached, moved out of the pin: the next agent finds none to
    // adopt, and must not attach a second set beside them.
    let moved = fs.0.join("moved");
    std::fs::rename(pin.join("links"), &moved).unwrap();
    let err = refused(&pin, &[]);
    assert!(
        err.contains(&format!(
            "programs are still attached and counting into the maps pinned at {} through \
             links that are not pinned there (",
            pin.display()
        )),
        "{err}"
    );
    assert!(err.contains("would count every event twice"), "{err}");

    // Once they are gone, an agent attaches its own and counts each call once.
    std::fs::remove_dir_all(&moved).unwrap();
    let agent = pinned_agent(&pin, &[]);
    let out = d.join("pwrite.json");
    let st = Command::new(WORKLOAD)
        .args(["--comm", "cs-once", "pwrite"])
        .arg(d.join("pwrite.dat"))
        .args(["1000", "1"])
        .env("COPYSCOPE_WORKLOAD_OUT", &out)
        .stdout(Stdio::null())
        .status()
        .expect("running the workload");
    assert!(st.success(), "the workload failed: {st}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["calls"].as_u64(), Some(1000), "{v}");
    let n = wait_for(Duration::from_secs(20), "the agent to count", || {
        counted(&agent, "cs-once").filter(|&n| n >= 1000)
    });
    assert_eq!(n, 1000, "1,000 pwrite calls were counted as {n}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_pin_path_off_bpffs_is_refused() {
    require_kernel!();
    let d = scratch("restart-offbpffs");
    let err = refused(&d.join("pin"), &[]);
    assert!(
        err.contains("is not on a BPF file system: mount one with `mount -t bpf bpf /sys/fs/bpf`"),
        "{err}"
    );
    // Without --pin-path, when /sys/fs/bpf is not bpffs, the agent runs unpinned and
    // says so (where it is mounted, the default pin would be the host's: not tried).
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    if mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf"))
    {
        eprintln!("/sys/fs/bpf is mounted here: the unpinned default is not tried");
        return;
    }
    let agent = common::agent::launch(&[], &[]);
    let said = agent.log();
    assert!(
        said.contains("copyscope: not pinning: /sys/fs/bpf is not a BPF file system"),
        "{said}"
    );
}
