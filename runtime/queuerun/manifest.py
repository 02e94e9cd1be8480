"""The manifest: an app's queue declarations as JSON, for infra repos that cannot import the app."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .names import app_name_problem
from .spec import QueueSpec

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    app: str
    queues: tuple[QueueSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "app": self.app, "queues": [q.to_dict() for q in self.queues]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ConfigurationError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("version") != MANIFEST_VERSION:
            raise ConfigurationError(f"{source}: version must be {MANIFEST_VERSION}, got {data.get('version')!r}")
        app = data.get("app")
        problem = app_name_problem(app)
        if problem:
            raise ConfigurationError(f"{source}: {problem}")
        queues = data.get("queues")
        if not isinstance(queues, list):
            raise ConfigurationError(f"{source}: 'queues' must be a list, got {queues!r}")
        return cls(app=str(app), queues=tuple(QueueSpec.from_dict(q) for q in queues))


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest written by ``queuerun manifest MODULE:APP``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"manifest {str(p)!r} cannot be read: {exc}") from exc
    return Manifest.from_dict(data, source=f"manifest {str(p)!r}")


def make_manifest(app: str, queues: Sequence[QueueSpec]) -> Manifest:
    return Manifest(app=app, queues=tuple(queues))
