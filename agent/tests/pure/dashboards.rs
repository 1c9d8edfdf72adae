//! The Grafana dashboards (dashboards/) and the Prometheus rules (deploy/prometheus/): their
//! shape, the names they use, promtool's verdict, and every panel's and variable's query
//! answered by a real Prometheus that scrapes a real agent and evaluates the rules while
//! one workload serves a file through user memory from a pod (a fake container that a
//! fake Kubernetes API names) and another misses the page cache on the host.

use crate::common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    WORKLOAD,
    agent::{Guard, require_tool, wait_for},
    kube::{FakeApi, FakeContainer, Reply, fixture},
    probes_json,
    prometheus::{Prometheus, urlencode},
    scratch, write_file,
};
use serde_json::{Value, json};

const NODE: &str = "test-node";
/// The `cluster` label a multi-cluster query layer would add (the dashboards' cluster
/// variable lists it; its All value also matches series without one).
const CLUSTER: &str = "test-cluster";
/// The serving workload's pod (tests/fixtures/kube/pods-list.json).
const NAMESPACE: &str = "shop";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// (file name, dashboard) for each dashboards/*.json.
fn dashboards() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(repo().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let d = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, d)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, those inside rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// ("panel title (refId)", query) of every panel target.
fn exprs(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            p["targets"].as_array().into_iter().flatten().map(|t| {
                (
                    format!(
                        "{} ({})",
                        p["title"].as_str().unwrap(),
                        t["refId"].as_str().unwrap()
                    ),
                    t["expr"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect()
}

fn variables(d: &Value) -> &Vec<Value> {
    d["templating"]["list"].as_array().unwrap()
}

/// A query variable's query (`label_values(SELECTOR, LABEL)`).
fn variable_query(v: &Value) -> Option<&str> {
    (v["type"] == "query").then(|| {
        v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("a query variable has a query")
    })
}

/// `label_values(SELECTOR, LABEL)` -> (SELECTOR, LABEL).
fn label_values(q: &str) -> (&str, &str) {
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a label_values query: {q}"));
    let (sel, label) = inner.rsplit_once(',').unwrap();
    (sel.trim(), label.trim())
}

/// The query with Grafana's variables replaced: `$name`, `${name}`, `${name:format}`.
/// A variable `values` does not know is a mistake in the dashboard.
fn substitute(q: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = q;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {q}"));
            let name = braced[..end].split(':').next().unwrap();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = values
            .get(name)
            .unwrap_or_else(|| panic!("unknown variable ${name} in {q}"));
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Maximal runs of the characters of metric and rule names.
fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.is_empty())
}

/// The copyscope metric names a text names (not the bare prefix).
fn metric_names(text: &str) -> BTreeSet<String> {
    tokens(text)
        .filter(|t| t.starts_with("copyscope_") && t.len() > "copyscope_".len() && !t.contains(':'))
        .map(str::to_string)
        .collect()
}

/// The recording rules a text names.
fn rule_names(text: &str) -> BTreeSet<String> {
    tokens(text)
        .filter(|t| t.starts_with("copyscope:"))
        .map(str::to_string)
        .collect()
}

/// The names after `- KEY: ` in rules.yml (`record` or `alert`).
fn defined(rules: &str, key: &str) -> BTreeSet<String> {
    let prefix = format!("- {key}: ");
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .map(|n| n.trim().to_string())
        .collect()
}

fn all_values() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("cluster", ".*"),
        ("node", ".*"),
        ("namespace", ".*"),
        ("pod", ".*"),
        ("container", ".*"),
        ("workload", ".*"),
        // Grafana's values for a 1 h range, 1 s scrapes and ~1 s per point.
        ("__range", "1h"),
        ("__rate_interval", "4s"),
        ("__interval", "1s"),
    ])
}

