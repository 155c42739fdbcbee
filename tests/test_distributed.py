"""hdc batch on a local Ray cluster of 2 workers: every file in exactly one part, a killed worker
replaced, a stopped job finished by a rerun. Skipped where Ray Data is not installed (make test
installs it)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

pytest.importorskip("ray.data")

WORDS = "The Rovers won the match after a late goal. Heavy rain is expected across the north on Monday. "


def corpus(folder, n: int, repeat: int = 1):
    folder.mkdir()
    for i in range(n):
        (folder / f"doc{i:04d}.txt").write_text(f"Document {i}. " + WORDS * repeat)
    return folder


def records(output):
    return [json.loads(line) for part in sorted(output.glob("part-*.jsonl")) for line in part.read_text().splitlines()]


def test_every_file_lands_in_exactly_one_part_and_matches_predict(tiny_bundle, tmp_path):
    docs = corpus(tmp_path / "docs", 30)
    (docs / "bad.txt").mkdir()  # a folder named like a file: walked, empty
    out = tmp_path / "out"
    result = run_cli("batch", tiny_bundle, docs, "--output", out, "--workers", "2", "--shard-files", "4")
    assert result.exit_code == 0, result.output
    got = records(out)
    assert sorted(r["path"] for r in got) == sorted(str(p) for p in docs.glob("*.txt") if p.is_file())
    single = run_cli("predict", tiny_bundle, docs)
    assert sorted(got, key=lambda r: r["path"]) == sorted(
        map(json.loads, single.stdout.splitlines()), key=lambda r: r["path"]
    )


def test_a_killed_worker_is_replaced_and_no_file_is_lost_or_doubled(tiny_bundle, tmp_path):
    docs = corpus(tmp_path / "docs", 240, repeat=40)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hdc.cli", "batch", str(tiny_bundle), str(docs), "--output", str(out)]
    job = subprocess.Popen([*command, "--workers", "2", "--shard-files", "2"], stderr=subprocess.PIPE, text=True)
    killed = None
    while job.poll() is None and killed is None:
        parts = len(list(out.glob("part-*.jsonl"))) if out.exists() else 0
        if parts >= 2:
            found = subprocess.run(
                ["pgrep", "-f", r"^ray::MapWorker\(MapBatches\(ClassifyShards\)\)$"], capture_output=True, text=True
            )
            pids = [int(p) for p in found.stdout.split()]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = (pids[0], parts)
        time.sleep(0.05)
    _, stderr = job.communicate(timeout=600)
    assert killed is not None and killed[1] < 120, "the job ended before a worker could be killed"
    assert job.returncode == 0, stderr[-2000:]
    paths = [r["path"] for r in records(out)]
    assert len(paths) == len(set(paths)) == 240  # each file once


def test_a_rerun_finishes_a_stopped_job_and_refuses_other_inputs(tiny_bundle, tmp_path):
    docs = corpus(tmp_path / "docs", 12)
    out = tmp_path / "out"
    assert run_cli("batch", tiny_bundle, docs, "--output", out, "--shard-files", "3").exit_code == 0
    first = sorted(out.glob("part-*.jsonl"))
    first[1].unlink()  # as if the job had stopped before this shard
    stamps = {p.name: p.stat().st_mtime_ns for p in first if p.exists()}
    rerun = run_cli("batch", tiny_bundle, docs, "--output", out, "--shard-files", "3")
    assert rerun.exit_code == 0 and "3 done before, 1 to do" in rerun.stderr
    assert {p.name: p.stat().st_mtime_ns for p in sorted(out.glob("part-*.jsonl")) if p.name in stamps} == stamps
    assert len(records(out)) == 12
    (docs / "extra.txt").write_text("one more")
    other = run_cli("batch", tiny_bundle, docs, "--output", out, "--shard-files", "3")
    assert other.exit_code == 2 and "other inputs" in other.stderr
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    refused = run_cli("batch", tiny_bundle, docs, "--output", mine)
    assert refused.exit_code == 2 and "not an hdc batch folder" in refused.stderr and (mine / "notes.txt").exists()


def test_a_batch_worker_never_reads_ahead_beside_its_model(tiny_bundle, tmp_path):
    from hdc.config import InferenceConfig
    from hdc.distributed import ClassifyShards

    worker = ClassifyShards(str(tiny_bundle), InferenceConfig(threads=1), str(tmp_path))
    assert worker.classifier.predictor.backend.reads_ahead  # the bundle's backend would
    assert not worker.classifier.predictor.reads_ahead


def test_ray_reserves_as_many_cpus_for_a_worker_as_its_model_runs_threads():
    from hdc.config import InferenceConfig
    from hdc.distributed import worker_cpus

    assert worker_cpus(InferenceConfig(threads=3)) == 3
    assert worker_cpus(InferenceConfig(threads=0)) == 1  # the backend's choice counts as one
