"""examples/compose: no docker here, so the compose file is only parsed and checked for the
services the docs promise and for files it mounts or builds from that exist."""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "examples" / "compose"


def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def test_services_present() -> None:
    assert set(compose()["services"]) == {
        "bot",
        "agent",
        "collector",
        "jaeger",
        "prometheus",
        "grafana",
        "postgres",
        "redis",
    }


def test_bind_mounts_and_build_files_exist() -> None:
    c = compose()
    named = set(c.get("volumes", {}))
    for name, svc in c["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source in named:
                continue
            assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
        build = svc.get("build")
        if build:
            context = COMPOSE_DIR / build["context"]
            assert (context / build["dockerfile"]).is_file(), name
            assert (context / "pyproject.toml").is_file()


def test_collector_uses_local_config_and_pinned_release() -> None:
    svc = compose()["services"]["collector"]
    assert svc["image"].endswith(":0.159.0")
    assert any(v.startswith("../../collector-config/local.yaml:") for v in svc["volumes"])


def test_bot_is_instrumented_and_agent_shares_its_pid_namespace_and_runtime_dir() -> None:
    services = compose()["services"]
    assert services["bot"]["command"][0] == "opentelemetry-instrument"
    assert services["agent"]["pid"] == "service:bot"
    assert "runtime:/var/run/otelbot:ro" in services["agent"]["volumes"]
    assert "runtime:/var/run/otelbot" in services["bot"]["volumes"]


def test_grafana_provisions_the_dashboards_and_prometheus_loads_the_rules() -> None:
    services = compose()["services"]
    grafana_volumes = services["grafana"]["volumes"]
    assert "../../dashboards:/var/lib/grafana/dashboards/otelbot:ro" in grafana_volumes
    provider = yaml.safe_load(
        (COMPOSE_DIR / "grafana/provisioning/dashboards/otelbot.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/otelbot"
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["/etc/prometheus/rules/otelbot.rules.yml"]
    assert any(
        v.endswith("/etc/prometheus/rules/otelbot.rules.yml:ro")
        for v in services["prometheus"]["volumes"]
    )


def test_ports_published_on_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"
