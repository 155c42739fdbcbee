"""Reliability: crash-safe training and prediction, determinism, sharding, DDP, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ASSETS, jsonl, run_cli, same_records, tiny_train_args

HDC = [sys.executable, "-m", "hdc.cli"]


def train_cmd(out: Path, *extra: str) -> list[str]:
    return [*HDC, *tiny_train_args(out, *extra)]


def metrics(out: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k.startswith("val_") and v}
        for row in csv.DictReader(open(out / "logs/metrics.csv"))
        if row.get("val_loss")
    ]


def test_killed_training_resumes_to_the_same_metrics(tmp_path):
    epochs = ("--set", "train.max_epochs=6", "--set", "train.patience=10")
    reference = tmp_path / "reference"
    subprocess.run(train_cmd(reference, *epochs), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(train_cmd(killed, *epochs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints/last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoints/last.ckpt").exists()
    assert not list((killed / "checkpoints").glob("*.tmp"))  # atomic: no torn checkpoint files
    done_before = len(metrics(killed))
    assert done_before < 6, "the run finished before it could be killed"

    subprocess.run(
        [
            *HDC,
            "train",
            "--train",
            str(ASSETS / "tiny_train.jsonl"),
            "--valid",
            str(ASSETS / "tiny_valid.jsonl"),
            "--out",
            str(killed),
            "--resume",
        ],
        check=True,
        capture_output=True,
    )
    assert metrics(killed)[-1] == metrics(reference)[-1]
    assert len(metrics(killed)) == 6


def test_same_seed_same_results(tmp_path):
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run_cli(*train_cmd(out)[3:]).exit_code == 0
        outputs.append((metrics(out), run_cli("predict", out, ASSETS / "tiny_test.jsonl").stdout))
    assert outputs[0] == outputs[1]


def test_predict_output_is_atomic_and_resumable(tiny_run, tmp_path, monkeypatch):
    output = tmp_path / "out.jsonl"
    full = run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl", "--output", output)
    assert full.exit_code == 0 and full.stdout == "" and not output.with_name("out.jsonl.partial").exists()
    expected = output.read_text().splitlines()
    assert len(expected) == 60
    output.unlink()

    # a run that dies after 25 records, the last one torn in half
    from hdc.predictor import Predictor

    run = Predictor.run

    def dies_after_25(self, *args, **kwargs):
        for n, outcome in enumerate(run(self, *args, **kwargs)):
            if n == 25:
                raise MemoryError("killed")
            yield outcome

    monkeypatch.setattr(Predictor, "run", dies_after_25)
    with pytest.raises(MemoryError):
        run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl", "--output", output)
    monkeypatch.setattr(Predictor, "run", run)
    partial = output.with_name("out.jsonl.partial")
    assert len(partial.read_text().splitlines()) == 25 and not output.exists()
    partial.write_bytes(partial.read_bytes()[:-30])

    resumed = run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl", "--output", output, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "24 documents already" in resumed.stderr
    assert same_records(jsonl(output.read_text()), jsonl("\n".join(expected)))


def test_shards_together_equal_the_whole(tiny_run, tmp_path):
    whole = jsonl(run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl", ASSETS / "folders").stdout)
    parts = [
        jsonl(run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl", ASSETS / "folders", "--shard", f"{i}/3").stdout)
        for i in range(3)
    ]
    assert same_records(whole, [r for part in parts for r in part])
    assert all(len(p) >= 20 for p in parts)


def test_two_process_ddp_matches_single_process_quality(tmp_path):
    out = tmp_path / "ddp"
    result = subprocess.run(
        train_cmd(out, "--devices", "2", "--strategy", "ddp_spawn", "--set", "train.max_epochs=4"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = run_cli("evaluate", out, ASSETS / "tiny_test.jsonl", "--json")
    assert json.loads(evaluated.stdout)["accuracy"] >= 0.9


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_launch(tmp_path):
    """The multi-node launch path of README, on one node: torchrun starts the 2 processes."""
    out = tmp_path / "torchrun"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "hdc.cli",
        *train_cmd(out, "--devices", "2", "--strategy", "ddp", "--set", "train.max_epochs=2")[3:],
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoints/best.ckpt").exists() and json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_slurm_launch(tmp_path):
    """What srun sets up, emulated: two tasks on one node, each started with its SLURM_* ids."""
    out = tmp_path / "slurm"
    port = str(free_port())
    processes = []
    for rank in range(2):
        env = os.environ | {
            "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_NNODES": "1",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank),
            "SLURM_NODEID": "0",
            "SLURM_JOB_NAME": "hdc-test",
            "SLURM_JOB_ID": "1",
            "SLURM_NODELIST": "127.0.0.1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        processes.append(
            subprocess.Popen(
                train_cmd(
                    out, "--devices", "2", "--num-nodes", "1", "--strategy", "ddp", "--set", "train.max_epochs=2"
                ),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors[0][-3000:]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


# ---------------------------------------------------------------------------------------------
# bad input: each case names the input and the fix, never a traceback


def no_traceback(result):
    assert "Traceback" not in result.output, result.output


def test_fifty_megabyte_line_and_non_utf8(tiny_run, tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "w") as f:
        for _ in range(50 * 1024):
            f.write("the rovers won the match after a late goal " * 23 + " ")  # one 50 MB line
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Heavy rain is expected across the north on Monday. Caf\xe9.".encode("latin-1"))
    result = run_cli("predict", tiny_run, huge, latin, "--batch-tokens", "4096")
    no_traceback(result)
    assert result.exit_code == 0
    records = jsonl(result.stdout)
    assert records[0]["label"] == "sport"
    assert "replaced" in records[1]["warnings"][0]


def test_document_empty_after_cleaning(tiny_run, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\t \n")
    result = run_cli("predict", tiny_run, blank)
    no_traceback(result)
    assert result.exit_code == 1 and "empty after cleaning" in jsonl(result.stdout)[0]["error"]


def test_corrupted_and_foreign_checkpoints(tiny_run, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    data = (tiny_run / "checkpoints/best.ckpt").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    result = run_cli("predict", truncated, "-", input="text\n")
    no_traceback(result)
    assert result.exit_code == 1 and "truncated or corrupted" in result.stderr

    import torch

    checkpoint = torch.load(tiny_run / "checkpoints/best.ckpt", weights_only=True)
    checkpoint["hdc"]["config"]["model"]["attention_kind"] = "other"  # written by another version
    foreign = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, foreign)
    result = run_cli("predict", foreign, "-", input="text\n")
    no_traceback(result)
    assert result.exit_code == 1 and "incompatible hdc version" in result.stderr and "attention_kind" in result.stderr

    not_hdc = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, not_hdc)
    result = run_cli("evaluate", not_hdc, ASSETS / "tiny_test.jsonl")
    assert result.exit_code == 1 and "not an hdc checkpoint" in result.stderr


def test_directory_without_readable_files(tiny_run, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / ".hidden").write_text("x")
    result = run_cli("predict", tiny_run, tmp_path / "docs")
    no_traceback(result)
    assert result.exit_code == 1 and "directory has no files" in result.stdout
