//! The DaemonSet's capabilities are enough, and each is needed: the real agent runs with
//! exactly the capabilities deploy/kubernetes/copyscope.yaml grants (uid 0, bounding set
//! cut to them, as a container runtime does), attaches what full root attaches, and says
//! which capability is missing when one is taken away.

use crate::common;

use std::process::Command;

use common::{
    COPYSCOPE,
    agent::{Agent, Guard, require_tool, start_agent, start_agent_under, wait_for},
};

/// The `capabilities.add` list of the copyscope container in the rendered manifests.
fn granted() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/copyscope.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim_end())
        .skip_while(|l| !l.trim_start().starts_with("capabilities:"));
    lines.next().expect("the DaemonSet sets capabilities");
    let mut caps = Vec::new();
    let mut in_add = false;
    for l in lines {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("add:") {
            in_add = true;
            // Flow style: add: ["BPF", "PERFMON"]
            let rest = rest.trim().trim_start_matches('[').trim_end_matches(']');
            caps.extend(
                rest.split(',')
                    .map(|c| c.trim().trim_matches('"').to_string())
                    .filter(|c| !c.is_empty()),
            );
        } else if in_add && t.starts_with("- ") {
            caps.push(t[2..].trim().trim_matches('"').to_string());
        } else if t.is_empty() {
            continue;
        } else if in_add || !(t.starts_with("drop:") || t.starts_with("- ")) {
            break;
        }
    }
    assert!(!caps.is_empty(), "no capabilities.add in {path}");
    caps
}

/// setpriv's spelling: "BPF" -> "+bpf".
fn bounding(caps: &[String]) -> String {
    let mut s = "-all".to_string();
    for c in caps {
        s.push_str(&format!(",+{}", c.to_ascii_lowercase()));
    }
    s
}

