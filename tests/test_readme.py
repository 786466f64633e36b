"""README.md: every ```python block runs as it is; the quickstart is the two commands."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import matplotlib
import pytest

from jaxlearn.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
TEST_COMMAND = "pip install -e '.[test]' && python -m pytest -q"


def _blocks(lang: str) -> list[tuple[str, str]]:
    """``(heading, code)`` of every fenced block of `lang`, in order."""
    out = []
    heading = ""
    for m in re.finditer(r"^(#{2,3} [^\n]*)$|^```(\w*)\n(.*?)^```$", README, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        elif m.group(2) == lang:
            out.append((heading, m.group(3)))
    return out


PYTHON = _blocks("python")


def test_the_readme_has_a_python_snippet_per_capability():
    headings = [h for h, _ in PYTHON]
    assert headings == [
        "Update rules, and chaining them with optax",
        "Learning-rate schedules",
        "Gradient check of a hand-written `custom_vjp`",
        "Sanity checks before training",
        "Babysitting a run: `fit`, checkpoints, `diagnose`",
        "Ensembles in one program",
        "Hyperparameter search, coarse to fine",
    ]


@pytest.mark.parametrize(
    "heading, code", PYTHON, ids=[h.split()[0].strip("`,:") for h, _ in PYTHON]
)
def test_python_snippet_runs(heading, code, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    namespace = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md ({heading})", "exec"), namespace)  # noqa: S102
    printed = out.getvalue()
    assert printed.strip(), f"the snippet '{heading}' prints nothing"
    # Spot checks of what the snippets claim in their comments.
    if heading.startswith("Update rules"):
        assert "[-0.001 -0.001]" in printed and "0.999" in printed
    elif heading.startswith("Learning-rate"):
        assert printed.splitlines()[0] == "[0.1, 0.1, 0.05, 0.025]"
    elif heading.startswith("Gradient check"):
        assert printed.splitlines()[-1] == "False 1e-03 uncomfortable"
        assert "OK: max relative error" in printed
    elif heading.startswith("Sanity"):
        assert printed.splitlines()[-1].startswith("PASS 9 = (10 - 1) +- 39% 10.04")


def test_the_quickstart_is_exactly_two_commands_and_ci_runs_the_second():
    quick = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", quick, re.S)
    lines = block.strip().splitlines()
    assert lines == ["pip install -e '.[all]' && jaxlearn demo", TEST_COMMAND]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TEST_COMMAND in ci


def test_every_demo_option_the_readme_shows_exists():
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]  # noqa: SLF001
    known = {s for a in demo._actions for s in a.option_strings}  # noqa: SLF001
    used = set(re.findall(r"jaxlearn demo[^\n`]*", README))
    flags = {f for line in used for f in re.findall(r"--[a-z][a-z-]*", line)}
    assert flags and flags <= known, flags - known
    for line in {x.strip() for x in used if "--" in x and "--help" not in x}:
        args = line.split("#")[0].split()[2:]
        build_parser().parse_args(["demo", *[os.path.expanduser(a) for a in args]])
