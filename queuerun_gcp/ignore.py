"""Which files of a source directory a source deploy ships.

Two layers decide, in this order:

1. Always skipped, whatever the ignore files say (a ``!`` pattern cannot bring them back): the dev
   tooling's ``.queuerun/`` (job database, emulator logs), ``.env`` and ``.env.*`` files (secrets),
   VCS folders, virtualenvs (``.venv``, ``venv``, any folder holding ``pyvenv.cfg``), caches,
   ``node_modules``, ``*.egg-info``, the ignore files themselves and Pulumi's project and stack files
   (stack config may hold secrets). ``build/`` and ``dist/`` are skipped at the root only, where
   packaging tools write them: deeper down a folder of that name may be a package of the app.
2. The app's ignore files, in gitignore syntax with git's own rules (pathspec's ``GitIgnoreSpec``):
   ``.gcloudignore`` at the root when there is one, as ``gcloud`` reads it (its
   ``#!include:FILE`` line expands FILE's patterns in place; a missing FILE adds nothing), else every
   ``.gitignore`` in the tree, each relative to its folder, deeper ones overriding shallower ones.

Then the ``exclude`` patterns (``source_exclude``): fnmatch patterns over a path or one of its
leading folders. An ignored folder is not entered, so, as in git, nothing below it can be re-included,
and the walk never reads a virtualenv or ``node_modules``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pathspec

GCLOUDIGNORE: Final = ".gcloudignore"
GITIGNORE: Final = ".gitignore"
INCLUDE_DIRECTIVE: Final = "#!include:"

_SKIPPED_DIRS: Final = frozenset(
    {
        ".queuerun",
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "node_modules",
    }
)
_SKIPPED_ROOT_DIRS: Final = frozenset({"build", "dist"})
_SKIPPED_DIR_PATTERNS: Final = ("*.egg-info",)
_SKIPPED_FILES: Final = (".env", ".env.*", "*.pyc", "*.pyo", GCLOUDIGNORE, GITIGNORE, "Pulumi.yaml", "Pulumi.*.yaml")
_VENV_MARKER: Final = "pyvenv.cfg"

# (folder prefix relative to the root, e.g. "" or "pkg/", the rules of an ignore file found there)
_Rules = list[tuple[str, pathspec.GitIgnoreSpec]]


def always_skipped(rel: str, *, is_dir: bool, root: Path) -> bool:
    """Whether ``rel`` (a POSIX path relative to ``root``) is one of the paths never shipped."""
    name = rel.rsplit("/", 1)[-1]
    if not is_dir:
        return any(fnmatch.fnmatchcase(name, p) for p in _SKIPPED_FILES)
    return (
        name in _SKIPPED_DIRS
        or ("/" not in rel and name in _SKIPPED_ROOT_DIRS)
        or any(fnmatch.fnmatchcase(name, p) for p in _SKIPPED_DIR_PATTERNS)
        or (root / rel / _VENV_MARKER).is_file()
    )


def source_files(root: Path, exclude: Sequence[str] = (), *, ignore_files: bool = True) -> dict[str, Path]:
    """The files below ``root`` that ship, by relative POSIX path, sorted (see the module docstring).

    ``ignore_files=False`` reads no ``.gcloudignore``/``.gitignore`` (the runtime package's copy).
    """
    gcloudignore = root / GCLOUDIGNORE
    use_gitignores = ignore_files and not gcloudignore.is_file()
    rules: _Rules = []
    if ignore_files and not use_gitignores:
        rules.append(("", pathspec.GitIgnoreSpec.from_lines(_expand_includes(gcloudignore, set()))))
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        if use_gitignores and GITIGNORE in files:
            lines = (Path(folder) / GITIGNORE).read_text(encoding="utf-8").splitlines()
            rules.append((prefix, pathspec.GitIgnoreSpec.from_lines(lines)))
        # os.walk only enters the folders left in ``dirs``: pruning here is what skips a whole tree.
        dirs[:] = sorted(d for d in dirs if _ships(prefix + d, True, root, rules, exclude))
        for name in files:
            rel = prefix + name
            if (Path(folder) / name).is_file() and _ships(rel, False, root, rules, exclude):
                found[rel] = Path(folder) / name
    return dict(sorted(found.items()))


def _ships(rel: str, is_dir: bool, root: Path, rules: _Rules, exclude: Sequence[str]) -> bool:
    if always_skipped(rel, is_dir=is_dir, root=root):
        return False
    if _ignored(rel, is_dir, rules):
        return False
    return not any(fnmatch.fnmatchcase(rel, pattern) for pattern in exclude)


def _ignored(rel: str, is_dir: bool, rules: _Rules) -> bool:
    """git's verdict: the last matching pattern wins, deeper ignore files after shallower ones."""
    verdict = False
    for prefix, spec in rules:
        if not rel.startswith(prefix):
            continue
        # A trailing slash lets directory-only patterns ("build/") match folders and not files.
        match = spec.check_file(rel[len(prefix) :] + ("/" if is_dir else ""))
        if match.include is not None:
            verdict = match.include
    return verdict


def _expand_includes(path: Path, seen: set[Path]) -> list[str]:
    """The lines of a ``.gcloudignore``, each ``#!include:FILE`` replaced by FILE's lines (once)."""
    seen.add(path.resolve())
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith(INCLUDE_DIRECTIVE):
            lines.append(line)
            continue
        included = path.parent / line.removeprefix(INCLUDE_DIRECTIVE).strip()
        if included.is_file() and included.resolve() not in seen:
            lines.extend(_expand_includes(included, seen))
    return lines
