//! The binary's behaviour on bad input and in a broken environment: one clear sentence,
//! a non-zero exit, no backtrace.

use crate::common;

use std::process::Command;

use common::COPYSCOPE;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(COPYSCOPE)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_clean_error(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0);
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "no panic: {stderr}"
    );
}

#[test]
fn unknown_flags_and_bad_values_are_rejected() {
    let (code, _, err) = run(&["snapshot", "--frobnicate"], &[]);
    assert_clean_error(code, &err, "unexpected argument '--frobnicate'");
    let (code, _, err) = run(&["snapshot", "--duration", "soon"], &[]);
    assert_clean_error(code, &err, "not a number of seconds");
    let (code, _, err) = run(&["snapshot", "--pid", "many"], &[]);
    assert_clean_error(code, &err, "invalid value 'many' for '--pid <PID>'");
    let (code, _, err) = run(&["nonsense"], &[]);
    assert_clean_error(code, &err, "unrecognized subcommand");
    let (code, _, err) = run(&["run", "--disable-families", "sched,nope"], &[]);
    assert_clean_error(code, &err, "no probe family \"nope\"");
    let (code, _, err) = run(&["snapshot"], &[("COPYSCOPE_DISABLE_FAMILIES", "syscalls")]);
    assert_clean_error(code, &err, "the syscalls family cannot be turned off");
}

#[test]
fn version_and_help_work_without_privileges() {
    let (code, out, _) = run(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("copyscope "), "{out}");
    let (code, out, _) = run(&["snapshot", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--duration") && out.contains("COMMAND"),
        "{out}"
    );
}

/// Run copyscope as an unprivileged user (needs root to switch, and setpriv).
#[test]
fn without_bpf_permission_says_how_to_get_it() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--version").output().is_err()
    {
        // As an unprivileged user, copyscope itself is the unprivileged case.
        let (code, _, err) = run(&["probes"], &[]);
        if !err.contains("built without its eBPF programs") {
            assert_clean_error(code, &err, "needs permission to load eBPF programs");
        }
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            COPYSCOPE,
            "snapshot",
            "-d",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("built without its eBPF programs") {
        skip!("built without eBPF programs");
    }
    assert_clean_error(
        out.status.code().unwrap_or(-1),
        &err,
        "needs permission to load eBPF programs",
    );
    assert!(err.contains("CAP_BPF"), "{err}");
}

#[test]
fn missing_btf_and_tracefs_are_explained() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip!("the checks after the permission check need root");
    }
    let (code, _, err) = run(&["probes"], &[("COPYSCOPE_BTF", "/nonexistent/vmlinux")]);
    if err.contains("built without its eBPF programs") {
        skip!("built without eBPF programs");
    }
    assert_clean_error(code, &err, "exposes no BTF (CONFIG_DEBUG_INFO_BTF)");
    let (code, _, err) = run(&["probes"], &[("COPYSCOPE_TRACEFS", "/nonexistent")]);
    assert_clean_error(code, &err, "mount -t tracefs");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn a_command_that_cannot_run_is_reported() {
    if common::kernel_unavailable().is_some() {
        skip!("needs the kernel side");
    }
    let (code, _, err) = run(&["snapshot", "--", "/nonexistent/program"], &[]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("cannot run the command"), "{err}");
}

#[test]
fn run_refuses_bad_flags_addresses_and_thresholds() {
    let (code, _, err) = run(&["run", "--frobnicate"], &[]);
    assert_clean_error(code, &err, "unexpected argument '--frobnicate'");
    let (code, _, err) = run(&["run", "--listen", "localhost"], &[]);
    assert_clean_error(code, &err, "is not an address to listen on");
    let (code, _, err) = run(&["run"], &[("COPYSCOPE_LISTEN", "10.0.0.1:http")]);
    assert_clean_error(code, &err, "is not an address to listen on");
    let (code, _, err) = run(&["run", "--interval", "0"], &[]);
    assert_clean_error(code, &err, "duration must be more than 0 and at most 86400");
    let (code, _, err) = run(&["run", "--interval", "0.05"], &[]);
    assert_clean_error(code, &err, "must be at least 0.1 s (and at most 86400 s)");
    let (code, _, err) = run(&["run"], &[("COPYSCOPE_NO_PIN", "nope")]);
    assert_clean_error(code, &err, "invalid value 'nope'");
    let (code, _, err) = run(&["run", "--advise-min-ratio", "1.5"], &[]);
    assert_clean_error(code, &err, "must be between 0 and 1");
    let (code, _, err) = run(&["run", "--advise-min-ratio", "0"], &[]);
    assert_clean_error(code, &err, "minimum volume ratio must be above 0");
    let (code, _, err) = run(&["run", "--advise-min-rate", "fast"], &[]);
    assert_clean_error(code, &err, "is not a number");
    let (code, _, err) = run(&["run", "--max-workloads", "0"], &[]);
    assert_clean_error(code, &err, "--max-workloads must be at least 1");
    let (code, _, err) = run(&["snapshot", "--advise-zero-copy-share", "1.5"], &[]);
    assert_clean_error(code, &err, "must be between 0 and 1");
}

