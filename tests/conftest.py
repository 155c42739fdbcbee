"""Shared fixtures: the tiny assets, a tiny trained run, and a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hdc.cli import cli

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets"
TINY = ROOT / "configs" / "tiny.yaml"


def run_cli(*args: str, input: str | None = None):
    """Invoke `hdc ARGS` in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny model trained once for the whole session (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_cli(
        "train",
        "--config",
        TINY,
        "--train",
        ASSETS / "tiny_train.jsonl",
        "--valid",
        ASSETS / "tiny_valid.jsonl",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported to an ONNX bundle."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    result = run_cli("export", tiny_run, out)
    assert result.exit_code == 0, result.output
    return out
