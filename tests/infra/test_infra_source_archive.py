"""A source deploy uploads a self-contained archive: the app, the queuerun runtime, requirements.txt, a Dockerfile.

queuerun is not on PyPI, so the component ships the installed runtime package in the archive, writes a
``requirements.txt`` of the runtime's dependencies merged with the app's own, and a ``Dockerfile`` that
runs the runtime's server unless the app has its own. Only the app ships: dev databases, secrets, VCS
folders, virtualenvs, caches and build outputs never, and the app's ignore files are honoured. Pulumi
never reaches the image.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
import types
from dataclasses import fields
from pathlib import Path
from typing import Any

import pulumi
import pytest

import queuerun
from queuerun.errors import ConfigurationError
from queuerun_gcp import QueueRunApp, QueueRunAppArgs, source
from queuerun_gcp.constants import RUNTIME_REQUIREMENTS
from queuerun_gcp.source import requirement_name, source_bundle

from .support import APP_SOURCE, REPO_ROOT, asset_file, asset_text, build, extract, serve_from, shop_args

RUNTIME_DIR = Path(queuerun.__file__).parent
APP_PY = 'from queuerun import App\n\napp = App("shop")\n\n@app.queue("emails")\ndef send(job, meta):\n    pass\n'


def registered_archive(**overrides: Any) -> tuple[str, pulumi.AssetArchive]:
    """The object name and archive the component registers for the shop app."""
    g = build(lambda: QueueRunApp("shop", **shop_args(**overrides)))
    inputs = g.named("shop-source-archive").inputs
    return inputs["name"], inputs["source"]


def app_dir(tmp_path: Path, files: dict[str, str] | None = None) -> Path:
    """An app source tree: ``app.py`` plus ``files`` (relative POSIX path -> content)."""
    root = tmp_path / "app"
    for name, content in {"app.py": APP_PY, **(files or {})}.items():
        path = root / name
        assert path.resolve().is_relative_to(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return root


def runtime_files() -> set[str]:
    return {
        p.relative_to(RUNTIME_DIR).as_posix()
        for p in RUNTIME_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


# --- the requirements ------------------------------------------------------------------------------


def test_runtime_requirements_are_the_runtime_packages_dependencies() -> None:
    declared = tomllib.loads((REPO_ROOT / "runtime" / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(RUNTIME_REQUIREMENTS) == sorted(declared)


def test_generated_requirements_never_carry_pulumi_or_queuerun() -> None:
    _, archive = registered_archive()
    names = {requirement_name(line) for line in asset_text(archive, "requirements.txt").splitlines()} - {None}
    assert names == {requirement_name(r) for r in RUNTIME_REQUIREMENTS}
    assert "functions-framework" not in names  # the image runs queuerun.server, not functions-framework
    assert not {n for n in names if n and (n.startswith("pulumi") or n.startswith("queuerun"))}


def test_the_apps_requirements_are_merged_after_the_runtimes(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {"requirements.txt": "# mine\nhttpx>=0.27\nrequests>=2.32  # newer\n"})
    _, archive = registered_archive(source=str(root), app_target="app:app")
    lines = asset_text(archive, "requirements.txt").splitlines()
    assert lines[-3:] == ["# mine", "httpx>=0.27", "requests>=2.32  # newer"]
    assert lines.index("requests>=2.31") < lines.index("# From the app's requirements.txt:") < len(lines) - 3
    assert isinstance(archive.assets["requirements.txt"], pulumi.StringAsset)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("pulumi>=3", "must not carry Pulumi"),
        ("Pulumi_GCP==10.2.0", "must not carry Pulumi"),
        ("queuerun-gcp", "uploads the queuerun runtime itself"),
        ("queuerun @ git+https://example.com/queuerun.git", "uploads the queuerun runtime itself"),
    ],
)
def test_app_requirements_that_would_install_pulumi_or_queuerun_are_refused(
    tmp_path: Path, mocks: Any, line: str, why: str
) -> None:
    root = app_dir(tmp_path, {"requirements.txt": f"httpx\n{line}\n"})
    with pytest.raises(ConfigurationError) as caught:
        QueueRunApp("shop", **shop_args(source=str(root), app_target="app:app"))
    (problem,) = caught.value.problems
    assert f"requirements.txt line 2 installs {line!r}" in problem and why in problem


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("Foo_Bar.baz>=1", "foo-bar-baz"),
        ("  # c", None),
        ("-r other.txt", None),
        ("x[extra] ; python_version>'3'", "x"),
    ],
)
def test_requirement_name(line: str, name: str | None) -> None:
    assert requirement_name(line) == name


# --- the archive's files -----------------------------------------------------------------------------


def test_the_archive_holds_the_app_and_the_whole_runtime_package_without_caches() -> None:
    _, archive = registered_archive()
    runtime = {path.removeprefix("queuerun/") for path in archive.assets if path.startswith("queuerun/")}
    assert runtime == runtime_files()
    assert "server/functions.py" in runtime
    assert asset_file(archive, "queuerun/server/functions.py") == RUNTIME_DIR / "server" / "functions.py"
    assert not [p for p in archive.assets if "__pycache__" in p or p.endswith(".pyc")]
    # The fixture app has its own main.py: app code, shipped like any other module.
    assert set(archive.assets) - {f"queuerun/{p}" for p in runtime} == {"main.py", "Dockerfile", "requirements.txt"}


def test_the_apps_own_main_py_is_uploaded_as_is() -> None:
    _, archive = registered_archive()
    assert asset_file(archive, "main.py") == APP_SOURCE / "main.py"


def test_no_main_py_is_generated(tmp_path: Path) -> None:
    _, archive = registered_archive(source=str(app_dir(tmp_path)), app_target="app:app")
    assert "main.py" not in archive.assets


def test_caches_pulumi_files_and_excluded_paths_stay_out(tmp_path: Path) -> None:
    root = app_dir(
        tmp_path,
        {
            "Pulumi.yaml": "name: x\n",
            "Pulumi.prod.yaml": "config: {}\n",
            "__pycache__/app.cpython-311.pyc": "",
            "infra/__main__.py": "import pulumi\n",
            "tests/test_app.py": "",
            "lib/util.py": "",
        },
    )
    _, archive = registered_archive(source=str(root), app_target="app:app", source_exclude=["infra", "test*"])
    app_files = {p for p in archive.assets if not p.startswith("queuerun/")}
    assert app_files == {"app.py", "lib/util.py", "Dockerfile", "requirements.txt"}


def test_source_package_uploads_the_app_under_its_package_path(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {"__init__.py": ""})
    _, archive = registered_archive(source=str(root), source_package="acme.shop", app_target="acme.shop.app:app")
    app_files = {p for p in archive.assets if not p.startswith("queuerun/")}
    assert app_files == {
        "acme/__init__.py",
        "acme/shop/__init__.py",
        "acme/shop/app.py",
        "Dockerfile",
        "requirements.txt",
    }
    assert asset_file(archive, "acme/shop/__init__.py") == root / "__init__.py"  # the app's own
    assert asset_text(archive, "acme/__init__.py") == ""  # generated: a regular package, not a namespace


# --- the digest naming the object ---------------------------------------------------------------------


def test_the_object_name_is_the_digest_of_the_bundle() -> None:
    name, _ = registered_archive()
    bundle = source_bundle(APP_SOURCE)
    assert name == f"source-{bundle.digest()}.zip"


def test_the_digest_changes_with_every_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = app_dir(tmp_path, {"requirements.txt": "httpx\n"})
    runtime_copy = tmp_path / "site" / "queuerun"
    shutil.copytree(RUNTIME_DIR, runtime_copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(source, "queuerun", types.SimpleNamespace(__file__=str(runtime_copy / "__init__.py")))

    def digest(**options: Any) -> str:
        return source_bundle(root, **options).digest()

    seen = [digest()]
    assert digest() == seen[0]  # stable
    (root / "app.py").write_text(APP_PY + "# edited\n")
    seen.append(digest())
    (root / "requirements.txt").write_text("httpx>=0.28\n")
    seen.append(digest())
    (runtime_copy / "server" / "functions.py").write_text("# a new runtime\n", encoding="utf-8")
    seen.append(digest())
    seen.append(digest(base_image="python:3.12-slim"))  # the generated Dockerfile
    seen.append(digest(package="acme.shop"))
    monkeypatch.setattr(source, "RUNTIME_REQUIREMENTS", (*RUNTIME_REQUIREMENTS, "grpcio>=1.60"))
    seen.append(digest())
    assert len(set(seen)) == len(seen), seen


# --- the archive serves ---------------------------------------------------------------------------------


def test_the_unpacked_archive_serves_the_app_without_the_repository(tmp_path: Path) -> None:
    root = app_dir(tmp_path / "src")
    _, archive = registered_archive(source=str(root), app_target="app:app")
    workspace = extract(archive, tmp_path / "workspace")
    assert 'CMD ["python", "-m", "queuerun.server"]' in (workspace / "Dockerfile").read_text()
    # What the service's environment gives the push server (the component sets these on Cloud Run).
    env = {
        "QUEUERUN_PUSH_AUDIENCE": "queuerun:p:shop",
        "QUEUERUN_PUSH_SERVICE_ACCOUNT": "shop-push@p.iam.gserviceaccount.com",
    }
    served = serve_from(workspace, app_target="app:app", env=env)
    assert served == {"runtime": "queuerun/__init__.py", "app": "shop", "queues": ["emails"]}


# --- only the app ships ---------------------------------------------------------------------------------


def shipped(root: Path, **options: Any) -> set[str]:
    """The app's paths in the bundle of ``root`` (the runtime copy and generated files left out)."""
    files = source_bundle(root, **options).files
    return {p for p in files if not p.startswith("queuerun/") and p not in ("Dockerfile", "requirements.txt")}


