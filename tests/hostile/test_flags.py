"""Hostile cases, flags and config values: each fails at once with exit 2 and a message that names
the key or flag, before anything is trained or written."""

import pytest
from conftest import ASSETS, TINY, run_cli


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_model=31", "model.d_model (31) must be divisible by model.heads (2)"),
        ("model.phrase_tokens=0", "model.phrase_tokens must be at least 1"),
        ("model.vocab_size=-5", "model.vocab_size must be at least 1"),
        ("model.dropout=1.5", "model.dropout must be at least 0 and below 1"),
        ("model.top_k=0", "model.top_k must be at least 1"),
        ("model.queries=0", "model.queries must be at least 1"),
        ("model.layers=0", "model.layers must be at least 1"),
        ("model.heads=0", "model.heads must be at least 1"),
        ("model.ngram_buckets=0", "model.ngram_buckets must be at least 1"),
        ("model.ngram_orders=[0, 2]", "model.ngram_orders must be at least 1"),
        ("model.d_model=12.5", "model.d_model must be a int"),
        ("train.lr=0", "train.lr must be above 0"),
        ("train.lr=nan", "train.lr must be above 0"),
        ("train.lr=inf", "train.lr must be above 0 and finite"),
        ("train.lr=-1", "train.lr must be above 0"),
        ("train.max_epochs=0", "train.max_epochs must be at least 1"),
        ("train.max_steps=0", "train.max_steps must be -1"),
        ("train.step_tokens=0", "train.step_tokens must be at least 1"),
        ("train.patience=-1", "train.patience must be at least 0"),
        ("train.label_smoothing=1", "train.label_smoothing must be at least 0 and below 1"),
        ("train.warmup_steps=-1", "train.warmup_steps must be at least 0"),
        ("train.seed=-1", "train.seed must be at least 0"),
        ("train.devices=0", "train.devices must be at least 1"),
        ("train.ngram_linear_c=[0]", "train.ngram_linear_c must be above 0"),
        ("data.max_tokens=0", "data.max_tokens must be at least 1"),
        ("data.valid_fraction=1", "data.valid_fraction must be at least 0 and below 1"),
        ("data.valid_fraction=nan", "data.valid_fraction must be at least 0 and below 1"),
        ("model.nope=1", "unknown key model.nope"),
        ("nosection.key=1", "unknown section 'nosection'"),
    ],
)
def test_a_bad_config_value_fails_before_training(tmp_path, override, message):
    out = tmp_path / "run"
    result = run_cli("train", "--config", TINY, "--train", ASSETS / "tiny_train.jsonl", "--out", out, "--set", override)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1", "1.5", "half"])
@pytest.mark.parametrize("command", ["predict", "evaluate", "inspect", "serve"])
def test_a_threshold_that_is_not_a_probability(tiny_run, command, value):
    extra = {"predict": ["-"], "evaluate": [ASSETS / "tiny_test.jsonl"], "inspect": ["-"], "serve": []}[command]
    result = run_cli(command, tiny_run, *extra, "--threshold", value, input="Rain.\n")
    assert result.exit_code == 2 and "--threshold" in result.output and "is not a number" in result.output


@pytest.mark.parametrize(
    "flags",
    [["--top-k", "0"], ["--batch-tokens", "10"], ["--block-tokens", "0"], ["--shard", "2/2"], ["--shard", "x"]],
    ids=lambda flags: " ".join(flags),
)
def test_bad_predict_flags(tiny_run, flags):
    result = run_cli("predict", tiny_run, "-", *flags, input="Rain.\n")
    assert result.exit_code == 2 and flags[0] in result.output and result.stdout.count("label") == 0


def test_resume_with_a_config_or_embeddings_is_refused(tiny_run, tmp_path):
    base = ["train", "--train", ASSETS / "tiny_train.jsonl", "--out", tiny_run, "--resume"]
    result = run_cli(*base, "--config", TINY)
    assert result.exit_code == 2 and "--config" in result.stderr and "own config.yaml" in result.stderr
    result = run_cli(*base, "--embeddings", ASSETS / "vectors.vec")
    assert result.exit_code == 2 and "--embeddings" in result.stderr


def test_old_spellings_still_work(tiny_run, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"body": "Rain today."}\n')
    result = run_cli("predict", tiny_run, data, "--text-field", "body", "--k", "1")
    assert result.exit_code == 0 and result.stdout.count('"label"') == 2  # "label" and one top entry
