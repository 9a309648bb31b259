"""Checks deploy/: the plain DaemonSet manifest and the Helm chart.

Run by `cargo xtask test` (and `cargo xtask k8s`) in a venv holding PyPI's kubernetes-validate
(the Kubernetes OpenAPI schemas as JSON Schema) and helm-python-sdk (Helm v4's Go SDK built as
a C library: Helm's own template engine and linter, no helm binary). By hand:

    python deploy/check.py ROOT GUARD_AGENT_BINARY

- `helm lint --strict` on the chart finds nothing;
- the chart rendered with its default values (release `guard`, namespace `guard-system`) is,
  object for object, the plain manifest;
- every object of both, and of a render with non-default values, validates (strict: no unknown
  fields) against the OpenAPI schemas of the oldest and newest Kubernetes versions supported;
- the DaemonSet adds exactly the capabilities of the systemd unit's CapabilityBoundingSet
  (those tests/tests/install.rs proves sufficient) and drops the rest;
- the ConfigMap's policy passes `guard-agent policy check`.
Prints `k8s check: ok (N checks)` or the first failure, and exits non-zero on failure.
"""
import json
import os
import subprocess
import sys
import tempfile

import helm_python
import kubernetes_validate
import yaml

# appArmorProfile (securityContext) is in the API from 1.30 on.
KUBE_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
RELEASE, NAMESPACE = "guard", "guard-system"

checks = 0


def ok(cond, what):
    global checks
    if not cond:
        print(f"k8s check: FAILED: {what}")
        sys.exit(1)
    checks += 1


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


def render(chart, values=None):
    out = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objs = []
    for name in sorted(out):
        if name.endswith(".yaml"):
            objs.extend(docs(out[name]))
    return objs


def key(o):
    return (o["kind"], o["metadata"]["name"])


def diff(a, b, path=""):
    """The first path where a and b differ."""
    if type(a) is not type(b):
        return f"{path or '/'}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}/{k}: only in {'the render' if k in a else 'the manifest'}"
            d = diff(a[k], b[k], f"{path}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}/{i}")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def validate(objs, what):
    for v in KUBE_VERSIONS:
        for o in objs:
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except Exception as e:  # the library's ValidationError and friends
                ok(False, f"{what}: {key(o)} against Kubernetes {v}: {e}")
            ok(True, "")


def unit_caps(root):
    unit = open(os.path.join(root, "guard-agent/src/install/guard-agent.service")).read()
    line = next(l for l in unit.splitlines() if l.startswith("CapabilityBoundingSet="))
    return sorted(c.removeprefix("CAP_") for c in line.split("=", 1)[1].split())


def main():
    root, agent = sys.argv[1], sys.argv[2]
    chart_dir = os.path.join(root, "deploy/helm/guard")
    manifest = docs(open(os.path.join(root, "deploy/kubernetes/guard-agent.yaml")).read())
    ok([key(o) for o in manifest] == [("ServiceAccount", "guard-agent"), ("ConfigMap", "guard-agent"), ("DaemonSet", "guard-agent")], f"manifest objects: {[key(o) for o in manifest]}")

    report = helm_python.lint(chart_dir, strict=True)
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    ok(not problems, f"helm lint --strict: {json.dumps(problems)}")

    chart = helm_python.Chart.load(chart_dir)
    rendered = render(chart)
    ok(sorted(map(key, rendered)) == sorted(map(key, manifest)), f"rendered objects {sorted(map(key, rendered))}")
    by_key = {key(o): o for o in manifest}
    for o in rendered:
        d = diff(o, by_key[key(o)])
        ok(d is None, f"the chart's default render differs from deploy/kubernetes/guard-agent.yaml in {key(o)} at {d}")
    validate(manifest, "deploy/kubernetes/guard-agent.yaml")

    custom = render(chart, {
        "image": {"repository": "registry.example.com/guard-agent", "tag": "9.9.9"},
        "metrics": {"port": 9555, "prometheusAnnotations": False},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "",
        "policy": "agents:\n  - name: only\n",
    })
    validate(custom, "the chart rendered with other values")
    ds = next(o for o in custom if o["kind"] == "DaemonSet")["spec"]["template"]
    ok("annotations" not in ds["metadata"], "prometheusAnnotations: false still annotates")
    ok(ds["spec"]["containers"][0]["image"] == "registry.example.com/guard-agent:9.9.9", "image value ignored")
    ok(ds["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}, "nodeSelector ignored")
    ok("priorityClassName" not in ds["spec"], "an empty priorityClassName is rendered")
    cm = next(o for o in custom if o["kind"] == "ConfigMap")
    ok(cm["data"]["policy.yaml"] == "agents:\n  - name: only\n", f"policy value: {cm['data']['policy.yaml']!r}")

    spec = by_key[("DaemonSet", "guard-agent")]["spec"]["template"]["spec"]
    ok(spec["hostPID"] is True, "hostPID")
    c = spec["containers"][0]
    caps = c["securityContext"]["capabilities"]
    ok(sorted(caps["add"]) == unit_caps(root) and caps["drop"] == ["ALL"], f"capabilities {caps} vs the unit's {unit_caps(root)}")
    ok(c["readinessProbe"]["exec"]["command"] == ["guard-agent", "status"], "readiness from `guard-agent status`")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    ok({"/sys/fs/bpf", "/sys/fs/cgroup", "/sys/kernel/tracing", "/etc/guard"} <= mounts, f"mounts {mounts}")
    ok(not any("subPath" in m for m in c["volumeMounts"]), "a subPath mount never sees ConfigMap updates")

    cmap = by_key[("ConfigMap", "guard-agent")]["data"]
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "policy.yaml")
        open(p, "w").write(cmap["policy.yaml"])
        r = subprocess.run([agent, "policy", "check", p], capture_output=True, text=True)
        ok(r.returncode == 0, f"guard-agent policy check on the ConfigMap's policy: {r.stdout}{r.stderr}")
    print(f"k8s check: ok ({checks} checks; Kubernetes {', '.join(KUBE_VERSIONS)}; Helm SDK {helm_python.__version__ if hasattr(helm_python, '__version__') else '?'})")


if __name__ == "__main__":
    main()