#[test]
fn run_reports_a_port_in_use_before_loading_anything() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (code, _, err) = run(&["run", "--listen", &addr], &[]);
    assert_clean_error(code, &err, "Address already in use");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("--listen"), "{err}");
}

/// `run` measures the copy bandwidth and a syscall's cost in a child process of its own
/// (so that its 64 MiB of buffers are never the agent's): the hidden `calibrate` command
/// prints them as JSON.
#[test]
fn calibrate_prints_plausible_costs_as_json() {
    let (code, out, err) = run(&["calibrate"], &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let bw = v["memcpy_bytes_per_second"].as_f64().unwrap();
    let sys = v["syscall_seconds"].as_f64().unwrap();
    assert!((1e8..1e12).contains(&bw), "memcpy bandwidth {bw} B/s");
    assert!((1e-9..1e-4).contains(&sys), "syscall cost {sys} s");
}

/// The commands a user can type (hidden ones aside), from the clap definitions.
fn subcommands() -> Vec<String> {
    use clap::CommandFactory as _;
    copyscope::cli::Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

#[test]
fn completion_scripts_know_every_command_and_bash_parses_its_own() {
    let commands = subcommands();
    assert!(commands.len() >= 7, "{commands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, err) = run(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        for c in &commands {
            assert!(script.contains(c.as_str()), "{shell} completion lacks {c}");
        }
        // The options of a command too.
        assert!(script.contains("cacert"), "{shell}");
        assert!(script.contains("password-file"), "{shell}");
    }
    let (_, bash, _) = run(&["completions", "bash"], &[]);
    // Every command is a case of the script's command dispatch.
    for c in &commands {
        assert!(
            bash.contains(&format!("copyscope,{c})")),
            "bash completion has no case for {c}"
        );
    }
    let check = Command::new("bash")
        .args(["-n", "-c", &bash])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Completing `copyscope sn` in bash offers snapshot.
    let complete = Command::new("bash")
        .args([
            "-c",
            &format!(
                "{bash}\nCOMP_WORDS=(copyscope sn); COMP_CWORD=1; COMP_LINE='copyscope sn'; \
                 COMP_POINT=${{#COMP_LINE}}; _copyscope copyscope sn copyscope; \
                 printf '%s\\n' \"${{COMPREPLY[@]}}\""
            ),
        ])
        .output()
        .unwrap();
    let offered = String::from_utf8_lossy(&complete.stdout);
    assert!(
        offered.lines().any(|l| l == "snapshot"),
        "offered {offered:?}: {}",
        String::from_utf8_lossy(&complete.stderr)
    );
    let (code, _, err) = run(&["completions", "tcsh"], &[]);
    assert_clean_error(code, &err, "invalid value 'tcsh'");
}

#[test]
fn the_manual_page_has_every_command_and_its_options() {
    let (code, page, err) = run(&["man"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH copyscope"),
        "{page}"
    );
    for c in subcommands() {
        assert!(
            page.contains(&format!(".SH \"COPYSCOPE {}\"", c.to_uppercase())),
            "no section for {c}"
        );
    }
    for option in [
        "\\-\\-web\\-config",
        "\\-\\-cacert",
        "\\-\\-container",
        "\\-\\-pod",
    ] {
        assert!(page.contains(option), "{option} is not in the page");
    }
    // The page renders (man-db's man, when installed) with no warnings.
    if Command::new("man").arg("--version").output().is_ok() {
        let d = common::scratch("man");
        let file = d.join("copyscope.1");
        std::fs::write(&file, &page).unwrap();
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&file)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("copyscope top"), "{text}");
    }
}

#[test]
fn pod_filters_say_where_pod_names_come_from() {
    let (code, _, err) = run(&["snapshot", "--pod", "web-0"], &[]);
    assert_clean_error(code, &err, "--pod needs the pods of this node");
    let (code, _, err) = run(&["top", "--pod", "web-0"], &[]);
    assert_clean_error(code, &err, "with --from URL");
    let (code, _, err) = run(&["snapshot", "--container", "a/b"], &[]);
    assert_clean_error(code, &err, "is not a container id");
}