/// (function, window) of every range selector `[WINDOW]` in a query.
fn windows(q: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = q;
    while let Some(i) = rest.find('[') {
        let before = &rest[..i];
        let end = rest[i..].find(']').map(|e| i + e).expect("an unclosed [");
        let window = rest[i + 1..end].to_string();
        // The function is the last name before the `(` that encloses the selector.
        let func = before
            .rfind('(')
            .map(|o| {
                before[..o]
                    .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        out.push((func, window));
        rest = &rest[end + 1..];
    }
    out
}

/// A Prometheus duration (`30s`, `2m`, `1h`) in seconds.
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("not a duration: {d}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => panic!("not a duration: {d}"),
    }
}

/// The anchor GitHub gives a README heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// (alert, its runbook_url) for every alert of rules.yml.
fn runbooks(rules: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for l in rules.lines().map(str::trim) {
        if let Some(name) = l.strip_prefix("- alert: ") {
            out.push((name.to_string(), None));
        } else if l.starts_with("- record: ") {
            continue;
        } else if let (Some(url), Some(last)) = (l.strip_prefix("runbook_url: "), out.last_mut()) {
            assert!(last.1.is_none(), "{}: two runbook_url", last.0);
            last.1 = Some(url.to_string());
        }
    }
    out
}

/// Metrics the dashboards and rules use that an agent may not export (an older agent
/// during a rolling upgrade), each with the fallback every expression naming it must
/// carry: the page size (4 KiB pages) and the probe methods (agents that put the method
/// on copyscope_probe_attached itself).
const FALLBACKS: &[(&str, &str)] = &[
    (
        "copyscope_page_size_bytes",
        "or on (instance) (0 * copyscope_build_info",
    ),
    (
        "copyscope_probe_method_info",
        "or on (instance, family, hook)",
    ),
];

#[test]
fn every_alert_has_a_runbook_in_the_readme() {
    let rules = read("deploy/prometheus/rules.yml");
    let readme = read("README.md");
    let headings: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let repo = "https://github.com/copyscope/copyscope";
    assert!(
        read("Cargo.toml").contains(&format!("repository = \"{repo}\"")),
        "the repository URL changed: update the runbook URLs"
    );
    let all = runbooks(&rules);
    assert_eq!(
        all.iter().map(|(a, _)| a.clone()).collect::<BTreeSet<_>>(),
        defined(&rules, "alert")
    );
    for (alert, url) in all {
        let url = url.unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let a = url
            .strip_prefix(&format!("{repo}/blob/main/README.md#"))
            .unwrap_or_else(|| panic!("{alert}: {url} is not a README anchor"));
        assert_eq!(a, alert.to_lowercase(), "{alert}: its own section");
        assert!(
            headings.contains(a),
            "{alert}: README has no heading for #{a}"
        );
    }
    assert_eq!(
        anchor(" Situations and what you see"),
        "situations-and-what-you-see"
    );
}

#[test]
fn rate_windows_hold_four_scrapes_of_the_shipped_interval() {
    let interval = |text: &str, key: &str| -> u64 {
        let v: Vec<u64> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .map(|v| seconds(v.trim()))
            .collect();
        assert_eq!(v.len(), 1, "one {key} in {text}");
        v[0]
    };
    let scrape = interval(
        &read("deploy/prometheus/scrape-config.yml"),
        "scrape_interval:",
    );
    let values = read("deploy/helm/copyscope/values.yaml");
    let monitor = values
        .split("\nserviceMonitor:\n")
        .nth(1)
        .expect("serviceMonitor in values.yaml");
    let monitor = monitor.split("\n\n").next().unwrap();
    assert_eq!(
        interval(monitor, "interval:"),
        scrape,
        "the ServiceMonitor's default interval and scrape-config.yml's"
    );
    let rules = read("deploy/prometheus/rules.yml");
    let found = windows(&rules);
    assert!(!found.is_empty());
    for (func, w) in found {
        if matches!(func.as_str(), "rate" | "irate" | "increase") {
            assert!(
                seconds(&w) >= 4 * scrape,
                "{func}(...[{w}]) holds fewer than four samples at the shipped {scrape} s scrape interval"
            );
        }
    }
}

#[test]
fn page_counts_become_bytes_with_each_agents_page_size() {
    let mut texts: Vec<(String, String)> = vec![(
        "rules.yml".into(),
        read("deploy/prometheus/rules.yml")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    )];
    for (name, d) in dashboards() {
        texts.extend(
            exprs(&d)
                .into_iter()
                .map(|(t, e)| (format!("{name}: {t}"), e)),
        );
    }
    let mut joined = 0;
    for (what, text) in &texts {
        if text.contains("4096") || text.contains("copyscope_page_size_bytes") {
            assert!(
                text.contains("* on (instance) group_left ()")
                    && text.contains("copyscope_page_size_bytes")
                    && !text.contains("* 4096"),
                "{what}: pages become bytes by the agent's own page size: {text}"
            );
            joined += 1;
        }
    }
    assert!(
        joined >= 2,
        "the dashboards and the alert convert pages to bytes"
    );
    for (what, text) in &texts {
        for (metric, fallback) in FALLBACKS {
            if text.contains(metric) {
                assert!(
                    text.contains(fallback),
                    "{what}: {metric} without {fallback}: {text}"
                );
            }
        }
        // copyscope_probe_attached is {family, hook}: the method is copyscope_probe_method_info's.
        for part in text.split("copyscope_probe_attached").skip(1) {
            let selector = part.split(['}', ')']).next().unwrap_or("");
            assert!(
                !selector.contains("method"),
                "{what}: probe_attached's method: {text}"
            );
        }
        if text.contains("by (") && text.contains("copyscope_probe_attached") {
            assert!(!text.contains("method)"), "{what}: {text}");
        }
    }
}

#[test]
fn the_overview_has_a_row_for_copyscopes_own_cost() {
    let all = dashboards();
    let overview = &all[0].1;
    let top = overview["panels"].as_array().unwrap();
    let row = top
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "copyscope overhead")
        .expect("a copyscope overhead row");
    let below: Vec<&Value> = top[row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .collect();
    let text: String = below
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for m in [
        "copyscope_bpf_program_run_seconds_total",
        "copyscope_bpf_program_runs_total",
        "copyscope_bpf_program_missed_runs_total",
        "copyscope_map_entries",
        "copyscope_map_max_entries",
        "copyscope_map_memory_bytes",
        "copyscope_agent_resident_memory_bytes",
    ] {
        assert!(text.contains(m), "the overhead row does not show {m}");
    }
    let units: BTreeSet<&str> = below
        .iter()
        .map(|p| p["fieldConfig"]["defaults"]["unit"].as_str().unwrap())
        .collect();
    assert_eq!(units, BTreeSet::from(["s", "cps", "percentunit", "bytes"]));
}

#[test]
fn the_charts_dashboards_are_copies_of_dashboards() {
    for (name, _) in dashboards() {
        assert!(
            read(&format!("deploy/helm/copyscope/files/dashboards/{name}"))
                == read(&format!("dashboards/{name}")),
            "deploy/helm/copyscope/files/dashboards/{name} is not a copy of dashboards/{name}"
        );
    }
}

#[test]
fn dashboards_have_stable_uids_variables_units_and_links() {
    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["copyscope-overview.json", "copyscope-workload.json"]
    );
    for (name, d) in &all {
        assert_eq!(
            d["uid"].as_str().unwrap(),
            name.trim_end_matches(".json"),
            "{name}: a stable uid, the file's name"
        );
        assert!(d["schemaVersion"].as_u64().unwrap() >= 39, "{name}");
        assert!(!d["description"].as_str().unwrap().is_empty(), "{name}");

        let vars = variables(d);
        let by_name: BTreeMap<&str, &Value> = vars
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        let source = by_name["datasource"];
        assert_eq!(
            (&source["type"], &source["query"]),
            (&json!("datasource"), &json!("prometheus")),
            "{name}"
        );
        let order: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(
            order,
            [
                "datasource",
                "cluster",
                "node",
                "namespace",
                "pod",
                "container",
                "workload"
            ],
            "{name}"
        );
        for var in [
            "cluster",
            "node",
            "namespace",
            "pod",
            "container",
            "workload",
        ] {
            let v = by_name
                .get(var)
                .unwrap_or_else(|| panic!("{name}: no {var} variable"));
            assert_eq!(v["type"], "query", "{name} {var}");
            assert_eq!(v["datasource"], ds, "{name} {var}");
            assert_eq!(
                (&v["multi"], &v["includeAll"], &v["allValue"]),
                (&json!(true), &json!(true), &json!(".*")),
                "{name} {var}"
            );
            label_values(variable_query(v).unwrap());
        }

        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for p in panels(d) {
            let title = p["title"].as_str().unwrap();
            assert!(ids.insert(p["id"].as_u64().unwrap()), "{name}: {title}: id");
            assert_eq!(p["datasource"], ds, "{name}: {title}: datasource");
            // Top-level panels do not overlap.
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
            assert!(x + w <= 24, "{name}: {title} is wider than the grid");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(cells.insert((cx, cy)), "{name}: {title} overlaps a panel");
                }
            }
            if p["type"] == "row" {
                continue;
            }
            assert!(
                !p["description"].as_str().unwrap_or("").is_empty(),
                "{name}: {title}: description"
            );
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            assert!(!unit.is_empty(), "{name}: {title}: unit");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {title}: no query");
            for t in targets {
                assert_eq!(t["datasource"], ds, "{name}: {title}: target datasource");
                let e = t["expr"].as_str().unwrap();
                for m in ["cluster=~\"$cluster\"", "node=~\"$node\""] {
                    assert!(e.contains(m), "{name}: {title}: no {m} in {e}");
                }
                // Workload figures follow every variable.
                if !rule_names(e).is_empty() {
                    for m in [
                        "namespace=~\"$namespace\"",
                        "pod=~\"$pod\"",
                        "container=~\"$container\"",
                        "comm=~\"$workload\"",
                    ] {
                        assert!(e.contains(m), "{name}: {title}: no {m} in {e}");
                    }
                }
                // Rates over raw counters take Grafana's window, which a scrape
                // interval always fills; fixed windows belong to the recording rules.
                for (_, window) in windows(e) {
                    assert!(
                        matches!(window.as_str(), "$__rate_interval" | "$__range"),
                        "{name}: {title}: a fixed window [{window}] in {e}"
                    );
                }
            }
        }
    }

    // Each dashboard links to the other, with the variables and the time range.
    for ((_, d), other) in all.iter().zip(["copyscope-workload", "copyscope-overview"]) {
        let links = d["links"].as_array().unwrap();
        assert!(
            links.iter().any(|l| {
                l["url"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("/d/{other}"))
                    && l["includeVars"] == true
                    && l["keepTime"] == true
            }),
            "{}: no link to {other}: {links:?}",
            d["uid"]
        );
    }
    // The overview's candidates table drills down into the workload of a row.
    let overview = &all[0].1;
    let table = panels(overview)
        .into_iter()
        .find(|p| p["type"] == "table" && p["title"].as_str().unwrap().contains("candidates"))
        .expect("the zero-copy candidates table");
    let cell_links = table["fieldConfig"]["overrides"].to_string();
    for part in [
        "/d/copyscope-workload/",
        "var-workload=${__data.fields.comm}",
        "var-node=${__data.fields.node}",
        "var-namespace=${__data.fields.namespace}",
        "${__url_time_range}",
    ] {
        assert!(cell_links.contains(part), "no {part} in {cell_links}");
    }
}

