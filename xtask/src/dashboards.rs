//! The dashboards and the Prometheus rules, checked before the tests run:
//!
//! - each Grafana dashboard type-checked against Grafana's published schema
//!   (`@grafana/schema`, pinned in dashboards/check/package.json) with tsc --strict: the
//!   dashboard as one object literal, and each panel again as its plugin's panel type
//!   (options and custom field config), so misspelled keys, wrong types and unknown enum
//!   values fail;
//! - `promtool check rules` and `promtool test rules` on deploy/prometheus;
//! - the Helm chart's copy of the rules equal to deploy/prometheus/rules.yml.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::util::{root, run, show, succeeds};

/// The rules the chart's PrometheusRule is templated from: a byte-identical copy.
const CHART_RULES: &str = "deploy/helm/copyscope/files/rules.yml";
const RULES: &str = "deploy/prometheus/rules.yml";
const RULES_TEST: &str = "deploy/prometheus/rules_test.yml";

pub fn check() -> Result<()> {
    let root = root();
    let check = root.join("dashboards/check");
    npm_ci(&check)?;
    let generated = check.join("generated");
    let files = generate(&root.join("dashboards"), &generated)?;
    eprintln!(
        "xtask: type-checking {} dashboards against @grafana/schema",
        files.len()
    );
    run(Command::new("node")
        .arg(check.join("node_modules/typescript/bin/tsc"))
        .arg("--project")
        .arg(&check)
        .args(["--noEmit", "--strict"]))
    .context("a dashboard does not match Grafana's schema (the errors name the line of dashboards/check/generated/*.ts)")?;

    if !succeeds(Command::new("promtool").arg("--version")) {
        bail!(
            "promtool is not installed: it comes with the Debian package prometheus (cargo xtask setup installs it as root)"
        );
    }
    run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join(RULES)))?;
    run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(root.join(RULES_TEST)))?;

    let rules = fs::read(root.join(RULES)).with_context(|| format!("reading {RULES}"))?;
    let copy = fs::read(root.join(CHART_RULES)).unwrap_or_default();
    if rules != copy {
        bail!("{CHART_RULES} is not a copy of {RULES}: run `cp {RULES} {CHART_RULES}`");
    }
    Ok(())
}

/// `npm ci` in dashboards/check, unless node_modules already holds what package-lock.json
/// pins (a stamp records the lock file it was installed from).
fn npm_ci(dir: &Path) -> Result<()> {
    let lock = fs::read(dir.join("package-lock.json"))
        .with_context(|| format!("reading {}", dir.join("package-lock.json").display()))?;
    let stamp = dir.join("node_modules/.copyscope-package-lock.json");
    let tsc = dir.join("node_modules/typescript/bin/tsc");
    if tsc.exists() && fs::read(&stamp).is_ok_and(|s| s == lock) {
        return Ok(());
    }
    for (cmd, package) in [("node", "nodejs"), ("npm", "npm")] {
        if !succeeds(Command::new(cmd).arg("--version")) {
            bail!(
                "{cmd} is not installed: the dashboard check needs it (Debian package {package}; cargo xtask setup installs it as root)"
            );
        }
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    run(&mut npm).with_context(|| format!("{} in {}", show(&npm), dir.display()))?;
    fs::write(&stamp, lock).with_context(|| format!("writing {}", stamp.display()))
}

/// Write generated/<name>.ts for each dashboards/<name>.json; returns the files written.
fn generate(dashboards: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut jsons: Vec<PathBuf> = fs::read_dir(dashboards)
        .with_context(|| format!("reading {}", dashboards.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    jsons.retain(|p| p.extension().is_some_and(|e| e == "json"));
    jsons.sort();
    if jsons.is_empty() {
        bail!("no dashboards in {}", dashboards.display());
    }
    let mut written = Vec::new();
    for json in jsons {
        let text =
            fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
        let dashboard: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", json.display()))?;
        let ts = typescript(&dashboard).with_context(|| format!("in {}", json.display()))?;
        let name = json.file_stem().expect("a .json file has a stem");
        let path = out.join(name).with_extension("ts");
        fs::write(&path, ts).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The TypeScript that type-checks one dashboard: object literals, so that excess
/// property checks apply.
fn typescript(dashboard: &Value) -> Result<String> {
    let mut ts = String::from(
        "// Generated by cargo xtask test from the dashboard's JSON; see ../schema.ts.\n\
         import type { DashboardJson, RowPanelJson, StatPanel, StateTimelinePanel, TablePanel, TimeSeriesPanel } from '../schema';\n\n",
    );
    ts.push_str(&format!(
        "export const dashboard: DashboardJson = {};\n",
        serde_json::to_string_pretty(dashboard)?
    ));
    for (i, panel) in panels(dashboard).into_iter().enumerate() {
        let kind = panel["type"].as_str().unwrap_or_default();
        let Some(ty) = panel_type(kind) else {
            bail!(
                "panel {:?} is a {kind:?} panel, which has no type in dashboards/check/schema.ts: add one",
                panel["title"]
            );
        };
        ts.push_str(&format!(
            "\nexport const panel{i}: {ty} = {};\n",
            serde_json::to_string_pretty(panel)?
        ));
    }
    Ok(ts)
}

/// Every panel, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The schema.ts type a panel plugin is checked against.
fn panel_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "timeseries" => "TimeSeriesPanel",
        "table" => "TablePanel",
        "stat" => "StatPanel",
        "state-timeline" => "StateTimelinePanel",
        "row" => "RowPanelJson",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::typescript;

    #[test]
    fn each_panel_is_checked_again_as_its_plugin_including_those_in_rows() {
        let d = json!({
            "title": "t",
            "panels": [
                {"type": "row", "title": "r", "panels": [{"type": "stat", "title": "s"}]},
                {"type": "timeseries", "title": "ts"},
            ]
        });
        let ts = typescript(&d).unwrap();
        assert!(ts.contains("export const dashboard: DashboardJson = {\n  \"panels\": ["));
        assert!(ts.contains("export const panel0: RowPanelJson = {"));
        assert!(ts.contains("export const panel1: StatPanel = {"));
        assert!(ts.contains("export const panel2: TimeSeriesPanel = {"));
    }

    #[test]
    fn a_panel_plugin_without_a_type_is_an_error() {
        let d = json!({"panels": [{"type": "piechart", "title": "p"}]});
        let e = typescript(&d).unwrap_err().to_string();
        assert!(e.contains("\"piechart\" panel"), "{e}");
    }
}
