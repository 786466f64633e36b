"""The `jaxlearn` command line: the console script, `python -m jaxlearn`, its errors."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxlearn.cli import build_parser, main
from jaxlearn.demo import DemoConfig, DemoError, new_run_dir, render_report, summary_line

ROOT = Path(__file__).resolve().parents[1]


def test_python_dash_m_jaxlearn_runs_the_command_line():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxlearn", "demo", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: jaxlearn demo [-h]")
    for flag in (
        "--data {digits,cifar10}",
        "--data-dir PATH",
        "--out DIR",
        "--quick",
        "--seed SEED",
        "--stages N",
    ):
        assert flag in proc.stdout


def test_the_console_script_is_declared_as_jaxlearn_cli_main():
    try:
        dist = importlib.metadata.distribution("jaxlearn")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        pytest.skip("jaxlearn is not installed (pip install -e .)")
    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    assert scripts == {"jaxlearn": "jaxlearn.cli:main"}


def test_no_subcommand_prints_the_help_and_fails(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: jaxlearn [-h] COMMAND") and "demo" in err


def test_the_parser_reads_every_option():
    a = build_parser().parse_args(
        [
            "demo",
            "--data",
            "cifar10",
            "--data-dir",
            "/d",
            "--out",
            "o",
            "--quick",
            "--seed",
            "7",
            "--max-train",
            "500",
            "--stages",
            "3",
            "--no-progress",
        ]
    )
    assert (a.data, a.data_dir, a.out, a.quick, a.seed, a.max_train, a.stages, a.no_progress) == (
        "cifar10",
        "/d",
        "o",
        True,
        7,
        500,
        3,
        True,
    )
    d = build_parser().parse_args(["demo"])
    assert (d.data, d.data_dir, d.out, d.quick, d.seed, d.max_train, d.stages) == (
        "digits",
        None,
        None,
        False,
        0,
        None,
        7,
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--seed", "-1"], "argument --seed: expected an int in [0, 4294967295], got -1"),
        (["demo", "--seed", str(2**63)], "--seed: expected an int in [0, 4294967295], got 92"),
        (["demo", "--max-train", "5"], "argument --max-train: expected an int >= 100, got 5"),
        (["demo", "--seed", "x"], "argument --seed: expected an int in [0, 4294967295], got 'x'"),
        (["demo", "--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
        (["demo", "--stages", "8"], "argument --stages: invalid choice: 8"),
        (["train"], "argument COMMAND: invalid choice: 'train'"),
    ],
)
def test_bad_arguments_exit_with_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--data", "cifar10"], "--data cifar10 needs --data-dir PATH"),
        (["demo", "--data-dir", "somewhere"], "--data-dir is only for --data cifar10"),
    ],
)
def test_unusable_options_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxlearn demo: error: ") and message in err
    assert err.count("\n") == 1 and list(tmp_path.iterdir()) == []


def test_an_out_path_that_is_a_file_is_refused(capsys, tmp_path):
    f = tmp_path / "taken"
    f.write_text("mine")
    assert main(["demo", "--out", str(f)]) == 2
    assert f"--out {f} exists and is not a folder" in capsys.readouterr().err
    assert f.read_text() == "mine"


def test_an_empty_out_folder_is_used_and_a_missing_one_created(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert new_run_dir(empty) == empty
    deep = tmp_path / "a" / "b"
    assert new_run_dir(deep) == deep and deep.is_dir()
    (deep / "report.md").write_text("x")
    with pytest.raises(DemoError, match="already exists and is not empty"):
        new_run_dir(deep)


def test_demo_config_checks_its_values():
    with pytest.raises(DemoError, match=r"--seed must be an int in \[0, 4294967295\], got -3"):
        DemoConfig(seed=-3)
    with pytest.raises(DemoError, match=r"--stages must be an int in \[1, 7\], got 0"):
        DemoConfig(stages=0)
    with pytest.raises(ValueError, match="--data must be one of"):
        DemoConfig(data="svhn")


def test_a_report_of_a_run_that_stopped_early_says_so():
    text = render_report(
        {
            "meta": {
                "data": "digits",
                "seed": 1,
                "quick": False,
                "jaxlearn": "0.1.0",
                "jax": "0.10.2",
                "device": "cpu",
            },
            "error": "stage 2 (Gradient check) failed: ValueError: boom",
            "timings": {"1. data": {"wall_s": 0.25, "cpu_s": 0.5}},
        }
    )
    assert text.startswith("# jaxlearn demo: digits, full run, seed 1\n")
    assert "**The run stopped early:** stage 2 (Gradient check) failed: ValueError: boom" in text
    assert "| 1. data | 0.2 | 0.5 |" in text and "## Summary" not in text
    with pytest.raises(ValueError, match="`stage` must be one of"):
        summary_line("plots", {})