#[test]
fn dashboards_and_rules_name_only_metrics_and_rules_that_exist() {
    let exported = copyscope::metrics::names();
    let rules = read("deploy/prometheus/rules.yml");
    let recorded = defined(&rules, "record");
    assert!(!recorded.is_empty());
    let mut used_metrics = metric_names(&rules);
    let mut used_rules = rule_names(&rules);
    for (name, d) in dashboards() {
        let mut text: Vec<String> = exprs(&d).into_iter().map(|(_, e)| e).collect();
        text.extend(
            variables(&d)
                .iter()
                .filter_map(variable_query)
                .map(String::from),
        );
        let text = text.join("\n");
        let metrics = metric_names(&text);
        let rules = rule_names(&text);
        assert!(!rules.is_empty(), "{name} uses no recording rule");
        used_metrics.extend(metrics);
        used_rules.extend(rules);
    }
    // A metric of FALLBACKS may be newer than this agent: every use of it carries its
    // fallback (page_counts_become_bytes_with_each_agents_page_size checks that).
    let unknown: Vec<_> = used_metrics
        .iter()
        .filter(|m| !exported.contains(m.as_str()))
        .filter(|m| !FALLBACKS.iter().any(|(f, _)| f == m))
        .collect();
    assert!(unknown.is_empty(), "not copyscope metrics: {unknown:?}");
    let undefined: Vec<_> = used_rules.difference(&recorded).collect();
    assert!(
        undefined.is_empty(),
        "recording rules not in rules.yml: {undefined:?}"
    );

    // level:metric:operations; a rate's metric is a counter copyscope exports.
    for r in &recorded {
        let parts: Vec<&str> = r.split(':').collect();
        assert_eq!(parts.len(), 3, "{r}");
        assert_eq!(parts[0], "copyscope", "{r}");
        if parts[2].starts_with("rate") {
            let counter = format!("copyscope_{}_total", parts[1]);
            assert!(exported.contains(counter.as_str()), "{r}: no {counter}");
        }
    }

    // Every alert has a test that it fires and one that it does not.
    let tests = read("deploy/prometheus/rules_test.yml");
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(name) = l.strip_prefix("alertname: ") {
            let silent = lines[i + 1] == "exp_alerts: []";
            let e = seen.entry(name.to_string()).or_default();
            if silent {
                e.1 = true;
            } else {
                e.0 = true;
            }
        }
    }
    for alert in defined(&rules, "alert") {
        assert_eq!(
            seen.get(&alert),
            Some(&(true, true)),
            "{alert}: rules_test.yml must test it firing and not firing"
        );
    }

    assert!(
        read("deploy/helm/copyscope/files/rules.yml") == rules,
        "deploy/helm/copyscope/files/rules.yml is not a copy of deploy/prometheus/rules.yml"
    );
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    if !require_tool("promtool", "prometheus") {
        return;
    }
    for args in [
        ["check", "rules", "deploy/prometheus/rules.yml"],
        ["test", "rules", "deploy/prometheus/rules_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Tells a loop to stop when the test ends, however it ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One query a dashboard makes, with the variables replaced.
struct Check {
    what: String,
    query: String,
    /// label_values: (selector, label); else an instant query.
    label: Option<String>,
}

impl Check {
    /// The answer's series (or label values); Err if Prometheus refuses the query.
    fn answer(&self, prom: &Prometheus) -> Result<Vec<Value>, String> {
        match &self.label {
            Some(label) => prom
                .api(&format!(
                    "/api/v1/label/{label}/values?match[]={}",
                    urlencode(&self.query)
                ))
                .map(|v| v.as_array().cloned().unwrap_or_default()),
            None => prom.try_query(&self.query),
        }
    }
}

/// Every variable's and panel's query of every dashboard with these values.
fn checks(values: &BTreeMap<&str, &str>, pass: &str) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for v in variables(&d) {
            if let Some(q) = variable_query(v) {
                let (sel, label) = label_values(q);
                out.push(Check {
                    what: format!("{pass}: {name}: variable {}", v["name"]),
                    query: substitute(sel, values),
                    label: Some(label.to_string()),
                });
            }
        }
        for (title, e) in exprs(&d) {
            out.push(Check {
                what: format!("{pass}: {name}: {title}"),
                query: substitute(&e, values),
                label: None,
            });
        }
    }
    out
}

