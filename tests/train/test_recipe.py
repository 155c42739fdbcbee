"""The training recipe end to end through the CLI: train, resume, evaluate, predict; multi-label;
word vectors; the moving average; a refit without validation."""

import csv
import json

import numpy as np
import torch
from conftest import ASSETS, TINY, TWO_STEPS, jsonl, run_cli, tiny_train_args


def test_train_two_steps_then_resume_evaluate_predict(tmp_path):
    out = tmp_path / "run"
    args = tiny_train_args(out)
    result = run_cli(*args, *TWO_STEPS)
    assert result.exit_code == 0, result.output
    for name in (
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "tokenizer.json",
        "config.yaml",
        "labels.json",
        "logs/metrics.csv",
    ):
        assert (out / name).exists(), name
    first = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert first["global_step"] == 2 and first["hdc"]["labels"] == ["cooking", "sport", "weather"]

    again = run_cli(*args, *TWO_STEPS)  # refusing to overwrite a run
    assert again.exit_code == 2 and "--resume" in again.output

    resumed = run_cli(
        "train", "--train", ASSETS / "tiny_train.jsonl", "--out", out, "--resume", "--set", "train.max_epochs=2"
    )
    assert resumed.exit_code == 0, resumed.output
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and last["epoch"] == 1  # the second epoch (0-based)
    rows = list(csv.DictReader(open(out / "logs/metrics.csv")))
    assert [r["epoch"] for r in rows if r["val_macro_f1"]] == ["0", "1"]
    best = torch.load(out / "checkpoints/best.ckpt", weights_only=True)
    assert json.loads(resumed.stdout)["best_epoch"] == best["epoch"] + 1  # the summary names the kept epoch

    evaluated = run_cli("evaluate", out, ASSETS / "tiny_test.jsonl", "--json", "--report", tmp_path / "report")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert metrics["n"] == 60 and set(metrics["per_class"]) == {"cooking", "sport", "weather"}
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000
    assert json.loads((tmp_path / "report" / "report.json").read_text())["confusion"]

    predicted = run_cli("predict", out / "checkpoints" / "best.ckpt", ASSETS / "folders", "--k", "2")
    assert predicted.exit_code == 0, predicted.output
    records = jsonl(predicted.stdout)
    assert len(records) == 12 and all(
        len(r["top"]) == 2 and r["label"] in ("cooking", "sport", "weather") for r in records
    )


def test_tiny_model_learns(tiny_run):
    result = run_cli(
        "evaluate", tiny_run, ASSETS / "tiny_test.csv", "--text-column", "body", "--label-column", "topic", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] >= 0.9


def test_multilabel_end_to_end(tmp_path):
    out = tmp_path / "ml"
    result = run_cli(
        "train", "--config", TINY, "--train", ASSETS / "multilabel.jsonl", "--out", out, "--set", "train.max_epochs=8"
    )
    assert result.exit_code == 0, result.output
    evaluated = run_cli("evaluate", out, ASSETS / "multilabel.jsonl", "--json")
    metrics = json.loads(evaluated.stdout)
    assert metrics["micro_f1"] > 0.8, metrics
    predicted = run_cli(
        "predict",
        out,
        "-",
        "--threshold",
        "0.5",
        input="Stir the soup slowly. The City won the match after a late goal.\n",
    )
    [record] = jsonl(predicted.stdout)
    assert isinstance(record["labels"], list) and "label" not in record
    assert all(0 <= t["prob"] <= 1 for t in record["top"])


def test_folder_per_class_and_word_vectors(tmp_path):
    out = tmp_path / "vec"
    result = run_cli(
        "train",
        "--config",
        TINY,
        "--train",
        ASSETS / "folders",
        "--out",
        out,
        "--embeddings",
        ASSETS / "vectors.vec",
        "--set",
        "data.valid_fraction=0.25",
    )
    assert result.exit_code == 0, result.output
    assert "tokens initialised" in result.stderr
    saved = torch.load(out / "checkpoints/best.ckpt", weights_only=True)
    assert saved["hdc"]["config"]["model"]["embed_dim"] == 8


def test_moving_average_is_what_is_validated_and_saved(tmp_path):
    """With train.ema_decay d, the checkpoint's weights after two steps are d * w1 + (1 - d) * w2
    (the average starts as a copy of w1); the raw w2 ride along, for --resume."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*tiny_train_args(one), *TWO_STEPS, "--set", "train.max_steps=1").exit_code == 0
    result = run_cli(*tiny_train_args(two), *TWO_STEPS, "--set", "train.ema_decay=0.25")
    assert result.exit_code == 0, result.output
    w1 = torch.load(one / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    saved = torch.load(two / "checkpoints/last.ckpt", weights_only=True)
    w2, average = saved["current_model_state"], saved["state_dict"]
    assert set(average) == set(w2) == set(w1)
    assert not torch.equal(w1["model.head.weight"], w2["model.head.weight"])
    for name in average:
        assert torch.allclose(average[name], 0.25 * w1[name] + 0.75 * w2[name], atol=1e-6), name


def test_refit_without_validation_keeps_the_last_epoch(tmp_path):
    """data.valid_fraction=0 and no --valid: every document trains, nothing validates, and
    best.ckpt is the last epoch's model."""
    out = tmp_path / "refit"
    args = ("train", "--config", TINY, "--train", ASSETS / "tiny_train.jsonl", "--out", out)
    result = run_cli(*args, "--set", "train.max_epochs=2", "--set", "data.valid_fraction=0")
    assert result.exit_code == 0, result.output
    assert "train: 240 documents, valid: none" in result.stderr
    assert "epoch 2/2: train_loss" in result.stderr
    best = torch.load(out / "checkpoints/best.ckpt", weights_only=True)
    last = torch.load(out / "checkpoints/last.ckpt", weights_only=True)
    assert best["epoch"] == last["epoch"] == 1 and best["global_step"] == last["global_step"]
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())
    rows = list(csv.DictReader(open(out / "logs/metrics.csv")))
    assert rows and all(r["train_loss"] and not r.get("val_macro_f1") for r in rows)
    summary = json.loads(result.stdout)
    assert summary["best_val_macro_f1"] is None and summary["best_epoch"] is None


