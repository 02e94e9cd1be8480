"""The examples' Pulumi programs build under the mocks, and what they upload serves what they declare.

The root Pulumi.yaml runs the quickstart program; each of examples/profile_sync, checkout and fanout
has its own Pulumi.yaml. Every program provisions a topic per declared queue, ordering on FIFO
queues and the ingress its HTTP queues need; its uploaded archive, unpacked, loads the functions-
framework target and the App that ``QUEUERUN_APP`` names, without the repository on the path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from queuerun import App, names
from queuerun.settings import ENV
from queuerun.topology import dead_letter_policy_attempts
from queuerun_gcp import QueueRunApp

from .support import REPO_ROOT, Graph, build, extract, serve_from


@dataclass(frozen=True)
class Example:
    name: str
    project_file: Path
    module: str
    """The module that defines ``app``, as the program imports it and the service loads it."""
    ingress: str

    @property
    def program_dir(self) -> Path:
        return REPO_ROOT / "examples" / self.name / "infra"


PUBLIC = "INGRESS_TRAFFIC_ALL"
INTERNAL = "INGRESS_TRAFFIC_INTERNAL_ONLY"
EXAMPLES = {
    e.name: e
    for e in (
        Example("quickstart", REPO_ROOT / "Pulumi.yaml", "app", INTERNAL),
        Example("profile_sync", REPO_ROOT / "examples/profile_sync/Pulumi.yaml", "examples.profile_sync.app", PUBLIC),
        Example("checkout", REPO_ROOT / "examples/checkout/Pulumi.yaml", "examples.checkout.app", PUBLIC),
        Example("fanout", REPO_ROOT / "examples/fanout/Pulumi.yaml", "examples.fanout.app", INTERNAL),
        Example(
            "order_status", REPO_ROOT / "examples/order_status/Pulumi.yaml", "examples.order_status.app", PUBLIC
        ),
    )
}
_graphs: dict[str, Graph] = {}


def program_graph(example: Example) -> Graph:
    """The graph of the example's program, run as Pulumi runs it (built once per example)."""
    if example.name not in _graphs:
        _graphs[example.name] = build(example.program_dir)
    return _graphs[example.name]


def program_app(graph: Graph) -> App:
    """The App the program deploys: read from the one QueueRunApp among the program's globals."""
    (component,) = (v for v in graph.result.values() if isinstance(v, QueueRunApp))
    assert isinstance(component.args.app, App)
    return component.args.app


def project_settings(path: Path) -> dict[str, str]:
    """Top-level ``key: value`` lines of a Pulumi.yaml (no YAML parser in the dependencies)."""
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if line[:1].isalpha() and ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


examples = pytest.mark.parametrize("example", list(EXAMPLES.values()), ids=list(EXAMPLES))


@examples
def test_pulumi_yaml_runs_the_examples_program(example: Example) -> None:
    settings = project_settings(example.project_file)
    base = example.project_file.parent
    assert (base / settings["main"]).resolve() == example.program_dir
    assert (example.program_dir / "__main__.py").is_file()
    if example.project_file.parent != REPO_ROOT:
        assert settings["name"] == example.name
        assert "name: python" in example.project_file.read_text()
        assert (base / "../../.venv").resolve() == REPO_ROOT / ".venv"


@examples
def test_the_program_provisions_every_declared_queue(example: Example) -> None:
    g = program_graph(example)
    app = program_app(g)
    if example.module != "app":
        assert app is importlib.import_module(example.module).app  # the package the app's own tests import
    topics = {r.inputs["name"] for r in g.of_type("pubsub/topic:Topic")}
    assert topics == {names.topic_id(app.name, s.name) for s in app.specs} | {
        names.dead_letter_topic_id(app.name, s.name) for s in app.specs
    }
    subscriptions = {r.inputs["name"]: r.inputs for r in g.of_type("pubsub/subscription:Subscription")}
    for spec in app.specs:
        sub = subscriptions[names.subscription_id(app.name, spec.name)]
        assert sub["enableMessageOrdering"] is spec.fifo, spec.name
        assert sub["deadLetterPolicy"]["maxDeliveryAttempts"] == dead_letter_policy_attempts(spec.max_attempts)
    (service,) = g.of_type("cloudrunv2/service:Service")
    assert service.inputs["ingress"] == example.ingress
    assert (example.ingress == PUBLIC) is any(spec.http for spec in app.specs)
    assert service.inputs["deletionProtection"] is True


@examples
def test_the_uploaded_archive_serves_the_app_the_service_loads(example: Example, tmp_path: Path) -> None:
    g = program_graph(example)
    app = program_app(g)
    (service,) = g.of_type("cloudrunv2/service:Service")
    envs = {e["name"]: e["value"] for e in service.inputs["template"]["containers"][0]["envs"] if "value" in e}
    assert envs[ENV.APP] == f"{example.module}:app"

    (archive,) = (r.inputs["source"] for r in g.of_type("storage/bucketObject:BucketObject"))
    module_file = example.module.replace(".", "/") + ".py"
    assert module_file in archive.assets
    assert not [p for p in archive.assets if "/infra/" in f"/{p}"], "the Pulumi program is not part of the app"
    # Started as Cloud Run starts it: K_SERVICE set, the service's own environment.
    served = serve_from(extract(archive, tmp_path), app_target=envs[ENV.APP], env={**envs, "K_SERVICE": app.name})
    assert served == {
        "runtime": "queuerun/__init__.py",
        "app": app.name,
        "queues": sorted(spec.name for spec in app.specs),
    }
