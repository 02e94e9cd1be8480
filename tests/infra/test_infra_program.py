"""The root Pulumi.yaml runs the quickstart infra program, and that program builds under the mocks."""

from __future__ import annotations

import runpy
import sys

from .support import REPO_ROOT, build

PROGRAM_DIR = REPO_ROOT / "examples" / "quickstart" / "infra"


def test_pulumi_yaml_points_at_the_quickstart_program() -> None:
    lines = (REPO_ROOT / "Pulumi.yaml").read_text().splitlines()
    main = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("main:"))
    assert (REPO_ROOT / main).resolve() == PROGRAM_DIR
    assert (PROGRAM_DIR / "__main__.py").is_file()


def test_quickstart_program_provisions_every_declared_queue() -> None:
    saved = list(sys.path)
    try:
        g = build(lambda: runpy.run_path(str(PROGRAM_DIR / "__main__.py"), run_name="__main__"))
    finally:
        sys.path[:] = saved
        sys.modules.pop("app", None)
    from queuerun import App

    program_app = g.result["app"]
    assert isinstance(program_app, App)
    topics = sorted(r.inputs["name"] for r in g.of_type("pubsub/topic:Topic") if not r.inputs["name"].endswith("-dlq"))
    assert topics == sorted(f"quickstart-{spec.name}" for spec in program_app.specs)
    service = g.named("quickstart-service").inputs
    assert {"name": "QUEUERUN_APP", "value": "app:app"} in service["template"]["containers"][0]["envs"]
    assert service["deletionProtection"] is True