#[test]
#[ignore = "kernel tier: loads the eBPF programs (root); `cargo xtask test` runs it"]
fn every_dashboard_query_and_rule_works_on_a_real_agent() {
    require_kernel!();
    if !require_tool("prometheus", "prometheus") {
        return;
    }
    let d = scratch("dashboards");
    // Where the serving workload writes: a reader that discards.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = sink.accept() {
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
    });
    // The serving workload runs in a container of pod shop/web-0, which the API lists.
    let pid = std::process::id();
    let server_id = format!("{:08x}{}", pid, "d".repeat(56));
    let init_id = format!("{:08x}{}", pid, "e".repeat(56));
    let list = fixture(
        "pods-list.json",
        &[
            ("NODE", NODE),
            ("SERVER", &server_id),
            ("INIT", &init_id),
            ("RV", "1"),
        ],
    );
    let api = FakeApi::start(&d, vec![Reply::Json(200, list)], vec![]);
    let token = d.join("token");
    std::fs::write(&token, "dashboards-test").unwrap();
    // With the kernel's BPF statistics, for the overhead row's run times.
    let agent = common::agent::start_agent(&[
        "--interval",
        "1",
        "--bpf-stats",
        "--kube-node",
        NODE,
        "--kube-api",
        &api.url,
        "--kube-token-file",
        token.to_str().unwrap(),
        "--kube-ca-file",
        api.ca_file.to_str().unwrap(),
    ]);
    let rules = repo().join("deploy/prometheus/rules.yml");
    let prom = Prometheus::start(
        &d,
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: copyscope\n    static_configs:\n      - targets: ['{}']\n        labels:\n          node: {NODE}\n          cluster: {CLUSTER}\n",
            rules.display(),
            agent.addr
        ),
    );

    // A web server without sendfile: read() a file, write() it to a socket (the advisor's
    // sendfile finding), until the guard stops it.
    let served = d.join("served.bin");
    write_file(&served, 4 << 20);
    let container = FakeContainer::new("6b1d2f4e-8c3a-4e7b-9f21-0a5c7d3e9b11", &server_id);
    let mut serve = Guard(
        container
            .command(&[
                WORKLOAD,
                "serve",
                served.to_str().unwrap(),
                &sink_addr,
                "600",
            ])
            .env("COPYSCOPE_WORKLOAD_OUT", d.join("serve.json"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A second workload (its own comm) that reads a file dropped from the page cache, over
    // and over: page-cache misses.
    let reader = d.join("pc-reader");
    std::fs::copy(WORKLOAD, &reader).unwrap();
    let cold = d.join("cold.bin");
    write_file(&cold, 8 << 20);
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let misses = {
        let stop = stop.0.clone();
        std::thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for op in ["drop-cache", "read"] {
                    let out = common::output_of_copied(
                        Command::new(&reader).args([op, cold.to_str().unwrap()]),
                    );
                    assert!(out.status.success(), "pc-reader {op}: {out:?}");
                }
                runs += 1;
            }
            runs
        })
    };

    wait_for(
        Duration::from_secs(60),
        "Prometheus to scrape copyscope",
        || {
            prom.query(&format!("up{{job=\"copyscope\",node=\"{NODE}\"}} == 1"))
                .filter(|r| !r.is_empty())
        },
    );

    // Every query of every dashboard, with every variable at All, then with this node and
    // the serving workload chosen, then with its namespace chosen too, must give at least
    // one series (or label value), none of them NaN.
    let mut chosen = all_values();
    chosen.insert("cluster", CLUSTER);
    chosen.insert("node", NODE);
    chosen.insert("workload", "copyscope-workl");
    let mut in_namespace = chosen.clone();
    in_namespace.insert("namespace", NAMESPACE);
    in_namespace.insert("pod", "web-0");
    in_namespace.insert("container", "server");
    let (namespace_vars, mut pending): (Vec<Check>, Vec<Check>) = checks(&all_values(), "All")
        .into_iter()
        .chain(checks(&chosen, NODE))
        .chain(checks(&in_namespace, NAMESPACE))
        .partition(|c| c.label.as_deref() == Some("namespace"));
    let total = pending.len();
    let end = Instant::now() + Duration::from_secs(180);
    while !pending.is_empty() && Instant::now() < end {
        let mut still = Vec::new();
        for c in pending {
            let series = c
                .answer(&prom)
                .unwrap_or_else(|e| panic!("{}: Prometheus refused\n{}\n{e}", c.what, c.query));
            if series.is_empty() {
                still.push(c);
                continue;
            }
            for s in &series {
                if let Some(v) = s["value"][1].as_str() {
                    assert!(v != "NaN", "{}: NaN in {s}\n{}", c.what, c.query);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let empty: Vec<String> = pending
        .iter()
        .map(|c| format!("{}\n    {}", c.what, c.query))
        .collect();
    assert!(
        empty.is_empty(),
        "{} of {total} dashboard queries gave no series in 180 s:\n{}\n\nworkloads with their own series \
         (copyscope_workloads {:?} of copyscope_max_workloads {:?}: a host already running that many \
         processes leaves the test's workloads under comm=\"other\"): {:?}\nthe serving workload: {:?}",
        empty.len(),
        empty.join("\n"),
        prom.query("copyscope_workloads")
            .map(|r| r.first().map(|s| s["value"][1].clone())),
        prom.query("copyscope_max_workloads")
            .map(|r| r.first().map(|s| s["value"][1].clone())),
        prom.api("/api/v1/label/comm/values"),
        serve.0.try_wait(),
    );
    eprintln!("{total} dashboard queries answered, none empty");

    // The namespace variable lists the pods' namespaces (the host's processes have none,
    // and All (.*) keeps them in every panel, as the queries above show).
    for c in &namespace_vars {
        assert_eq!(c.answer(&prom), Ok(vec![json!(NAMESPACE)]), "{}", c.what);
    }
    let info = prom.query("copyscope_container_info").unwrap();
    let named: Vec<&Value> = info
        .iter()
        .filter(|s| s["metric"]["container_id"] == server_id.as_str())
        .collect();
    assert!(
        named.len() == 1
            && named[0]["metric"]["namespace"] == NAMESPACE
            && named[0]["metric"]["pod"] == "web-0",
        "the serving container's pod: {info:?}"
    );
    assert!(
        info.iter()
            .any(|s| s["metric"].get("container_id").is_none()
                && s["metric"].get("namespace").is_none()),
        "the host's processes' series: {info:?}"
    );

    // The workload variable lists both workloads; the node variable this node.
    let workloads = prom
        .api("/api/v1/label/comm/values?match[]=copyscope:syscalls:rate2m")
        .unwrap();
    for w in ["copyscope-workl", "pc-reader"] {
        assert!(
            workloads.as_array().unwrap().contains(&json!(w)),
            "{workloads}"
        );
    }

    // Every metric the dashboards and the rules name is in the agent's exposition (those
    // of FALLBACKS if this agent has them at all).
    let mut names = metric_names(&read("deploy/prometheus/rules.yml"));
    for (_, dash) in dashboards() {
        for (_, e) in exprs(&dash) {
            names.extend(metric_names(&e));
        }
        for v in variables(&dash) {
            names.extend(variable_query(v).map(metric_names).unwrap_or_default());
        }
    }
    let exported = copyscope::metrics::names();
    names.retain(|n| exported.contains(n.as_str()));
    let exposed: BTreeSet<String> = wait_for(
        Duration::from_secs(30),
        "every metric the dashboards and rules name in /metrics",
        || {
            let families: BTreeSet<String> = agent
                .metrics()
                .lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect();
            names.is_subset(&families).then_some(families)
        },
    );
    assert!(names.is_subset(&exposed));

    // Prometheus loaded every rule of rules.yml and evaluates each without an error.
    let text = read("deploy/prometheus/rules.yml");
    let (recorded, alerts) = (defined(&text, "record"), defined(&text, "alert"));
    let loaded = wait_for(Duration::from_secs(30), "every rule evaluated", || {
        let groups = prom.api("/api/v1/rules").ok()?;
        let rules: Vec<Value> = groups["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules
            .iter()
            .all(|r| {
                !r["lastEvaluation"]
                    .as_str()
                    .unwrap_or("0001")
                    .starts_with("0001")
            })
            .then_some(rules)
    });
    let names_of = |kind: &str| -> BTreeSet<String> {
        loaded
            .iter()
            .filter(|r| r["type"] == kind)
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names_of("recording"), recorded);
    assert_eq!(names_of("alerting"), alerts);
    for r in &loaded {
        assert_eq!(r["health"], "ok", "{r}");
        if r["type"] == "alerting" {
            assert!(r["labels"]["severity"].is_string(), "{r}");
            assert!(r["annotations"]["summary"].is_string(), "{r}");
            assert!(r["annotations"]["description"].is_string(), "{r}");
            assert!(r["annotations"]["runbook_url"].is_string(), "{r}");
            assert!(r["duration"].as_f64().unwrap() > 0.0, "{r}");
        }
    }

    // The probe alerts match the probes that cannot attach here: the copies probes fall
    // back to the syscalls (info), other optional probes warn, required ones never show.
    let probes = probes_json();
    let missing = |copies: bool| -> BTreeSet<(String, String)> {
        probes["probes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["attached"] == false && (p["family"] == "copies") == copies)
            .map(|p| {
                assert_eq!(p["required"], false, "{p}");
                (
                    p["family"].as_str().unwrap().into(),
                    p["hook"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let active = |alert: &str| -> BTreeSet<(String, String)> {
        prom.api("/api/v1/alerts").unwrap()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == alert)
            .map(|a| {
                assert_eq!(a["labels"]["node"], NODE);
                (
                    a["labels"]["family"].as_str().unwrap().into(),
                    a["labels"]["hook"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    wait_for(Duration::from_secs(30), "the probe alerts", || {
        (active("CopyscopeCopyProbeFallback") == missing(true)
            && active("CopyscopeProbeNotAttached") == missing(false))
        .then_some(())
    });
    let alerts = prom.api("/api/v1/alerts").unwrap();
    for healthy in [
        "CopyscopeTargetDown",
        "CopyscopeTargetMissing",
        "CopyscopeNotCollecting",
    ] {
        assert!(
            !alerts.to_string().contains(healthy),
            "{healthy} is active: {alerts}"
        );
    }

    drop(stop);
    let runs = misses.join().unwrap();
    assert!(runs > 0);
    eprintln!("pc-reader read its file cold {runs} times");
}

#[test]
fn variables_are_replaced_in_every_form_grafana_writes() {
    let v = all_values();
    assert_eq!(
        substitute(
            "rate(x{node=~\"$node\", comm=~\"${workload}\"}[$__rate_interval]) ${namespace:regex}",
            &v
        ),
        "rate(x{node=~\".*\", comm=~\".*\"}[4s]) .*"
    );
    assert_eq!(
        label_values("label_values(a{b=\"c,d\"}, comm)"),
        ("a{b=\"c,d\"}", "comm")
    );
    assert_eq!(
        metric_names("sum(copyscope:x:rate2m) / copyscope_a_total `copyscope_`"),
        BTreeSet::from(["copyscope_a_total".to_string()])
    );
    assert_eq!(
        rule_names("sum(copyscope:x:rate2m) / copyscope_a_total"),
        BTreeSet::from(["copyscope:x:rate2m".to_string()])
    );
}
