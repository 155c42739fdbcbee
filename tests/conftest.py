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
# One epoch of two steps on the 240 tiny training documents.
TWO_STEPS = ("--set", "train.max_epochs=1", "--set", "train.step_tokens=16384", "--set", "train.fit_schedule=false")


# Python code that makes torch, lightning and onnx unimportable, as in a runtime-only install.
BLOCK_TORCH = (
    "import sys\n"
    "class Blocked:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'lightning', 'onnx'):\n"
    "            raise ImportError(f'No module named {name!r} (blocked)')\n"
    "sys.meta_path.insert(0, Blocked())\n"
)


def run_cli(*args: str, input: str | None = None):
    """Invoke `hdc ARGS` in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def tiny_train_args(out: Path, *extra: str) -> list[str]:
    """`hdc train` on the tiny assets with the tiny preset, writing to `out`."""
    train, valid = ASSETS / "tiny_train.jsonl", ASSETS / "tiny_valid.jsonl"
    return ["train", "--config", str(TINY), "--train", str(train), "--valid", str(valid), "--out", str(out), *extra]


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def same_records(a: list[dict], b: list[dict], tol: float = 1e-5) -> bool:
    """Equal prediction records, up to float noise in the probabilities: documents batched
    differently are padded differently, which moves the last printed digit."""

    def key(r: dict) -> str:  # ids and paths are unique, so this orders the records
        return json.dumps({k: v for k, v in r.items() if k != "top"}, sort_keys=True)

    def close(x: dict, y: dict) -> bool:
        top_x, top_y = x.get("top", []), y.get("top", [])
        return (
            {k: v for k, v in x.items() if k != "top"} == {k: v for k, v in y.items() if k != "top"}
            and [t["label"] for t in top_x] == [t["label"] for t in top_y]
            and all(abs(s["prob"] - t["prob"]) <= tol for s, t in zip(top_x, top_y))
        )

    return len(a) == len(b) and all(close(x, y) for x, y in zip(sorted(a, key=key), sorted(b, key=key)))


@pytest.fixture(scope="session")
def assets() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny model trained once for the whole session (a few seconds)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_cli(*tiny_train_args(out))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported to an ONNX bundle."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    result = run_cli("export", tiny_run, out)
    assert result.exit_code == 0, result.output
    return out
