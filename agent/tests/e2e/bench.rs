//! `copyscope bench`: every method delivers exactly the file's bytes, copyscope's counts of
//! each sender agree with what the method does (read()+write() of N bytes copies 2N
//! through the CPU, sendfile none), the plot is drawn, and bad input is one clear error.

use crate::common;

use std::process::{Command, Output};

use common::{COPYSCOPE, agent::require_tool, probe_missing, scratch};
use serde_json::Value;

const N: u64 = 8 << 20;

fn bench(args: &[&str]) -> Output {
    Command::new(COPYSCOPE)
        .arg("bench")
        .args(args)
        .output()
        .expect("running copyscope bench")
}

fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "copyscope bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench --json prints JSON")
}

/// The median line of one method in one cache state.
fn line<'a>(r: &'a Value, cache: &str, method: &str) -> &'a Value {
    r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["cache"] == cache && l["method"] == method)
        .unwrap_or_else(|| panic!("no {method} {cache} line in {r:#}"))
}

fn counts(l: &Value) -> (u64, u64, u64, u64) {
    let c = &l["counts"];
    let f = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{k} in {c}"));
    (
        f("cpu_copy_to_user"),
        f("cpu_copy_from_user"),
        f("zero_copy"),
        f("mode_switches"),
    )
}

/// Start-up of the sender (exec, its own files) copies a little; the transfer is N.
const NOISE: u64 = 256 << 10;

