"""helm/otelbot: real Helm renders every ci/*-values.yaml, `helm lint --strict` passes,
kubernetes-validate (strict) accepts every object for the oldest Kubernetes we support, the
structure is what the docs promise, and the schema refuses bad values."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._require import missing

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "otelbot"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
OLDEST_KUBERNETES = "1.27.0"


def render(helm: str, values: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm, "template", "t", str(CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def bot_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = [
        d
        for d in by_kind(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "bot"
    ]
    return deploy


def containers(deploy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}


def values_of(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_chart_declares_the_oldest_kubernetes() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={OLDEST_KUBERNETES}-0"


def test_every_feature_has_a_ci_values_file() -> None:
    names = {p.name for p in CI_VALUES}
    assert {
        "polling-values.yaml",
        "webhook-ingress-values.yaml",
        "dbpoller-deployment-values.yaml",
        "collector-sidecar-values.yaml",
    } <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(helm: str, values: Path) -> None:
    out = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_objects_valid_for_oldest_kubernetes(
    helm: str, values: Path, installed_tools: str
) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing(f"kubernetes-validate could not be installed:\n{installed_tools}")
    for obj in render(helm, values):
        try:
            kubernetes_validate.validate(obj, OLDEST_KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{values.name}: {obj['kind']} {obj['metadata']['name']}: {exc.message}"
                f" at {'/'.join(map(str, exc.path))}"
            )


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_secrets_only_by_reference(helm: str, values: Path) -> None:
    objects = render(helm, values)
    assert not by_kind(objects, "Secret"), "the chart must not create Secrets"
    text = yaml.safe_dump_all(objects)
    assert not re.search(r"[0-9]{5,}:[A-Za-z0-9_-]{30,}", text)
    assert "postgresql://" not in text and "redis://" not in text
    for deploy in by_kind(objects, "Deployment"):
        for c in deploy["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env", []):
                if env["name"] in ("BOT_TOKEN", "PG_DSN", "REDIS_URL", "WEBHOOK_SECRET"):
                    assert "secretKeyRef" in env["valueFrom"], (c["name"], env)


@pytest.mark.parametrize(
    "values", [p for p in CI_VALUES if p.name != "no-agent-values.yaml"], ids=lambda p: p.name
)
def test_agent_sidecar_shares_process_namespace_and_runtime_volume(
    helm: str, values: Path, tmp_path: Path
) -> None:
    deploy = bot_pod(render(helm, values))
    spec = deploy["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True
    c = containers(deploy)
    assert {"bot", "otelbot-agent"} <= set(c)
    runtime = [v for v in spec["volumes"] if v["name"] == "otelbot-runtime"]
    assert runtime and "emptyDir" in runtime[0]
    for name in ("bot", "otelbot-agent"):
        mounts = {m["name"]: m["mountPath"] for m in c[name]["volumeMounts"]}
        assert mounts.get("otelbot-runtime") == "/var/run/otelbot", name
        env = {e["name"]: e.get("value") for e in c[name]["env"]}
        assert env["OTELBOT_RUNTIME_DIR"] == "/var/run/otelbot"
        assert env["OTEL_SERVICE_NAME"] and env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    agent = c["otelbot-agent"]
    for probe in ("livenessProbe", "readinessProbe"):
        command = " ".join(agent[probe]["exec"]["command"])
        assert "http://127.0.0.1:13134/" in command, probe
    assert "ports" not in agent, "the agent exposes nothing outside the pod"
    (cm,) = [
        m
        for m in by_kind(render(helm, values), "ConfigMap")
        if m["metadata"]["name"].endswith("-agent")
    ]
    config = yaml.safe_load(cm["data"]["agent.yaml"])
    assert config["health"]["host"] == "127.0.0.1"
    assert config["runtime"] == {"enabled": True, "dir": "/var/run/otelbot", "frozen_after": "10s"}
    assert config["process"]["enabled"] is True
    _assert_the_agent_accepts(config, tmp_path)


def _assert_the_agent_accepts(config: dict[str, Any], tmp_path: Path) -> None:
    """The rendered agent.yaml passes the agent's own validation (its bounds included), with
    the mounted secret files it names stood in for by local ones."""
    from otelbot.agent.config import load_config

    def local_files(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key.endswith("_file") and isinstance(value, str):
                    stand_in = tmp_path / f"secret-{len(list(tmp_path.iterdir()))}"
                    scheme = "redis" if key == "url_file" else "postgresql"
                    stand_in.write_text(f"{scheme}://127.0.0.1/0\n")
                    value = str(stand_in)
                out[key] = local_files(value)
            return out
        if isinstance(node, list):
            return [local_files(item) for item in node]
        return node

    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(local_files(config)))
    load_config(path)  # raises ConfigError naming what the chart got wrong


def test_no_agent_means_no_sidecar_and_no_shared_pid_namespace(helm: str) -> None:
    deploy = bot_pod(render(helm, CHART / "ci" / "no-agent-values.yaml"))
    assert set(containers(deploy)) == {"bot"}
    assert "shareProcessNamespace" not in deploy["spec"]["template"]["spec"]


def test_polling_is_one_replica_recreated(helm: str) -> None:
    deploy = bot_pod(render(helm, CHART / "ci" / "polling-values.yaml"))
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"
    objects = render(helm, CHART / "ci" / "polling-values.yaml")
    assert not by_kind(objects, "Service") and not by_kind(objects, "Ingress")


def test_webhook_has_service_and_ingress_on_the_webhook_path(helm: str) -> None:
    objects = render(helm, CHART / "ci" / "webhook-ingress-values.yaml")
    deploy = bot_pod(objects)
    assert deploy["spec"]["replicas"] == 3
    (svc,) = by_kind(objects, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "webhook"
    (ing,) = by_kind(objects, "Ingress")
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "bot.example.com"
    assert rule["http"]["paths"][0]["path"] == "/telegram/webhook"
    assert ing["spec"]["tls"][0]["secretName"] == "bot-example-com-tls"
    bot = containers(deploy)["bot"]
    assert bot["ports"][0]["containerPort"] == 8080


def test_database_polling_in_one_separate_deployment(helm: str) -> None:
    objects = render(helm, CHART / "ci" / "dbpoller-deployment-values.yaml")
    assert bot_pod(objects)["spec"]["replicas"] == 10
    (poller,) = [
        d
        for d in by_kind(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "dbpoller"
    ]
    assert poller["spec"]["replicas"] == 1
    configs = {
        m["metadata"]["name"]: yaml.safe_load(m["data"]["agent.yaml"])
        for m in by_kind(objects, "ConfigMap")
    }
    sidecar, central = configs["t-otelbot-agent"], configs["t-otelbot-dbpoller"]
    assert sidecar["postgresql"]["enabled"] is False and sidecar["redis"]["enabled"] is False
    assert central["postgresql"]["databases"][0]["dsn_file"].startswith("/var/run/secrets/")
    assert central["redis"]["instances"][0]["url_file"].startswith("/var/run/secrets/")
    assert central["process"]["enabled"] is False
    secret_volumes = {
        v["secret"]["secretName"]
        for v in poller["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert secret_volumes == {"mybot-postgres", "mybot-redis"}
    bot_volumes = bot_pod(objects)["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in bot_volumes if "secret" in v], "bot pods do not poll the database"


def test_database_polling_in_the_sidecar(helm: str) -> None:
    objects = render(helm, CHART / "ci" / "database-sidecar-values.yaml")
    assert len(by_kind(objects, "Deployment")) == 1
    (cm,) = by_kind(objects, "ConfigMap")
    config = yaml.safe_load(cm["data"]["agent.yaml"])
    assert config["postgresql"]["enabled"] is True and config["redis"]["enabled"] is True


def test_collector_sidecar_on_localhost_with_the_repo_config(helm: str) -> None:
    objects = render(helm, CHART / "ci" / "collector-sidecar-values.yaml")
    c = containers(bot_pod(objects))
    assert "otel-collector" in c
    assert c["otel-collector"]["image"].endswith(":0.159.0")
    for name in ("bot", "otelbot-agent"):
        env = {e["name"]: e.get("value") for e in c[name]["env"]}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
        assert "deployment.environment.name=production" in env["OTEL_RESOURCE_ATTRIBUTES"]
    (cm,) = [
        m for m in by_kind(objects, "ConfigMap") if m["metadata"]["name"].endswith("-collector")
    ]
    assert yaml.safe_load(cm["data"]["config.yaml"]) == yaml.safe_load(
        (ROOT / "collector-config" / "agent.yaml").read_text()
    )
    assert by_kind(objects, "ClusterRole") and by_kind(objects, "ClusterRoleBinding")


def test_chart_copy_of_the_agent_collector_config_is_identical() -> None:
    assert (CHART / "files" / "collector-agent.yaml").read_text() == (
        ROOT / "collector-config" / "agent.yaml"
    ).read_text()


BAD_VALUES = {
    "two pollers": {"replicaCount": 2},
    "unknown mode": {"mode": "longpoll"},
    "token in plain values": {"botToken": {"existingSecret": "x", "value": "123:abc"}},
    "no token secret": {"botToken": {"existingSecret": ""}},
    "database without secret": {"database": {"enabled": True}},
    "ingress without host": {"mode": "webhook", "webhook": {"ingress": {"enabled": True}}},
    "unknown key": {"replicas": 3},
    "external collector without endpoint": {"collector": {"mode": "external", "endpoint": ""}},
    "sidecar collector without gateway": {"collector": {"mode": "sidecar"}},
    "bad database polling": {"agent": {"databasePolling": "everywhere"}},
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(helm: str, case: str, tmp_path: Path) -> None:
    values = _merge(values_of(CHART / "ci" / "polling-values.yaml"), BAD_VALUES[case])
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(json.dumps(values))
    for cmd in (["lint", "--strict", str(CHART)], ["template", "t", str(CHART)]):
        out = subprocess.run(
            [helm, *cmd, "-f", str(bad)], capture_output=True, text=True, timeout=60
        )
        assert out.returncode != 0, f"{case}: helm {cmd[0]} accepted it"
        assert "values don't meet the specifications of the schema" in out.stdout + out.stderr


def test_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()

    def paths(node: Any, prefix: str = "") -> list[str]:
        # A free-form object (securityContext, resources) is documented as a whole.
        if prefix and f"`{prefix[:-1]}`" in readme:
            return [prefix[:-1]]
        if isinstance(node, dict) and node:
            return [p for k, v in node.items() for p in paths(v, f"{prefix}{k}.")]
        return [prefix[:-1]]

    missing = [p for p in paths(values_of(CHART / "values.yaml")) if f"`{p}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"