fn probes(bounding_set: Option<&str>) -> (bool, String) {
    let mut c = match bounding_set {
        Some(b) => {
            let mut c = Command::new("setpriv");
            c.args(["--bounding-set", b, "--", COPYSCOPE]);
            c
        }
        None => Command::new(COPYSCOPE),
    };
    let out = c.arg("probes").output().expect("running copyscope probes");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn the_daemonsets_capabilities_attach_everything_root_attaches() {
    require_kernel!();
    if !require_tool("setpriv", "util-linux") {
        return;
    }
    let caps = granted();
    for needed in ["BPF", "PERFMON"] {
        assert!(caps.iter().any(|c| c == needed), "{needed} in {caps:?}");
    }
    let (ok_root, as_root) = probes(None);
    let (ok, limited) = probes(Some(&bounding(&caps)));
    assert!(ok_root && ok, "{limited}");
    assert_eq!(
        limited, as_root,
        "the same probes attach with {caps:?} as with full root"
    );

    // The agent itself, under the same limits, serves its metrics.
    let agent = start_agent_under(
        &["setpriv", "--bounding-set", &bounding(&caps), "--"],
        &["--interval", "1"],
    );
    wait_for(
        std::time::Duration::from_secs(30),
        "the limited agent's metrics",
        || {
            agent
                .metrics()
                .contains("copyscope_syscalls_total{")
                .then_some(())
        },
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn without_bpf_or_perfmon_the_agent_names_the_missing_capability() {
    require_kernel!();
    if !require_tool("setpriv", "util-linux") {
        return;
    }
    let caps = granted();
    for dropped in ["BPF", "PERFMON"] {
        let rest: Vec<String> = caps.iter().filter(|c| *c != dropped).cloned().collect();
        let (ok, out) = probes(Some(&bounding(&rest)));
        assert!(!ok, "probes attached without {dropped}:\n{out}");
        assert!(
            out.contains(&format!("lacks CAP_{dropped}")),
            "the error names CAP_{dropped}:\n{out}"
        );
    }
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn reading_another_users_open_files_needs_the_granted_ptrace_and_dac_capabilities() {
    require_kernel!();
    if !require_tool("setpriv", "util-linux") {
        return;
    }
    let caps = granted();
    let d = common::scratch("caps-fd");
    let file = d.join("f");
    std::fs::write(&file, vec![7u8; 12345]).unwrap();
    // A process of another user holding the file open on its stdin (opened here, as root:
    // the scratch directory need not be open to that user).
    let holder = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "sleep",
            "60",
        ])
        .stdin(std::fs::File::open(&file).unwrap())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let _holder = Guard(holder);
    let fd = format!("/proc/{pid}/fd/0");
    // Once setpriv has become the other user and run sleep.
    wait_for(
        std::time::Duration::from_secs(5),
        "the holder to run as nobody",
        || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "sleep" && status.lines().any(|l| l.starts_with("Uid:\t65534")))
                .then_some(())
        },
    );
    let size_with = |caps: &[String]| {
        let out = Command::new("setpriv")
            .args([
                "--bounding-set",
                &bounding(caps),
                "--",
                "stat",
                "-L",
                "-c",
                "%s",
                &fd,
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(size_with(&caps).as_deref(), Some("12345"));
    for needed in ["SYS_PTRACE", "DAC_READ_SEARCH"] {
        if caps.iter().any(|c| c == needed) {
            let rest: Vec<String> = caps.iter().filter(|c| *c != needed).cloned().collect();
            assert_eq!(size_with(&rest), None, "{needed} is needed");
        }
    }
}

/// CapEff and CapPrm of every thread of a process.
fn thread_caps(pid: u32) -> Vec<(u64, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            let field = |name: &str| {
                let v = status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{name} in {status}"));
                u64::from_str_radix(v.trim(), 16).unwrap()
            };
            (field("CapEff:"), field("CapPrm:"))
        })
        .collect()
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn once_attached_the_agent_keeps_only_what_collecting_needs_and_still_counts() {
    require_kernel!();
    // CAP_BPF (39), CAP_SYS_PTRACE (19), CAP_DAC_READ_SEARCH (2).
    const KEPT: u64 = 1 << 39 | 1 << 19 | 1 << 2;
    let agent = start_agent(&["--interval", "1"]);
    let pid = agent.child.0.id();
    let caps = thread_caps(pid);
    assert!(caps.len() > 2, "the agent's threads: {caps:?}");
    for (eff, prm) in &caps {
        assert_eq!((*eff, *prm), (KEPT, KEPT), "every thread: {caps:x?}");
    }
    let log = agent.log();
    assert!(
        log.contains("keeping CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF and dropping")
            && log.contains("(bounding set too); no new privileges (NoNewPrivs)"),
        "it says what it kept:\n{log}"
    );
    assert!(
        log.contains("still uid 0") && log.contains("give --user a dedicated user"),
        "it says why it stays uid 0:\n{log}"
    );
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        assert!(
            status.lines().any(|l| l == "NoNewPrivs:\t1"),
            "every thread has no_new_privs: {status}"
        );
    }
    counts_a_workload(&agent, "caps-after");
}

/// Collection goes on with what is left: an exact count of a workload's calls. The
/// workload runs as a copy named `name` (a command name of its own: the agents of tests
/// running at the same time count every process).
fn counts_a_workload(agent: &Agent, name: &str) {
    assert!(
        name.len() <= 15,
        "{name}: the kernel cuts command names at 15"
    );
    let d = common::scratch(name);
    let file = d.join("f");
    std::fs::write(&file, [1u8; 64]).unwrap();
    let workload = d.join(name);
    std::fs::copy(common::WORKLOAD, &workload).unwrap();
    let out = common::output_of_copied(Command::new(&workload).args([
        "pread",
        file.to_str().unwrap(),
        "3000",
        "8",
    ]));
    assert!(out.status.success());
    // 3000 of its own, and the dynamic loader's few.
    let series = format!(
        "copyscope_syscalls_total{{comm=\"{name}\",container_id=\"\",syscall=\"pread64\",fd_kind=\"file\"}} "
    );
    let calls = wait_for(
        std::time::Duration::from_secs(20),
        "the workload's count",
        || {
            agent.metrics().lines().find_map(|l| {
                l.strip_prefix(&series)
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|v| *v >= 3000)
            })
        },
    );
    assert!(calls <= 3004, "{calls}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn under_the_daemonsets_capabilities_the_agent_drops_perfmon_once_attached() {
    require_kernel!();
    if !require_tool("setpriv", "util-linux") {
        return;
    }
    let caps = granted();
    let agent = start_agent_under(
        &["setpriv", "--bounding-set", &bounding(&caps), "--"],
        &["--interval", "1"],
    );
    let said = agent.log();
    assert!(
        said.contains(
            "keeping CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF and dropping 1 other capabilities"
        ) && !said.contains("bounding set"),
        "{said}"
    );
    let pid = agent.child.0.id();
    for (eff, _) in thread_caps(pid) {
        assert_eq!(eff & (1 << 38), 0, "CAP_PERFMON is gone");
        assert_ne!(eff & (1 << 39), 0, "CAP_BPF stays");
    }
}

/// nobody's uid and gid in /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == "nobody")
        .expect("nobody in /etc/passwd");
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// The Uid:, Gid: and Groups: lines of every thread of a process.
fn thread_ids(pid: u32) -> Vec<[String; 3]> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            ["Uid:", "Gid:", "Groups:"].map(|name| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{name} in {status}"))
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .collect()
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn as_user_nobody_every_thread_is_nobody_keeps_the_capabilities_and_still_counts() {
    require_kernel!();
    const KEPT: u64 = 1 << 39 | 1 << 19 | 1 << 2;
    let (uid, gid) = nobody();
    let agent = start_agent(&["--interval", "1", "--user", "nobody"]);
    let pid = agent.child.0.id();
    let ids = thread_ids(pid);
    assert!(ids.len() > 2, "the agent's threads: {ids:?}");
    for t in &ids {
        assert_eq!(
            t,
            &[
                format!("{uid} {uid} {uid} {uid}"),
                format!("{gid} {gid} {gid} {gid}"),
                format!("{gid}"),
            ],
            "every thread: real, effective, saved and file system ids, one group: {ids:?}"
        );
    }
    for (eff, prm) in thread_caps(pid) {
        assert_eq!((eff, prm), (KEPT, KEPT), "{eff:x} {prm:x}");
    }
    let log = agent.log();
    let said = log
        .lines()
        .find(|l| l.starts_with("copyscope: switched to user "))
        .unwrap_or_else(|| panic!("it says whom it became:\n{log}"));
    assert!(
        said.starts_with(&format!(
            "copyscope: switched to user nobody (uid {uid}) and group "
        )) && said.ends_with(&format!(
            "(gid {gid}), keeping CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF"
        )),
        "{said}"
    );
    counts_a_workload(&agent, "caps-nobody");
}

#[test]
fn an_unknown_user_is_refused_before_the_probes_load() {
    let out = Command::new(COPYSCOPE)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "no-such-user-copyscope",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim(),
        "copyscope: --user \"no-such-user-copyscope\": no user \"no-such-user-copyscope\" in \
/etc/passwd (in an image without one, give numeric ids: UID:GID)"
    );
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn switching_user_without_setuid_and_setgid_is_refused_before_the_probes_load() {
    require_kernel!();
    if !require_tool("setpriv", "util-linux") {
        return;
    }
    // The DaemonSet's capabilities, which do not include SETUID and SETGID.
    let caps = granted();
    let out = Command::new("setpriv")
        .args(["--bounding-set", &bounding(&caps), "--", COPYSCOPE])
        .args(["run", "--listen", "127.0.0.1:0", "--user", "nobody"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs CAP_SETUID and CAP_SETGID") && !err.contains("attached"),
        "{err}"
    );
}