NEVER_SHIPPED = {
    ".queuerun/dev.sqlite3": "",
    ".queuerun/logs/pubsub.log": "",
    ".env": "TOKEN=secret\n",
    ".env.local": "TOKEN=secret\n",
    "lib/.env.production": "TOKEN=secret\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".hg/store": "",
    ".venv/lib/site.py": "",
    "venv/bin/activate": "",
    "env/pyvenv.cfg": "home = /usr/bin\n",
    "env/lib/site.py": "",
    "dist/shop-1.0.tar.gz": "",
    "build/lib/app.py": "",
    "shop.egg-info/PKG-INFO": "",
    "node_modules/left-pad/index.js": "",
    "__pycache__/app.cpython-311.pyc": "",
    "lib/__pycache__/util.cpython-311.pyc": "",
    ".mypy_cache/x.json": "",
    ".pytest_cache/v": "",
    ".ruff_cache/x": "",
    "lib/stale.pyc": "",
    "Pulumi.yaml": "name: x\n",
    "infra/Pulumi.dev.yaml": "config: {}\n",
}


def test_dev_state_secrets_vcs_virtualenvs_caches_and_build_outputs_never_ship(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {**NEVER_SHIPPED, "lib/util.py": "", "env.py": "", "lib/build/steps.py": ""})
    # A build/ folder below the root may be a package of the app: only the root one is packaging output.
    assert shipped(root) == {"app.py", "env.py", "lib/util.py", "lib/build/steps.py"}


