"""``queuerun preview PROGRAM_DIR`` runs a Pulumi program under the mocks and reports on it.

Resources with their parents, the warnings the program logged, the problems a component refused
with; exit 0 when it built cleanly, 1 on problems or an exception, 2 when there is no program.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from queuerun_gcp import TYPE_TOKEN
from queuerun_gcp.preview import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, preview, run_cli

from .support import REPO_ROOT

QUEUERUN = Path(sys.executable).parent / "queuerun"


def shop_program(queues: str, *options: str) -> str:
    """A program declaring one QueueRunApp from explicit queues, with more keyword ``options``."""
    return "\n".join(
        [
            "from queuerun_gcp import QueueRunApp",
            f'QueueRunApp("shop", app=None, queues={queues}, image="us-docker.pkg.dev/p/r/shop:1",',
            f'            region="us-central1", {", ".join(options)})',
            "",
        ]
    )


BAD_QUEUES = shop_program('[{"name": "slow", "timeout": 601}, {"name": "emails", "max_attempts": 101}]')


def program(root: Path, main: str, *, name: str = "shop", files: dict[str, str] | None = None) -> Path:
    """A Pulumi project in ``root``: Pulumi.yaml and ``__main__.py``, plus any other files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n", encoding="utf-8")
    (root / "__main__.py").write_text(textwrap.dedent(main), encoding="utf-8")
    for path, text in (files or {}).items():
        (root / path).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_quickstart_lists_the_component_and_its_topics_under_it() -> None:
    # Given the repository root's Pulumi.yaml, whose main is examples/quickstart/infra
    report = preview(REPO_ROOT / "examples" / "quickstart")

    assert report.ok, report.render()
    assert report.program.main_dir == REPO_ROOT / "examples" / "quickstart" / "infra"
    (component,) = [r for r in report.resources if r.type == TYPE_TOKEN]
    assert component.name == "quickstart"
    topics = {r.name: r for r in report.resources if r.type == "gcp:pubsub/topic:Topic"}
    assert "quickstart-emails-topic" in topics
    assert {r.parent for r in topics.values()} == {component.urn}
    lines = report.render().splitlines()
    assert lines[0].startswith("Program examples/quickstart/infra (project queuerun-quickstart, stack dev): ")
    [topic_line] = [line for line in lines if " quickstart-emails-topic " in line]
    assert topic_line.split() == [
        "gcp:pubsub/topic:Topic",
        "quickstart-emails-topic",
        "(parent",
        TYPE_TOKEN,
        "quickstart)",
    ]
    assert lines[-1] == "Problems (0): none"


def test_refused_arguments_exit_1_with_every_problem_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = program(tmp_path / "shop", BAD_QUEUES)

    status = run_cli(str(root))

    out = capsys.readouterr().out
    assert status == EXIT_PROBLEMS
    problems = [line for line in out.splitlines() if line.startswith("  - QueueRunApp 'shop': ")]
    assert len(problems) == 2, out
    assert any("'slow'" in p and "timeout" in p and "601" in p for p in problems)
    assert any("'emails'" in p and "max_attempts" in p and "101" in p for p in problems)
    assert "Problems (2):" in out


def test_logged_warnings_are_listed_and_do_not_fail_the_preview(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = program(tmp_path / "warns", 'import pulumi\npulumi.log.warn("check the ingress")\n')

    status = run_cli(str(root))

    out = capsys.readouterr().out
    assert status == EXIT_OK
    assert "Warnings (1):\n  - check the ingress\n" in out


def test_a_program_that_raises_exits_1_naming_the_exception_and_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = program(tmp_path / "boom", 'import pulumi\n\nraise RuntimeError("no region")\n')

    status = run_cli(str(root))

    out = capsys.readouterr().out
    assert status == EXIT_PROBLEMS
    assert "Error: the program raised RuntimeError: no region (at " in out
    assert "__main__.py:3)" in out


def test_stack_config_and_overrides_reach_the_program(tmp_path: Path) -> None:
    # Given a stack file with a plain value, a secret and a structured value, and one override
    main = """
    import pulumi
    shop, gcp = pulumi.Config("shop"), pulumi.Config("gcp")
    pulumi.log.warn(" ".join([shop.get("greeting"), shop.get("limits"), gcp.get("project"), gcp.get("region")]))
    pulumi.log.warn(f"secret: {shop.require_secret('token') is not None}")
    """
    stack = "config:\n  shop:greeting: hello\n  limits: {max: 3}\n  shop:token:\n    secure: AAABAx\n  gcp:region: x\n"
    root = program(tmp_path / "cfg", main, files={"Pulumi.prod.yaml": stack})

    report = preview(root, stack="prod", config={"gcp:region": "europe-west1"})

    assert report.ok, report.render()
    # Then unnamespaced keys belong to the project, the override wins and gcp:project has its default
    assert report.warnings[0] == 'hello {"max": 3} preview-project europe-west1'
    assert report.program.config["shop:token"] == "<secret>"
    assert "shop:token" in report.program.secret_keys


def test_each_program_imports_its_own_modules(tmp_path: Path) -> None:
    # Given two programs with a top-level module of the same name
    for word in ("first", "second"):
        helper = {"helper.py": f"WORD = {word!r}\n"}
        program(tmp_path / word, "import helper, pulumi\npulumi.log.warn(helper.WORD)\n", files=helper)

    # Then the second does not get the first one's module
    assert preview(tmp_path / "first").warnings == ["first"]
    assert preview(tmp_path / "second").warnings == ["second"]
    assert "helper" not in sys.modules


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "no such directory"),
        ("no-project-file", "no Pulumi.yaml"),
        ("no-main", "has no __main__.py"),
    ],
)
def test_no_program_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str, message: str
) -> None:
    target = tmp_path / layout
    if layout == "no-project-file":
        target.mkdir()
    elif layout == "no-main":
        target.mkdir()
        (target / "Pulumi.yaml").write_text("name: shop\nmain: infra/\n", encoding="utf-8")

    status = run_cli(str(target))

    captured = capsys.readouterr()
    assert status == EXIT_USAGE
    assert message in captured.err
    assert captured.out == ""


def test_queuerun_preview_command_end_to_end(tmp_path: Path) -> None:
    ok = subprocess.run(
        [str(QUEUERUN), "preview", "examples/quickstart"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert any(line.split()[:2] == [TYPE_TOKEN, "quickstart"] for line in ok.stdout.splitlines())

    bad = subprocess.run(
        [str(QUEUERUN), "preview", str(program(tmp_path / "shop", BAD_QUEUES)), "--config", "gcp:project=p"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1, bad.stderr
    assert "Problems (2):" in bad.stdout and "'slow'" in bad.stdout

    missing = subprocess.run(
        [str(QUEUERUN), "preview", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode == 2
    assert "no such directory" in missing.stderr


def test_the_components_own_warnings_are_listed(tmp_path: Path) -> None:
    root = program(tmp_path / "shop", shop_program('[{"name": "emails"}]', "enable_apis=False"))

    report = preview(root)

    assert report.ok, report.render()
    assert [w for w in report.warnings if w.startswith("QueueRunApp 'shop': ") and "enable_apis" in w]


BLOCK_PULUMI = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pulumi" or name.startswith(("pulumi.", "pulumi_")):
            raise ImportError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from queuerun.cli import main
sys.exit(main(["preview", "."]))
"""


def test_without_pulumi_the_command_says_what_is_missing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_PULUMI], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stderr.startswith("queuerun preview: needs queuerun_gcp, pulumi and pulumi-gcp installed")
    assert "Traceback" not in done.stderr