fn near(got: u64, want: u64) -> bool {
    got >= want && got <= want + NOISE
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn every_method_to_a_socket_delivers_the_file_and_the_counts_match_the_method() {
    require_kernel!();
    let d = scratch("bench-tcp");
    let r = report(&bench(&[
        "--size",
        "8M",
        "--runs",
        "1",
        "--json",
        "--dir",
        d.to_str().unwrap(),
    ]));
    assert_eq!(r["setup"]["counted"], true);
    let runs = r["runs"].as_array().unwrap();
    // Five methods, cold and warm.
    assert_eq!(runs.len(), 10, "{r:#}");
    for run in runs {
        assert_eq!(run["verified"], true, "checksum on the receiver: {run}");
        assert_eq!(run["sent"]["bytes"], N, "{run}");
    }
    for cache in ["cold", "warm"] {
        // read()+write(): N to user memory, N back from it.
        let (to, from, zero, rw_switches) = counts(line(&r, cache, "read-write"));
        assert!(
            near(to, N) && near(from, N),
            "read-write {cache}: {to} {from}"
        );
        assert!(zero < NOISE, "{zero}");
        // sendfile: nothing through user memory, N zero-copy, far fewer switches.
        let (to, from, zero, sf_switches) = counts(line(&r, cache, "sendfile"));
        assert!(to + from < NOISE, "sendfile {cache} copied {to} + {from}");
        assert!(near(zero, N), "sendfile {cache}: {zero}");
        assert!(
            sf_switches * 10 < rw_switches,
            "{sf_switches} vs {rw_switches}"
        );
        // splice: file -> pipe and pipe -> socket, both zero-copy.
        let (to, from, zero, _) = counts(line(&r, cache, "splice"));
        assert!(to + from < NOISE, "splice {cache} copied {to} + {from}");
        assert!(near(zero, 2 * N), "splice {cache}: {zero}");
        // mmap()+write(): one copy, from the mapping into the socket.
        let (to, from, _, _) = counts(line(&r, cache, "mmap-write"));
        assert!(
            to < NOISE && near(from, N),
            "mmap-write {cache}: {to} {from}"
        );
        // O_DIRECT through io_uring: no page cache, the send is the one CPU copy.
        let l = line(&r, cache, "direct-uring");
        let (to, from, _, _) = counts(l);
        assert!(
            to < NOISE && near(from, N),
            "direct-uring {cache}: {to} {from}"
        );
        assert_eq!(l["counts"]["page_cache_misses"], 0, "{l}");
        // Its reads, through io_uring, are O_DIRECT bytes (the uring family).
        if probe_missing("uring", "io_uring_complete").is_none() {
            assert_eq!(l["counts"]["direct_io"], N, "direct-uring {cache}: {l}");
        }
    }
    // A cold read-write fills the page cache with the file: misses, not hits.
    let cold = &line(&r, "cold", "read-write")["counts"];
    assert!(
        cold["page_cache_misses"].as_u64().unwrap() >= N / 4096 / 2,
        "{cold}"
    );
    let warm = &line(&r, "warm", "read-write")["counts"];
    assert!(
        warm["page_cache_hits"].as_u64().unwrap() >= N / 4096,
        "{warm}"
    );
    // Every claim has a verdict and its evidence; the mechanism one is measured here.
    let claims = r["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 4);
    assert_eq!(claims[3]["verdict"], "held", "{:#}", claims[3]);
    for c in claims {
        assert_ne!(c["verdict"], "not_measured", "{c}");
        assert!(!c["evidence"].as_str().unwrap().is_empty());
    }
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn file_to_file_methods_deliver_the_file_and_copy_file_range_copies_nothing_through_the_cpu() {
    require_kernel!();
    let d = scratch("bench-file");
    let r = report(&bench(&[
        "--size",
        "8M",
        "--runs",
        "2",
        "--cache",
        "warm",
        "--to",
        "file",
        "--json",
        "--dir",
        d.to_str().unwrap(),
    ]));
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 12, "six methods, two runs");
    for run in runs {
        assert_eq!(run["verified"], true, "the copy's checksum: {run}");
    }
    let (to, from, zero, _) = counts(line(&r, "warm", "copy-file-range"));
    assert!(to + from < NOISE && near(zero, N), "{to} {from} {zero}");
    let (to, from, _, _) = counts(line(&r, "warm", "read-write"));
    assert!(near(to, N) && near(from, N), "{to} {from}");
    // Nothing is left behind in the directory.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn without_bpf_permission_it_still_measures_and_says_why() {
    require_kernel!();
    if !require_tool("setpriv", "util-linux") {
        return;
    }
    let d = scratch("bench-nocaps");
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-all", "--", COPYSCOPE, "bench"])
        .args(["--size", "1M", "--runs", "1", "--cache", "warm", "--json"])
        .args(["--methods", "read-write,sendfile", "--dir"])
        .arg(&d)
        .output()
        .unwrap();
    let r = report(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("measuring without copyscope's counts"),
        "{err}"
    );
    assert_eq!(r["setup"]["counted"], false);
    for run in r["runs"].as_array().unwrap() {
        assert_eq!(run["verified"], true);
        assert!(run["counts"].is_null());
    }
    let mechanism = &r["claims"][3];
    assert_eq!(mechanism["verdict"], "not_measured", "{mechanism}");
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn the_plot_is_drawn_as_svg_or_png() {
    require_kernel!();
    let d = scratch("bench-plot");
    for name in ["bench.svg", "bench.png"] {
        let plot = d.join(name);
        let out = bench(&[
            "--size",
            "1M",
            "--runs",
            "1",
            "--methods",
            "read-write,sendfile",
            "--dir",
            d.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("The claims, on this machine"), "{text}");
        let data = std::fs::read(&plot).unwrap();
        if name.ends_with(".png") {
            assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n");
            assert!(data.len() > 10_000, "a drawn image, not an empty one");
        } else {
            let svg = String::from_utf8(data).unwrap();
            for want in ["<svg", "read-write", "sendfile", "Throughput", "cold cache"] {
                assert!(svg.contains(want), "{want} in the SVG");
            }
        }
    }
}

#[test]
fn bad_input_is_one_clear_error() {
    let d = scratch("bench-bad");
    let cases: &[(&[&str], &str)] = &[
        (&["--size", "0"], "more than 0 bytes"),
        (&["--size", "12Q"], "unknown size suffix"),
        (
            &["--methods", "read-write,teleport"],
            "unknown method \"teleport\"",
        ),
        (&["--methods", "copy-file-range"], "use --to file"),
        (&["--dir", "/proc"], "cannot create the test file in /proc"),
        (
            &["--dir", "/nonexistent/dir"],
            "give --dir an existing directory",
        ),
        (&["--plot", "out.gif"], "name the file .svg or .png"),
        (&["--dir", "/dev/shm"], "is tmpfs"),
        (&["--runs", "0"], "--runs"),
    ];
    for (args, want) in cases {
        let mut a: Vec<&str> = args.to_vec();
        if !a.contains(&"--dir") {
            a.extend(["--dir", d.to_str().unwrap()]);
        }
        let out = bench(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: expected an error with {want:?}, got {:?}: {err}",
            out.status
        );
        assert!(err.lines().count() <= 4, "{args:?}: short: {err}");
    }
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "no file left");
}