def test_an_ignore_file_cannot_bring_back_what_never_ships(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {**NEVER_SHIPPED, ".gcloudignore": "!.env\n!.queuerun/\n!dist/\n"})
    assert shipped(root) == {"app.py"}


def test_gcloudignore_is_honoured(tmp_path: Path) -> None:
    root = app_dir(
        tmp_path,
        {
            ".gcloudignore": "# deploy only the app\ndocs/\n*.md\n!KEEP.md\n/data\n",
            ".gitignore": "lib/\n",  # not read: .gcloudignore wins, as with gcloud
            "docs/index.html": "",
            "README.md": "",
            "KEEP.md": "",
            "data/big.csv": "",
            "lib/data/small.csv": "",
            "lib/util.py": "",
        },
    )
    assert shipped(root) == {"app.py", "KEEP.md", "lib/data/small.csv", "lib/util.py"}


def test_gcloudignore_includes_gitignore_where_it_says_so(tmp_path: Path) -> None:
    root = app_dir(
        tmp_path,
        {
            ".gcloudignore": "#!include:.gitignore\n!notes/keep.txt\n",
            ".gitignore": "notes/*.txt\nscratch.py\n",
            "notes/a.txt": "",
            "notes/keep.txt": "",
            "scratch.py": "",
        },
    )
    assert shipped(root) == {"app.py", "notes/keep.txt"}


