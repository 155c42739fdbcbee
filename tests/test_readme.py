"""The README's commands, run as written, in a folder laid out as the README assumes: the tiny
assets stand in for the news corpus, and configs/tiny.yaml for configs/news.yaml."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ASSETS, ROOT, TINY

from hdc.news import write_examples

# `make demo` and `make test` are the demo and this suite themselves, and the test's PATH already
# holds hdc. (`hdc serve` runs, below, in the background, for the `curl` line after it.)
NOT_HERE = ("make ", ". .venv/bin/activate", "pip install")  # make test installs the ray extra


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#") and not line.startswith(NOT_HERE)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "configs").mkdir()
    shutil.copy(TINY, tmp_path / "configs" / "news.yaml")
    (tmp_path / "data" / "news").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        shutil.copy(ASSETS / f"tiny_{split}.jsonl", tmp_path / "data" / "news" / f"{split}.jsonl")
    write_examples(tmp_path / "data" / "news" / "test.jsonl", tmp_path / "examples")  # as `make demo` does
    return tmp_path


def test_readme_commands_run_as_written(workdir):
    commands = readme_commands()
    assert any(c.startswith("hdc train") for c in commands) and any(c.startswith("hdc serve") for c in commands)
    env = os.environ | {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    port = str(free_port())
    server = None
    try:
        for command in commands:
            command = command.replace("8000", port)  # the README's port may be taken here
            if command.startswith("hdc serve"):
                server = subprocess.Popen(
                    ["bash", "-c", "exec " + command], cwd=workdir, env=env, stderr=subprocess.PIPE, text=True
                )
                deadline = time.monotonic() + 120
                while True:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                        break
                    except OSError:
                        assert server.poll() is None, server.stderr.read()
                        assert time.monotonic() < deadline, "hdc serve did not come up"
                        time.sleep(0.5)
                continue
            if command.startswith("curl") and shutil.which("curl") is None:
                continue
            done = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
            if command.startswith("curl"):
                assert json.loads(done.stdout)["label"] in ("cooking", "sport", "weather")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    runs = workdir / "runs"
    assert (runs / "news/checkpoints/best.ckpt").exists() and (runs / "news-all/checkpoints/best.ckpt").exists()
    assert (runs / "news-report/confusion.png").exists()
    predictions = [json.loads(line) for line in (runs / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 1 + 3 + 3 + 10 and not any("error" in p for p in predictions)
    assert len((runs / "news-test.jsonl").read_text().splitlines()) == 60
    for bundle in ("news-bundle", "news-bundle-int8", "news-bundle-k32"):
        assert (runs / bundle / "manifest.json").exists(), bundle
    assert (runs / "why.html").exists() and json.loads((runs / "why.json").read_text())
    assert (runs / "inspect" / "index.html").exists()
