"""collector-config/*.yaml: structure checked against the pinned otelcol-contrib release.

There is no otelcol binary here (`otelcol validate` would be the real check); these tests
hold what can be checked without it: YAML, references, component types that exist in the
pinned release, processor order, where tail sampling lives, and the privacy rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "collector-config"
CONFIGS = ("agent.yaml", "gateway.yaml", "local.yaml")
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
TOKEN_PATTERN = "[0-9]{5,}:[A-Za-z0-9_-]{30,}"


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CONFIG_DIR / name).read_text())
    assert isinstance(data, dict), f"{name} is not a YAML mapping"
    return data


@pytest.fixture(scope="module")
def release() -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / "otelcol-contrib-components.yaml").read_text())


def type_of(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def test_every_file_in_the_folder_is_checked() -> None:
    found = {p.name for p in CONFIG_DIR.glob("*.yaml")} - {"otelcol-contrib-components.yaml"}
    assert found == set(CONFIGS)


def test_components_list_names_its_release(release: dict[str, Any]) -> None:
    text = (CONFIG_DIR / "otelcol-contrib-components.yaml").read_text()
    assert "opentelemetry-collector-releases" in text and "manifest.yaml" in text
    assert release["version"] == "0.159.0"
    for kind in KINDS:
        assert len(release[kind]) > 5, kind
    for name in CONFIGS:
        assert f"otelcol-contrib {release['version']}" in (CONFIG_DIR / name).read_text()


@pytest.mark.parametrize("name", CONFIGS)
def test_component_types_exist_in_the_pinned_release(name: str, release: dict[str, Any]) -> None:
    config = load(name)
    for kind in KINDS:
        for component_id in config.get(kind) or {}:
            assert type_of(component_id) in release[kind], (
                f"{name}: {kind[:-1]} {component_id!r}: no such type in otelcol-contrib "
                f"{release['version']}"
            )
            deprecated = release["deprecated_aliases"].get(kind, [])
            assert type_of(component_id) not in deprecated, f"{name}: {component_id} is deprecated"


@pytest.mark.parametrize("name", CONFIGS)
def test_pipelines_reference_defined_components(name: str) -> None:
    config = load(name)
    service = config["service"]
    for ext in service.get("extensions", []):
        assert ext in config["extensions"], f"{name}: extension {ext} not defined"
    used: set[tuple[str, str]] = set()
    assert service["pipelines"], f"{name}: no pipelines"
    for pipeline_id, pipeline in service["pipelines"].items():
        assert type_of(pipeline_id) in {"traces", "metrics", "logs"}, pipeline_id
        assert pipeline.get("receivers") and pipeline.get("exporters"), pipeline_id
        for kind in ("receivers", "processors", "exporters"):
            for component_id in pipeline.get(kind, []):
                assert component_id in (config.get(kind) or {}), (
                    f"{name}: pipeline {pipeline_id} uses undefined {kind[:-1]} {component_id}"
                )
                used.add((kind, component_id))
    for kind in ("receivers", "processors", "exporters"):
        for component_id in config.get(kind) or {}:
            assert (kind, component_id) in used, f"{name}: {component_id} is defined but unused"


@pytest.mark.parametrize("name", CONFIGS)
def test_memory_limiter_first_in_every_pipeline(name: str) -> None:
    for pipeline_id, pipeline in load(name)["service"]["pipelines"].items():
        processors = pipeline.get("processors", [])
        assert processors and type_of(processors[0]) == "memory_limiter", (
            f"{name}: pipeline {pipeline_id} does not start with memory_limiter: {processors}"
        )


@pytest.mark.parametrize("name", CONFIGS)
def test_batch_last_where_present(name: str) -> None:
    for pipeline_id, pipeline in load(name)["service"]["pipelines"].items():
        processors = [type_of(p) for p in pipeline.get("processors", [])]
        if "batch" in processors:
            assert processors[-1] == "batch", f"{name}: {pipeline_id}: batch is not last"


def test_tail_sampling_only_in_the_gateway_behind_trace_id_load_balancing() -> None:
    for name in CONFIGS:
        config = load(name)
        has_tail = any(type_of(p) == "tail_sampling" for p in config.get("processors") or {})
        assert has_tail == (name == "gateway.yaml"), name
    gateway = load("gateway.yaml")
    pipelines = gateway["service"]["pipelines"]
    assert gateway["exporters"]["loadbalancing"]["routing_key"] == "traceID"
    sampling_receivers = {
        r
        for p in pipelines.values()
        if "tail_sampling" in p.get("processors", [])
        for r in p["receivers"]
    }
    # The load balancer feeds exactly the receiver that does the sampling.
    lb_port = gateway["exporters"]["loadbalancing"]["resolver"]["dns"]["port"]
    ports = {
        r
        for r in sampling_receivers
        if str(lb_port) in str(gateway["receivers"][r]["protocols"]["grpc"]["endpoint"])
    }
    assert ports, "the loadbalancing exporter does not point at the tail-sampling receiver"
    for p in pipelines.values():
        if "loadbalancing" in p["exporters"]:
            assert "tail_sampling" not in p.get("processors", [])


def test_tail_sampling_policies_keep_errors_slow_updates_flood_waits_and_a_share() -> None:
    policies = load("gateway.yaml")["processors"]["tail_sampling"]["policies"]
    types = {p["type"] for p in policies}
    assert {"status_code", "latency", "probabilistic"} <= types
    assert any(
        p["type"] == "status_code" and p["status_code"]["status_codes"] == ["ERROR"]
        for p in policies
    )
    assert any(
        p["type"] == "numeric_attribute"
        and p["numeric_attribute"]["key"] == "telegram.api.error_code"
        and p["numeric_attribute"]["min_value"] == 429
        for p in policies
    )
    assert any(
        p["type"] == "ottl_condition"
        and any("telegram.flood_wait" in c for c in p["ottl_condition"]["spanevent"])
        for p in policies
    )


def test_gateway_exports_traces_to_jaeger_and_metrics_by_remote_write() -> None:
    gateway = load("gateway.yaml")
    pipelines = gateway["service"]["pipelines"]
    assert pipelines["traces/sampling"]["exporters"] == ["otlp_grpc/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheusremotewrite"]


def test_agent_receiver_is_bound_to_localhost_and_exports_to_the_gateway() -> None:
    agent = load("agent.yaml")
    for protocol in agent["receivers"]["otlp"]["protocols"].values():
        assert protocol["endpoint"].startswith("127.0.0.1:")
    assert agent["extensions"]["health_check"]["endpoint"].startswith("127.0.0.1:")
    for pipeline in agent["service"]["pipelines"].values():
        assert pipeline["exporters"] == ["otlp_grpc/gateway"]
        assert {"resourcedetection", "k8sattributes"} <= set(pipeline["processors"])


@pytest.mark.parametrize("name", CONFIGS)
def test_redaction_rules_present_in_every_pipeline(name: str) -> None:
    config = load(name)
    redaction = config["processors"]["redaction/token"]
    assert TOKEN_PATTERN in redaction["blocked_values"]
    transform = config["processors"]["transform/redact_token"]
    statements = " ".join(transform["trace_statements"])
    for field in ("span.name", 'span.attributes["url.full"]', 'span.attributes["url.path"]'):
        assert field in statements
    assert "bot$$1:REDACTED" in statements  # keeps the bot id, like otelbot's own redaction
    ids = {
        a["key"]
        for a in config["processors"]["attributes/drop_ids"]["actions"]
        if a["action"] == "delete"
    }
    assert {"telegram.chat.id", "telegram.user.id"} <= ids
    for pipeline_id, pipeline in config["service"]["pipelines"].items():
        processors = pipeline.get("processors", [])
        if pipeline_id == "traces" and name == "gateway.yaml":
            # the load-balancing tier: redacted here, the sampling tier masks too
            assert "transform/redact_token" in processors
            continue
        assert "redaction/token" in processors, f"{name}: {pipeline_id}"
        if type_of(pipeline_id) == "metrics":
            assert "attributes/drop_ids" in processors
        else:
            assert "transform/redact_token" in processors or pipeline_id == "traces/sampling"