def test_gitignore_is_used_when_there_is_no_gcloudignore_nested_ones_too(tmp_path: Path) -> None:
    root = app_dir(
        tmp_path,
        {
            ".gitignore": "*.log\nlocal/\n",
            "server.log": "",
            "local/settings.py": "",
            "lib/.gitignore": "generated_*.py\n!keep.log\n",
            "lib/generated_models.py": "",
            "lib/keep.log": "",
            "lib/util.py": "",
            "generated_root.py": "",  # lib/.gitignore applies below lib/ only
        },
    )
    assert shipped(root) == {"app.py", "generated_root.py", "lib/keep.log", "lib/util.py"}


def test_source_exclude_still_applies_after_the_ignore_files(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {".gitignore": "*.log\n", "tests/test_app.py": "", "lib/util.py": "", "x.log": ""})
    assert shipped(root, exclude=("test*",)) == {"app.py", "lib/util.py"}


def test_the_digest_ignores_what_does_not_ship_and_follows_what_does(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {".queuerun/dev.sqlite3": "v1", ".env": "A=1\n"})
    before = source_bundle(root).digest()
    (root / ".queuerun" / "dev.sqlite3").write_bytes(b"a new job")
    (root / ".queuerun" / "emulator.log").write_text("started\n")
    (root / ".env").write_text("A=2\n")
    assert source_bundle(root).digest() == before
    (root / "app.py").write_text(APP_PY + "# edited\n")
    assert source_bundle(root).digest() != before


def test_the_digest_is_the_same_for_the_same_files_whatever_their_mtime_or_order(tmp_path: Path) -> None:
    files = {"lib/b.py": "b = 1\n", "lib/a.py": "a = 1\n", "z.py": ""}
    first = app_dir(tmp_path / "one", files)
    second = app_dir(tmp_path / "two", dict(reversed(list(files.items()))))
    os.utime(second / "lib" / "a.py", (1_000_000, 1_000_000))
    assert source_bundle(first).digest() == source_bundle(second).digest()


# --- the Dockerfile -------------------------------------------------------------------------------------


def test_the_generated_dockerfile_installs_the_requirements_then_copies_the_app_and_runs_the_server(
    tmp_path: Path,
) -> None:
    _, archive = registered_archive(source=str(app_dir(tmp_path)), app_target="app:app")
    lines = asset_text(archive, "Dockerfile").splitlines()
    assert lines[1] == "FROM python:3.11-slim"
    assert "ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1" in lines
    assert "WORKDIR /app" in lines
    # Requirements first: the dependency layer survives a change to the app's code.
    order = [lines.index(x) for x in ("COPY requirements.txt .", "RUN pip install -r requirements.txt", "COPY . .")]
    assert order == sorted(order)
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0") and lines.index(user[-1]) > order[-1]
    assert lines[-1] == 'CMD ["python", "-m", "queuerun.server"]'


