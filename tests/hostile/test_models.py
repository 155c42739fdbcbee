"""Hostile cases, model files: every broken checkpoint, run or bundle is a one-line error that
names the file (exit 1), never a traceback, and nothing is written."""

import hashlib
import json
import shutil

import pytest
import torch
from conftest import ASSETS, run_cli


def fails_cleanly(result, *fragments, code=1):
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert result.stdout == ""


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    return bundle


def rewrite_checkpoint(path, change) -> None:
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)


def refresh_manifest(bundle, name) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("command", ["predict", "evaluate", "inspect", "export"])
def test_a_zero_byte_checkpoint(run_copy, tmp_path, command):
    (run_copy / "checkpoints/best.ckpt").write_bytes(b"")
    args = {"predict": ["-"], "evaluate": [ASSETS / "tiny_test.jsonl"], "inspect": ["-"], "export": [tmp_path / "b"]}
    result = run_cli(command, run_copy, *args[command], input="Rain.\n")
    fails_cleanly(result, "best.ckpt: not a readable checkpoint")
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_without_weights(run_copy):
    rewrite_checkpoint(run_copy / "checkpoints/best.ckpt", lambda c: c.pop("state_dict"))
    fails_cleanly(run_cli("predict", run_copy, "-", input="Rain.\n"), "without weights")


def test_a_checkpoint_with_an_unparsable_tokenizer(run_copy):
    rewrite_checkpoint(run_copy / "checkpoints/best.ckpt", lambda c: c["hdc"].update(tokenizer="{broken"))
    fails_cleanly(run_cli("predict", run_copy, "-", input="Rain.\n"), "tokenizer is unreadable")


def test_a_checkpoint_from_another_model_shape(run_copy):
    def shrink(checkpoint):
        checkpoint["state_dict"]["model.head.weight"] = torch.zeros(2, 2)

    rewrite_checkpoint(run_copy / "checkpoints/best.ckpt", shrink)
    fails_cleanly(run_cli("predict", run_copy, "-", input="Rain.\n"), "wrong shape: head.weight", "retrain")


def test_a_checkpoint_holding_objects(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"hdc": {"x": shutil.rmtree}}, path)
    result = run_cli("predict", path, "-", input="Rain.\n")
    fails_cleanly(result, "holds Python objects")
    assert "weights_only=False" not in result.stderr


def test_a_text_file_given_as_a_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_text("not a model")
    fails_cleanly(run_cli("predict", path, "-", input="Rain.\n"), "model.ckpt: not a readable checkpoint")


def test_a_folder_that_is_neither_run_nor_bundle(tmp_path):
    fails_cleanly(run_cli("predict", tmp_path, "-", input="Rain.\n"), "not a run directory", code=2)


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04"])
def test_resume_from_a_broken_last_checkpoint(run_copy, content):
    (run_copy / "checkpoints/last.ckpt").write_bytes(content)
    before = (run_copy / "logs/metrics.csv").read_bytes()
    result = run_cli("train", "--train", ASSETS / "tiny_train.jsonl", "--out", run_copy, "--resume")
    fails_cleanly(result, "--resume:", "last.ckpt", "start a new one")
    assert (run_copy / "logs/metrics.csv").read_bytes() == before


def test_a_bundle_with_an_unparsable_tokenizer(bundle_copy):
    (bundle_copy / "tokenizer.json").write_text("{broken")
    refresh_manifest(bundle_copy, "tokenizer.json")
    fails_cleanly(run_cli("predict", bundle_copy, "-", input="Rain.\n"), "tokenizer is unreadable")


def test_a_bundle_whose_tokenizer_was_altered(bundle_copy):
    (bundle_copy / "tokenizer.json").write_text("{}")
    fails_cleanly(run_cli("predict", bundle_copy, "-", input="Rain.\n"), "tokenizer.json: sha256", "altered")


def test_a_bundle_manifest_that_leaves_out_a_corrupted_graph(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["files"]["head.onnx"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    (bundle_copy / "head.onnx").write_bytes(b"corrupted")
    fails_cleanly(run_cli("predict", bundle_copy, "-", input="Rain.\n"), "head.onnx: not listed in manifest.json")


@pytest.mark.parametrize("manifest", ["{broken", "[]", '{"format": 3}', '{"format": 99, "files": {}}'])
def test_a_bundle_with_a_broken_manifest(bundle_copy, manifest):
    (bundle_copy / "manifest.json").write_text(manifest)
    fails_cleanly(run_cli("predict", bundle_copy, "-", input="Rain.\n"), "re-export")


def test_a_bundle_without_its_description(bundle_copy):
    (bundle_copy / "model.json").unlink()
    fails_cleanly(run_cli("evaluate", bundle_copy, ASSETS / "tiny_test.jsonl"), "model.json: missing")


def test_a_bundle_given_to_export(tiny_bundle, tmp_path):
    fails_cleanly(run_cli("export", tiny_bundle, tmp_path / "b"), "not a run directory", code=2)
