//! What the guests' `copyscope probes` said: faults, each probe's method, and the README's
//! kernel support table built from them.

use super::*;

/// The families of a kernel test binary's `--list --format terse` output (the first part
/// of each `family::test: test` line), in order, each with its number of tests.
pub fn families(list: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for l in list.lines().filter_map(|l| l.strip_suffix(": test")) {
        let family = l.split_once("::").map_or(l, |(f, _)| f);
        match out.iter_mut().find(|(f, _)| f == family) {
            Some((_, n)) => *n += 1,
            None => out.push((family.to_string(), 1)),
        }
    }
    out
}

/// Faults in a guest's `copyscope probes --json`: the whole load, or a required probe,
/// failing for a reason that is not a missing kernel feature.
pub fn probe_faults(v: &serde_json::Value) -> Vec<String> {
    use copyscope_common::reasons::MISSING_FEATURE;
    let excused = |r: &serde_json::Value| r.as_str().is_some_and(|r| MISSING_FEATURE.contains(&r));
    let mut out = Vec::new();
    if v.is_null() {
        out.push("copyscope probes --json printed no document".to_string());
    }
    if let Some(e) = v.get("error")
        && !excused(&e["reason"])
    {
        out.push(format!(
            "copyscope cannot load ({}): {}",
            e["reason"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ));
    }
    for p in v["probes"].as_array().into_iter().flatten() {
        if p["required"] == true && !p["reason"].is_null() && !excused(&p["reason"]) {
            out.push(format!(
                "required probe {}/{} ({}): {}",
                p["family"].as_str().unwrap_or("?"),
                p["hook"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?"),
                p["detail"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// family/hook -> the method used, or "-", from `copyscope probes --json`.
pub(super) fn probe_methods(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let key = format!(
                "{}/{}",
                p["family"].as_str().unwrap_or("?"),
                p["hook"].as_str().unwrap_or("?")
            );
            let m = if p["attached"] == true {
                p["method"].as_str().unwrap_or("?")
            } else {
                "-"
            };
            (key, m.to_string())
        })
        .collect()
}

/// Probe methods on this host, for the support table's last column.
pub(super) fn host_probes() -> BTreeMap<String, String> {
    let bin = root().join("target/x86_64-unknown-linux-musl/release/copyscope");
    let Ok(out) = Command::new(bin).args(["probes", "--json"]).output() else {
        return BTreeMap::new();
    };
    probe_methods(&serde_json::from_slice(&out.stdout).unwrap_or_default())
}

/// A Markdown table: per probe, the method each kernel used.
pub fn support_table(
    results: &[GuestResult],
    host: &BTreeMap<String, String>,
    host_release: &str,
) -> String {
    let mut keys: Vec<&String> = results
        .iter()
        .flat_map(|r| r.probes.keys())
        .chain(host.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let mut t = String::from("| probe |");
    for r in results {
        let _ = write!(t, " {} |", r.release);
    }
    let _ = writeln!(t, " {host_release} (host) |");
    t.push_str("|---|");
    for _ in 0..=results.len() {
        t.push_str("---|");
    }
    t.push('\n');
    for k in keys {
        let _ = write!(t, "| {k} |");
        for r in results {
            let _ = write!(t, " {} |", r.probes.get(k).map_or("?", String::as_str));
        }
        let _ = writeln!(t, " {} |", host.get(k).map_or("?", String::as_str));
    }
    t.push_str("| kernel tests passed / failed |");
    for r in results {
        let _ = write!(t, " {} / {} |", r.passed, r.failed);
    }
    t.push_str(" see `cargo xtask test` |\n");
    t
}