def test_the_base_image_can_be_chosen(tmp_path: Path) -> None:
    bundle = source_bundle(app_dir(tmp_path), base_image="python:3.12-slim-bookworm")
    assert "FROM python:3.12-slim-bookworm" in str(bundle.files["Dockerfile"]).splitlines()
    assert bundle.generated_dockerfile


def test_an_apps_own_dockerfile_is_shipped_as_is(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {"Dockerfile": "FROM gcr.io/distroless/python3\n"})
    bundle = source_bundle(root)
    assert bundle.files["Dockerfile"] == root / "Dockerfile"
    assert not bundle.generated_dockerfile


def test_an_apps_own_dockerfile_is_at_the_archive_root_under_source_package(tmp_path: Path) -> None:
    root = app_dir(tmp_path, {"__init__.py": "", "Dockerfile": "FROM python:3.12\n"})
    files = source_bundle(root, package="acme.shop").files
    assert files["Dockerfile"] == root / "Dockerfile"
    assert "acme/shop/Dockerfile" not in files


# --- what the component refuses ------------------------------------------------------------------------


@pytest.mark.usefixtures("mocks")
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"app_target": "shop.app:app"}, "module 'shop.app' is not in the uploaded source (['app'])"),
        ({"app_target": "main:app"}, "module 'main' is not in the uploaded source (['app'])"),
        ({"source_package": "acme.shop", "app_target": "app:app"}, "module 'app' is not in the uploaded source"),
        ({"source_package": "acme-shop", "app_target": "app:app"}, "source_package must be a dotted Python package"),
        ({"app_target": "app:app", "source_exclude": "infra"}, "source_exclude must be a list of glob patterns"),
        ({"app_target": "app:app", "queuerun/server.py": ""}, "holds a queuerun/ directory"),
    ],
)
def test_a_source_that_could_not_serve_is_refused(tmp_path: Path, overrides: dict[str, Any], expected: str) -> None:
    files = {k: v for k, v in overrides.items() if k.endswith(".py")}
    options = {k: v for k, v in overrides.items() if k not in files}
    with pytest.raises(ConfigurationError) as caught:
        QueueRunApp("shop", **shop_args(source=str(app_dir(tmp_path, files)), **options))
    (problem,) = caught.value.problems
    assert expected in problem, problem


def test_source_package_needs_source(mocks: Any) -> None:
    with pytest.raises(ConfigurationError, match="source_package is only used with source="):
        QueueRunApp("shop", **shop_args(source=None, image="gcr.io/p/i", source_package="acme"))


# --- from_app_target: the layout and the target agree by construction ------------------------------------


def test_from_app_target_uploads_the_modules_package_under_its_path() -> None:
    args = QueueRunAppArgs.from_app_target("examples.profile_sync.app:app", region="europe-west1")
    from examples.profile_sync.app import app

    assert args.app is app
    assert Path(str(args.source)) == REPO_ROOT / "examples" / "profile_sync"
    assert (args.source_package, args.app_target, args.region) == (
        "examples.profile_sync",
        "examples.profile_sync.app:app",
        "europe-west1",
    )


def test_from_app_target_of_a_top_level_module_uploads_its_directory_at_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = app_dir(tmp_path)
    (root / "solo_app.py").write_text(APP_PY, encoding="utf-8")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, "solo_app", raising=False)
    args = QueueRunAppArgs.from_app_target("solo_app:app")
    assert (Path(str(args.source)), args.source_package, args.app_target) == (root, None, "solo_app:app")
    _, archive = registered_archive(**{f.name: getattr(args, f.name) for f in fields(args)} | {"region": "us-central1"})
    assert "solo_app.py" in archive.assets and "Dockerfile" in archive.assets


@pytest.mark.parametrize(
    ("target", "expected"),
    [("no_such_module_xyz:app", "cannot import 'no_such_module_xyz'"), ("examples.checkout.app", "'module:attribute'")],
)
def test_from_app_target_refuses_what_it_cannot_load(target: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        QueueRunAppArgs.from_app_target(target)