def test_joined_documents_keep_the_epochs_step_count_and_the_model_still_learns(tmp_path):
    plain, joined = tmp_path / "plain", tmp_path / "joined"
    common = ("--set", "train.max_epochs=2", "--set", "train.fit_schedule=false", "--set", "train.grad_clip=1.0")
    assert run_cli(*tiny_train_args(plain), *common).exit_code == 0
    result = run_cli(*tiny_train_args(joined), *common, "--set", "train.join_tokens=4000")
    assert result.exit_code == 0, result.output
    # the same number of steps an epoch (Lightning counts them once), each over joined documents
    steps = [torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] for run in (plain, joined)]
    assert steps[0] == steps[1] > 0
    evaluated = run_cli("evaluate", joined, ASSETS / "tiny_test.jsonl", "--json")
    assert json.loads(evaluated.stdout)["accuracy"] > 0.5  # chance is 1/3


def test_frozen_corpus_embeddings_are_the_corpus_vectors_after_training(tmp_path):
    """train.embed_init=corpus starts the token embeddings at corpus_vectors of the training
    split; with train.embed_frozen they are still exactly those after training, while an unfrozen
    run moves them."""
    from hdc.checkpoint import model_from_checkpoint, read_checkpoint
    from hdc.data import load_examples
    from hdc.train.vectors import corpus_vectors

    frozen, moved = tmp_path / "frozen", tmp_path / "moved"
    corpus = ("--set", "train.embed_init=corpus")
    result = run_cli(*tiny_train_args(frozen), *TWO_STEPS, *corpus, "--set", "train.embed_frozen=true")
    assert result.exit_code == 0, result.output
    assert "token vectors: learnt from the training texts" in result.stderr
    assert run_cli(*tiny_train_args(moved), *TWO_STEPS, *corpus).exit_code == 0

    model, info = model_from_checkpoint(read_checkpoint(frozen / "checkpoints/last.ckpt"), "last.ckpt")
    segmenter = info.segmenter()
    segments = [
        segmenter.segment(e.text, max_tokens=info.config.data.max_tokens)
        for e in load_examples(ASSETS / "tiny_train.jsonl")
    ]
    start = corpus_vectors(
        segments, info.config.model.vocab_size, model.embed.embedding_dim, seed=info.config.train.seed
    )
    assert np.array_equal(model.embed.weight.detach().numpy(), start)
    other, _ = model_from_checkpoint(read_checkpoint(moved / "checkpoints/last.ckpt"), "last.ckpt")
    assert not np.allclose(other.embed.weight.detach().numpy(), start)


def test_token_swap_trains_a_different_model_from_the_same_seed(tmp_path):
    """train.token_swap changes what training sees, so the weights differ from a run without it."""
    plain, swapped = tmp_path / "plain", tmp_path / "swapped"
    assert run_cli(*tiny_train_args(plain), *TWO_STEPS).exit_code == 0
    result = run_cli(*tiny_train_args(swapped), *TWO_STEPS, "--set", "train.token_swap=0.3")
    assert result.exit_code == 0, result.output
    assert "token vectors: learnt from the training texts" in result.stderr
    a, b = (torch.load(p / "checkpoints/last.ckpt", weights_only=True)["state_dict"] for p in (plain, swapped))
    assert not torch.equal(a["model.head.weight"], b["model.head.weight"])


def test_class_weight_auto_is_balanced_only_on_uneven_classes_and_the_run_config_keeps_the_choice(tmp_path):
    import yaml

    rows = [json.loads(line) for line in open(ASSETS / "tiny_train.jsonl")]
    rare = [r for r in rows if r["label"] == "cooking"][:20]  # 80 : 80 : 20
    uneven = tmp_path / "uneven.jsonl"
    uneven.write_text(
        "".join(json.dumps(r) + "\n" for r in rows if r["label"] != "cooking")
        + "".join(json.dumps(r) + "\n" for r in rare)
    )
    for train, expected in ((ASSETS / "tiny_train.jsonl", "none"), (uneven, "balanced")):
        out = tmp_path / expected
        args = ("train", "--config", TINY, "--train", train, "--out", out, *TWO_STEPS)
        result = run_cli(*args, "--set", "train.class_weight=auto")
        assert result.exit_code == 0, result.output
        assert f"train.class_weight auto -> {expected}" in result.stderr
        assert yaml.safe_load((out / "config.yaml").read_text())["train"]["class_weight"] == expected
        assert json.loads(result.stdout)["class_weight_fitted"].startswith(f"train.class_weight auto -> {expected}")
