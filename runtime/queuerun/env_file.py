"""Settings files for the CLI's ``--env-file``: the runtime settings of one deployed app.

Two forms, told apart by a ``.json`` name or a leading ``{``:

- a JSON object of strings, as ``pulumi stack output queuerun_env --json`` prints it;
- ``KEY=VALUE`` lines: ``#`` comments and blank lines skipped, an optional ``export`` prefix,
  values optionally in single or double quotes (double quotes take ``\\"``, ``\\\\`` and ``\\n``).

Only runtime settings (``ENV``) may appear: a typo would otherwise be silently ignored and the
command would run against the wrong deployment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigurationError
from .settings import ENV

# Not from a file: Cloud Run sets K_SERVICE itself, and a file naming another file is a loop.
ALLOWED_KEYS: frozenset[str] = frozenset(ENV.names()) - {ENV.CLOUD_RUN_SERVICE, ENV.ENV_FILE}

_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}


def read_env_file(path: str | Path) -> dict[str, str]:
    """The settings in ``path``; ConfigurationError (one line, naming the file) if unreadable or wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"env file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"env file {str(path)!r}: not UTF-8 text") from None
    as_json = str(path).lower().endswith(".json") or text.lstrip()[:1] in ("{", "[")
    values = _parse_json(text, path) if as_json else _parse_lines(text, path)
    unknown = sorted(set(values) - ALLOWED_KEYS)
    if unknown:
        raise ConfigurationError(
            f"env file {str(path)!r}: not runtime settings: {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(ALLOWED_KEYS))})"
        )
    return values


def _parse_json(text: str, path: str | Path) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"env file {str(path)!r}: not valid JSON ({exc})") from None
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"env file {str(path)!r}: JSON must be an object of settings, not {type(data).__name__}"
        )
    bad = sorted(str(k) for k, v in data.items() if not isinstance(v, str))
    if bad:
        raise ConfigurationError(f"env file {str(path)!r}: values must be strings, not for {', '.join(bad)}")
    return dict(data)


def _parse_lines(text: str, path: str | Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ConfigurationError(f"env file {str(path)!r}, line {number}: expected KEY=VALUE, got {line[:80]!r}")
        key, value = match.group(1), match.group(2)
        values[key] = _value(value, f"env file {str(path)!r}, line {number}")
    return values


def _value(raw: str, where: str) -> str:
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = _closing_quote(raw, quote)
        if end < 0:
            raise ConfigurationError(f"{where}: unterminated {quote} quote")
        rest = raw[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise ConfigurationError(f"{where}: unexpected text after the quoted value: {rest[:40]!r}")
        inner = raw[1:end]
        return inner if quote == "'" else re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), inner)
    # Unquoted: a " #" starts a comment, as in shell.
    return re.split(r"\s+#", raw, maxsplit=1)[0].strip()


def _closing_quote(raw: str, quote: str) -> int:
    i = 1
    while i < len(raw):
        if quote == '"' and raw[i] == "\\":
            i += 2
            continue
        if raw[i] == quote:
            return i
        i += 1
    return -1
