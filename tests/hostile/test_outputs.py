"""Hostile cases, outputs: nothing hdc writes may destroy a user's file, lose a record or mix two runs.

Each case checks the exit code, the message and the files left behind."""

import csv
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, jsonl, run_cli, same_records, tiny_train_args

from hdc.io import Lock
from hdc.predictor import Predictor

HDC = [sys.executable, "-m", "hdc.cli"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def crash_after(monkeypatch, n: int) -> None:
    """Make the next prediction run die after `n` records, as a killed process would."""
    run = Predictor.run

    def dies(self, *args, **kwargs):
        for i, outcome in enumerate(run(self, *args, **kwargs)):
            if i == n:
                raise MemoryError("killed")
            yield outcome

    monkeypatch.setattr(Predictor, "run", dies)


def killed_partway(monkeypatch, model, inputs, output, n=25) -> Path:
    """Predict `inputs` into `output` and die after n records; the partial file left behind."""
    crash_after(monkeypatch, n)
    with pytest.raises(MemoryError):
        run_cli("predict", model, *inputs, "--output", output)
    monkeypatch.undo()
    return output.with_name(output.name + ".partial")


def interrupted_then_resumed(monkeypatch, model, inputs, output, n=25):
    """Predict `inputs` into `output`, die after n records, resume: the resumed run's result."""
    killed_partway(monkeypatch, model, inputs, output, n)
    return run_cli("predict", model, *inputs, "--output", output, "--resume")


# ---------------------------------------------------------------------------------------------
# export


def test_export_over_its_own_run_is_refused_and_the_run_is_intact(tiny_run):
    before = snapshot(tiny_run)
    result = run_cli("export", tiny_run, tiny_run)
    assert result.exit_code == 2 and "not a bundle hdc exported" in result.stderr
    assert snapshot(tiny_run) == before


def test_export_into_a_folder_of_user_files_is_refused(tiny_run, tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("precious")
    result = run_cli("export", tiny_run, thesis)
    assert result.exit_code == 2 and "'chapter1.tex'" in result.stderr
    assert (thesis / "chapter1.tex").read_text() == "precious" and len(list(thesis.iterdir())) == 1


def test_export_over_a_file_is_refused(tiny_run, tmp_path):
    target = tmp_path / "bundle"
    target.write_text("mine")
    result = run_cli("export", tiny_run, target)
    assert result.exit_code == 2 and "is a file" in result.stderr and target.read_text() == "mine"


def test_export_into_a_bundle_with_an_extra_user_file_is_refused(tiny_bundle, tiny_run, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "notes.txt").write_text("deployment notes")
    before = snapshot(bundle)
    result = run_cli("export", tiny_run, bundle)
    assert result.exit_code == 2 and "'notes.txt'" in result.stderr and snapshot(bundle) == before


def test_export_replaces_its_own_bundle_and_an_empty_folder(tiny_run, tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    assert run_cli("export", tiny_run, target).exit_code == 0
    first = snapshot(target)
    assert run_cli("export", tiny_run, target).exit_code == 0
    assert set(snapshot(target)) == set(first)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary folder left


def test_export_killed_at_any_point_leaves_the_old_bundle_or_the_new(tiny_run, tmp_path):
    target = tmp_path / "bundle"
    assert run_cli("export", tiny_run, target).exit_code == 0
    old = snapshot(target)
    for delay in (0.5, 2.0, 4.0, 6.0, 8.0):
        process = subprocess.Popen(
            [*HDC, "export", str(tiny_run), str(target), "--top-k", "3"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        now = snapshot(target)
        manifest = json.loads((target / "manifest.json").read_text())
        assert (
            now == old or {name: digest for name, digest in now.items() if name != "manifest.json"} == manifest["files"]
        ), f"a half bundle after a kill at {delay} s"
        assert run_cli("predict", target, "-", input="Rain on Monday.\n").exit_code == 0


# ---------------------------------------------------------------------------------------------
# predict --output and --resume


def test_resume_keeps_every_document_when_ids_repeat(tiny_run, tmp_path, monkeypatch):
    rows = [json.loads(line) for line in open(ASSETS / "tiny_test.jsonl")]
    data = tmp_path / "repeats.jsonl"
    data.write_text("".join(json.dumps({"id": f"doc{i % 10}", "text": r["text"]}) + "\n" for i, r in enumerate(rows)))
    expected = jsonl(run_cli("predict", tiny_run, data).stdout)
    output = tmp_path / "out.jsonl"
    resumed = interrupted_then_resumed(monkeypatch, tiny_run, [data], output)
    assert resumed.exit_code == 0, resumed.output
    got = jsonl(output.read_text())
    assert len(got) == 60 and [r["id"] for r in got] == [r["id"] for r in expected]
    assert [r["label"] for r in got] == [r["label"] for r in expected]


def test_resume_keeps_every_document_of_two_files_with_the_same_ids(tiny_run, tmp_path, monkeypatch):
    output = tmp_path / "out.jsonl"
    inputs = [ASSETS / "tiny_test.jsonl", ASSETS / "tiny_test.jsonl"]
    resumed = interrupted_then_resumed(monkeypatch, tiny_run, inputs, output, n=45)
    assert resumed.exit_code == 0 and len(jsonl(output.read_text())) == 120


def test_resume_after_a_torn_last_line_without_newline(tiny_run, tmp_path, monkeypatch):
    expected = jsonl(run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl").stdout)
    output = tmp_path / "out.jsonl"
    partial = killed_partway(monkeypatch, tiny_run, [ASSETS / "tiny_test.jsonl"], output)
    partial.write_bytes(partial.read_bytes().rstrip(b"\n"))  # the last record lost its newline
    resumed = run_cli("predict", tiny_run, ASSETS / "tiny_test.jsonl", "--output", output, "--resume")
    assert resumed.exit_code == 0 and "24 documents already" in resumed.stderr
    lines = output.read_text().splitlines()
    assert len(lines) == 60 and same_records([json.loads(line) for line in lines], expected)


def test_resume_with_other_inputs_is_refused_and_keeps_the_partial(tiny_run, tmp_path, monkeypatch):
    output = tmp_path / "out.jsonl"
    partial = killed_partway(monkeypatch, tiny_run, [ASSETS / "tiny_test.jsonl"], output, n=10)
    before = partial.read_bytes()
    result = run_cli("predict", tiny_run, ASSETS / "tiny_valid.jsonl", "--output", output, "--resume")
    assert result.exit_code == 2 and "written for other inputs" in result.stderr
    assert partial.read_bytes() == before


def test_resume_with_a_changed_document_is_refused(tiny_run, tmp_path, monkeypatch):
    data = tmp_path / "docs.jsonl"
    data.write_text((ASSETS / "tiny_test.jsonl").read_text())
    output = tmp_path / "out.jsonl"
    killed_partway(monkeypatch, tiny_run, [data], output, n=10)
    data.write_text(data.read_text().replace("the", "a", 1))  # same ids, other text
    result = run_cli("predict", tiny_run, data, "--output", output, "--resume")
    assert result.exit_code == 2 and "has changed" in result.stderr


def test_output_equal_to_an_input_is_refused_and_the_corpus_is_intact(tiny_run, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text((ASSETS / "tiny_test.jsonl").read_text())
    before = corpus.read_bytes()
    result = run_cli("predict", tiny_run, corpus, "--output", corpus)
    assert result.exit_code == 2 and "is also an input" in result.stderr
    assert corpus.read_bytes() == before


def test_output_inside_an_input_folder_is_not_read_as_input(tiny_run, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"{i}.txt").write_text("Bake the pie for forty minutes.")
    for _ in range(2):  # the second run finds the first run's output in the folder
        result = run_cli("predict", tiny_run, docs, "--output", docs / "predictions.jsonl")
        assert result.exit_code == 0, result.output
        assert len(jsonl((docs / "predictions.jsonl").read_text())) == 3


def test_output_over_a_users_file_is_refused(tiny_run, tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"my": "data"}\n')
    result = run_cli("predict", tiny_run, "-", "--output", notes, input="Rain.\n")
    assert result.exit_code == 2 and "not written by hdc" in result.stderr
    assert notes.read_text() == '{"my": "data"}\n'


def test_output_over_earlier_predictions_is_replaced(tiny_run, tmp_path):
    output = tmp_path / "out.jsonl"
    for text in ("Rain.\n", "Bake the pie.\nThe Rovers won.\n"):
        assert run_cli("predict", tiny_run, "-", "--output", output, input=text).exit_code == 0
    assert len(jsonl(output.read_text())) == 2


def test_output_in_a_missing_folder_is_created(tiny_run, tmp_path):
    output = tmp_path / "a" / "b" / "out.jsonl"
    result = run_cli("predict", tiny_run, "-", "--output", output, input="Rain.\n")
    assert result.exit_code == 0 and len(jsonl(output.read_text())) == 1


def test_a_second_predict_on_the_same_output_waits_for_none_and_mixes_nothing(tiny_run, tmp_path):
    output = tmp_path / "out.jsonl"
    partial = output.with_name("out.jsonl.partial")
    partial.write_text('{"id": "from-the-first-run"}\n')
    with Lock(partial, "test"):  # another process is writing it
        result = run_cli("predict", tiny_run, "-", "--output", output, input="Rain.\n")
    assert result.exit_code == 1 and "being written by another hdc process" in result.stderr
    assert partial.read_text() == '{"id": "from-the-first-run"}\n' and not output.exists()


def test_predict_killed_at_any_point_resumes_to_the_same_records(tiny_run, tmp_path):
    rows = (ASSETS / "tiny_test.jsonl").read_text().splitlines()
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps(json.loads(r) | {"id": f"{i}"}) + "\n" for i, r in enumerate(rows * 40)))
    expected = jsonl(run_cli("predict", tiny_run, data).stdout)
    output = tmp_path / "out.jsonl"
    partial = output.with_name("out.jsonl.partial")
    command = [*HDC, "predict", str(tiny_run), str(data), "--output", str(output), "--batch-tokens", "512"]
    for kill in range(3):
        process = subprocess.Popen(
            command + (["--resume"] if kill else []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        start = len(partial.read_text().splitlines()) if partial.exists() else 0
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            if partial.exists() and len(partial.read_bytes().splitlines()) > start + 200:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not output.exists(), "the run finished before it could be killed"
    result = subprocess.run(command + ["--resume"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert same_records(jsonl(output.read_text()), expected)
    assert not partial.exists() and not output.with_name("out.jsonl.partial.index").exists()


# ---------------------------------------------------------------------------------------------
# train --out


def test_train_into_a_folder_of_user_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: config\n")
    (out / "paper.pdf").write_bytes(b"%PDF")
    result = run_cli(*tiny_train_args(out))
    assert result.exit_code == 2 and "'paper.pdf'" in result.stderr
    assert (out / "config.yaml").read_text() == "my: config\n" and sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "paper.pdf",
    ]


def test_train_into_a_locked_run_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with Lock(out / ".lock", "test"):
        result = run_cli(*tiny_train_args(out))
    assert result.exit_code == 1 and "being written by another hdc process" in result.stderr
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_last_checkpoint_is_written_every_epoch_even_without_improvement(tmp_path):
    out = tmp_path / "run"
    # a learning rate too small to move validation: the best epoch stays the first
    frozen = ("--set", "train.lr=1e-12", "--set", "train.ngram_lr=0")  # steps below float32 rounding
    result = run_cli(*tiny_train_args(out, "--set", "train.max_epochs=3", *frozen))
    assert result.exit_code == 0, result.output
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    best = torch.load(out / "checkpoints/best.ckpt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (0, 2)


def validated_epochs(out: Path) -> list[str]:
    """The epoch of each validation row of the run's log, in order."""
    with open(out / "logs" / "metrics.csv", newline="") as f:
        return [row["epoch"] for row in csv.DictReader(f) if row.get("val_loss")]


def test_resume_drops_log_rows_of_an_epoch_without_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*tiny_train_args(out, "--set", "train.max_epochs=2")).exit_code == 0
    metrics = out / "logs" / "metrics.csv"
    with open(metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    # a killed run logged a third epoch's validation, then died before its checkpoint
    ghost = {key: "" for key in rows[0]} | {"epoch": "2", "val_loss": "99.0"}
    with open(metrics, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n").writerow(ghost)
    train, valid = ASSETS / "tiny_train.jsonl", ASSETS / "tiny_valid.jsonl"
    result = run_cli(
        "train", "--train", train, "--valid", valid, "--out", out, "--set", "train.max_epochs=3", "--resume"
    )
    assert result.exit_code == 0, result.output
    assert "99.0" not in metrics.read_text() and validated_epochs(out) == ["0", "1", "2"]


def test_killed_training_resumes_without_doing_an_epoch_twice(tmp_path):
    out = tmp_path / "run"
    command = [*HDC, *tiny_train_args(out, "--set", "train.max_epochs=5", "--set", "train.patience=10")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints/last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not (last.exists() and torch.load(last, weights_only=True)["epoch"] >= 1):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(last, weights_only=True)["epoch"] < 4, "the run finished before it could be killed"
    resume = [*HDC, "train", "--train", str(ASSETS / "tiny_train.jsonl"), "--out", str(out), "--resume"]
    subprocess.run(resume, check=True, capture_output=True)
    assert validated_epochs(out) == ["0", "1", "2", "3", "4"]
    assert json.loads((out / "summary.json").read_text())["best_epoch"] is not None
