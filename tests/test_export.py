"""ONNX export and the torch-free runtime."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ASSETS, BLOCK_TORCH, TINY, TWO_STEPS, jsonl, run_cli, tiny_train_args

from hdc.config import InferenceConfig
from hdc.data import Document
from hdc.export import parity
from hdc.predictor import load_predictor


def documents():
    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_test.jsonl")]
    docs = [Document("id", f"d{i}", text=t) for i, t in enumerate(texts[:20])]
    docs.append(Document("id", "long", text=" ".join(texts)))  # ~5K tokens: several blocks below
    return docs


def test_bundle_layout_and_metadata(tiny_bundle):
    import onnx

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"block.onnx", "head.onnx", "tokenizer.json", "model.json"}
    assert manifest["parity_max_abs_diff"] <= 1e-4
    props = {p.key: p.value for p in onnx.load(tiny_bundle / "block.onnx").metadata_props}
    assert json.loads(props["labels"]) == ["cooking", "sport", "weather"]
    assert {"config", "hdc_version", "torch_version", "tokenizer_sha256"} <= set(props)
    assert not list(tiny_bundle.parent.glob(".tiny.tmp-*"))  # no half bundle left behind


@pytest.mark.parametrize("block_tokens", [256, 1024, 65536])
def test_parity_with_torch_at_several_shapes(tiny_run, tiny_bundle, block_tokens):
    settings = InferenceConfig(batch_tokens=4096, block_tokens=block_tokens)
    reference, candidate = load_predictor(tiny_run, settings), load_predictor(tiny_bundle, settings)
    assert parity(reference, candidate, documents()) <= 1e-4
    a = [o.probabilities.argmax() for o in reference.run(documents())]
    b = [o.probabilities.argmax() for o in candidate.run(documents())]
    assert a == b


def test_runtime_works_with_torch_blocked(tiny_bundle):
    code = BLOCK_TORCH + "from hdc.cli import main\nmain()\n"
    result = subprocess.run(
        [sys.executable, "-c", code, "predict", str(tiny_bundle), "-"],
        input="Bake the pie for forty minutes until golden.\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    [record] = jsonl(result.stdout)
    assert record["label"] == "cooking"
    assert "torch" not in result.stderr.lower()


def test_predictions_from_bundle_match_checkpoint(tiny_run, tiny_bundle):
    outputs = [jsonl(run_cli("predict", model, ASSETS / "tiny_test.jsonl").stdout) for model in (tiny_run, tiny_bundle)]
    assert [r["label"] for r in outputs[0]] == [r["label"] for r in outputs[1]]
    for a, b in zip(*outputs):
        assert abs(a["top"][0]["prob"] - b["top"][0]["prob"]) <= 1e-4


def test_head_runs_in_bounded_batches(tiny_bundle, monkeypatch):
    predictor = load_predictor(tiny_bundle)
    batches = []
    classify = predictor.backend.classify
    monkeypatch.setattr(predictor.backend, "classify", lambda state: batches.append(1) or classify(state))
    together = np.stack([o.probabilities for o in predictor.run(documents())])
    calls = len(batches)
    monkeypatch.setattr("hdc.predictor.HEAD_BAG_ENTRIES", 1)  # every document's n-gram bag alone
    alone = np.stack([o.probabilities for o in predictor.run(documents())])
    assert len(batches) - calls == len(documents()) > calls
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_tampered_bundles_are_refused(tiny_bundle, tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bundle, truncated)
    data = (truncated / "block.onnx").read_bytes()
    (truncated / "block.onnx").write_bytes(data[: len(data) // 2])
    result = run_cli("predict", truncated, ASSETS / "folders")
    assert result.exit_code == 1 and "block.onnx" in result.stderr and "does not match the manifest" in result.stderr

    wrong_sha = tmp_path / "wrong_sha"
    shutil.copytree(tiny_bundle, wrong_sha)
    manifest = json.loads((wrong_sha / "manifest.json").read_text())
    manifest["files"]["head.onnx"] = "0" * 64
    (wrong_sha / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("evaluate", wrong_sha, ASSETS / "tiny_test.jsonl")
    assert result.exit_code == 1 and "head.onnx" in result.stderr

    missing = tmp_path / "missing"
    shutil.copytree(tiny_bundle, missing)
    (missing / "tokenizer.json").unlink()
    result = run_cli("predict", missing, "-", input="text\n")
    assert result.exit_code == 1 and "tokenizer.json: missing" in result.stderr


def test_int8_export(tiny_run, tmp_path):
    result = run_cli("export", tiny_run, tmp_path / "int8", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "int8" / "model.json").read_text())["quantize"] == "int8"
    predicted = jsonl(run_cli("predict", tmp_path / "int8", ASSETS / "tiny_test.jsonl").stdout)
    truth = [json.loads(line)["label"] for line in open(ASSETS / "tiny_test.jsonl")]
    assert np.mean([r["label"] == t for r, t in zip(predicted, truth)]) >= 0.9


@pytest.mark.parametrize("needed, chosen", [(0.0, "int8"), (1.01, "none")])
def test_quantize_auto_keeps_int8_only_where_it_keeps_enough_labels(tiny_run, tmp_path, monkeypatch, needed, chosen):
    """The choice follows the measured label agreement: a bar of 0 always takes int8, a bar above
    1 never does; the bundle, its model.json and the manifest say which, and no temporary folder
    is left beside the bundle."""
    import hdc.export

    monkeypatch.setattr(hdc.export, "AUTO_AGREEMENT", needed)
    out = tmp_path / "auto"
    result = run_cli("export", tiny_run, out, "--quantize", "auto", "--check", ASSETS / "tiny_valid.jsonl")
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)["quantize_choice"]
    assert choice["chosen"] == chosen and choice["documents"] == 60 and 0.9 <= choice["label_agreement"] <= 1
    assert json.loads((out / "model.json").read_text())["quantize"] == (None if chosen == "none" else "int8")
    assert f"int8 keeps the label of {choice['label_agreement']:.1%} of 60 --check documents" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto"]


def test_quantize_auto_without_check_names_the_flag(tiny_run, tmp_path):
    result = run_cli("export", tiny_run, tmp_path / "auto", "--quantize", "auto")
    assert result.exit_code == 2 and "--quantize auto needs --check FILE" in result.stderr
    assert not (tmp_path / "auto").exists()


def test_export_with_another_top_k(tiny_run, tmp_path):
    result = run_cli("export", tiny_run, tmp_path / "k3", "--phrases", "3")  # exits 1 if parity fails
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "k3" / "model.json").read_text())["config"]["model"]["top_k"] == 3
    outcome = next(load_predictor(tmp_path / "k3").run([Document("id", "d", text="Sunny and warm. " * 200)]))
    assert outcome.state.top_scores.shape[1] == 3


def test_a_model_whose_retrieved_phrases_read_each_other_exports_with_parity(tmp_path):
    """model.retrieved_layers adds layers to the head graph; export checks parity with torch and
    exits 1 where it fails."""
    run = tmp_path / "run"
    result = run_cli(*tiny_train_args(run, *TWO_STEPS, "--set", "model.retrieved_layers=1"))
    assert result.exit_code == 0, result.output
    result = run_cli("export", run, tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["parity_max_abs_diff"] < 1e-4


def test_a_linear_classifier_that_weighs_word_ngrams_apart_exports_with_parity(tmp_path):
    """Word n-grams in rows of their own, weighed × 4 in the linear classifier's input: the head
    graph does the same as torch (export exits 1 where parity fails), and the bundle predicts
    as the checkpoint does."""
    run = tmp_path / "run"
    words = ("--set", "model.ngram_word_orders=[1, 2]", "--set", "model.ngram_word_buckets=512")
    linear = ("--set", "model.ngram_linear=true", "--set", "train.ngram_linear_word_weight=[4.0]")
    unvalidated = ("--set", "data.valid_fraction=0", "--set", "train.linear_cv_below=0")  # so the grids' own picks
    args = ("train", "--config", TINY, "--train", ASSETS / "tiny_train.jsonl", "--out", run, *TWO_STEPS)
    result = run_cli(*args, *words, *linear, *unvalidated)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["fitted_after_training"]["word_weight"] == 4.0
    result = run_cli("export", run, tmp_path / "bundle")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["parity_max_abs_diff"] < 1e-4
    docs = documents()
    assert parity(load_predictor(run), load_predictor(tmp_path / "bundle"), docs) < 1e-4


def test_parity_documents_are_the_same_in_every_process(tiny_bundle):
    # the tokenizer's vocabulary comes back in hash order, which differs between processes
    script = (
        "import sys; from hdc.export import parity_documents; from hdc.predictor import load_predictor; "
        "print([d.read() for d in parity_documents(load_predictor(sys.argv[1]).info)])"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script, str(tiny_bundle)], capture_output=True, text=True) for _ in "ab"
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout


def test_the_same_checkpoint_exports_to_the_same_bytes(tiny_run, tmp_path):
    for name in ("a", "b"):
        assert run_cli("export", tiny_run, tmp_path / name).exit_code == 0
    for name in ("block.onnx", "head.onnx", "tokenizer.json", "model.json", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
