"""Training end to end through the CLI: train, resume, evaluate, predict; multi-label; vectors."""

import csv
import json

import numpy as np
import torch
from conftest import ASSETS, TINY, jsonl, run_cli, tiny_train_args

TWO_STEPS = ("--set", "train.max_epochs=1", "--set", "train.batch_tokens=16384")  # 240 docs: 2 batches


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


def test_batches_are_capped_and_follow_the_curriculum():
    import numpy as np

    from hdc.train import BucketBatchSampler

    rng = np.random.default_rng(0)
    phrases = rng.integers(1, 100, 400)
    tokens = phrases * 20
    lengths = set()
    for epoch in range(5):
        sampler = BucketBatchSampler(
            list(phrases), list(tokens), 8, 4096, True, 1, curriculum_epochs=2, max_tokens=2000, epoch=lambda e=epoch: e
        )
        batches = list(sampler)
        lengths.add(len(batches))
        assert all(len(b) * max(phrases[b]) * 8 <= 4096 or len(b) == 1 for b in batches)  # the token cap
        longest = max(tokens[i] for b in batches for i in b)
        assert longest <= {0: 500, 1: 1000}.get(epoch, 2000)  # epoch 0: <= 1/4 of max_tokens, epoch 1: 1/2
    assert len(lengths) == 1  # Lightning counts the batches once

    ranks = [list(BucketBatchSampler(list(phrases), list(tokens), 8, 4096, True, 1, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_sentence_dropout_keeps_inputs_consistent():
    import torch

    from hdc.stream import collate
    from hdc.text import Segmenter, train_tokenizer
    from hdc.train import drop_sentences

    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_train.jsonl")]
    segmenter = Segmenter(train_tokenizer(texts, 300), 8, 32)
    inputs = {k: torch.from_numpy(v) for k, v in collate([segmenter.segment(t) for t in texts[:8]]).items()}
    torch.manual_seed(0)
    dropped = drop_sentences(inputs, 0.5)
    present = dropped["sentence_phrases"][:, :, 0] >= 0
    assert present.any(-1).all()  # every document keeps a sentence
    assert present.sum() < (inputs["sentence_phrases"][:, :, 0] >= 0).sum()
    gone = dropped["phrase_sentence"] < 0
    assert (dropped["tokens"][gone] == 0).all() and not dropped["selectable"][gone].any()
    kept = dropped["sentence_phrases"][dropped["sentence_phrases"] >= 0]
    assert (
        dropped["phrase_sentence"]
        .gather(1, dropped["sentence_phrases"].clamp_min(0).flatten(1))
        .view_as(dropped["sentence_phrases"])[dropped["sentence_phrases"] >= 0]
        >= 0
    ).all() and len(kept)


def test_training_steps_select_fewer_phrases_than_inference():
    from dataclasses import replace

    from test_model import CONFIG, batch

    from hdc.config import Config, TrainConfig
    from hdc.predict import ModelInfo
    from hdc.train import LitClassifier

    config = Config(model=CONFIG, train=TrainConfig(select_k=1))
    module = LitClassifier(ModelInfo(config, ("a", "b"), False, tokenizer="{}", version="test"))
    module.train()  # training steps
    assert module.model(**batch(), return_attention=True)[1].selected.shape[-1] == 1
    module.eval()  # validation and inference
    assert module.model(**batch(), return_attention=True)[1].selected.shape[-1] == CONFIG.top_k
    default = LitClassifier(ModelInfo(replace(config, train=TrainConfig()), ("a", "b"), False, "{}", "test"))
    default.train()
    assert default.model(**batch(), return_attention=True)[1].selected.shape[-1] == CONFIG.top_k


def test_ngram_idf_ignores_rare_buckets():
    """Buckets in fewer than min_df training documents, and buckets no training document has,
    get no weight: their table rows were never (or barely) trained."""
    from hdc.text import Segments
    from hdc.train import ngram_idf

    def document(buckets):
        empty = np.zeros((0, 2), np.int64)
        return Segments(np.zeros((1, 1), np.int32), np.zeros(1, np.int32), empty, empty, None, np.array([buckets]))

    docs = [document([1, 2, 0]), document([1, 3, 3]), document([1, 2, 0])]
    idf = ngram_idf(docs, buckets=5, min_df=2)
    assert idf[0] == 0 and idf[3] == 0 and idf[4] == 0 and idf[5] == 0  # padding, df 1, df 0, df 0
    assert np.isclose(idf[1], 1.0) and np.isclose(idf[2], np.log(4 / 3) + 1)
    assert ngram_idf(docs, buckets=5, min_df=1)[3] > idf[2]  # kept at min_df 1: rarer, so heavier


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


def test_ngram_table_takes_sgd_steps_at_ngram_lr(tmp_path):
    """One step moves the n-gram table by -ngram_lr * schedule * gradient, so, measured from a
    run at ngram_lr 0 (which keeps the seeded initial table), doubling ngram_lr doubles the move."""
    tables = {}
    for lr in (0.0, 5.0, 10.0):
        out = tmp_path / str(lr)
        result = run_cli(
            *tiny_train_args(out), *TWO_STEPS, "--set", "train.max_steps=1", "--set", f"train.ngram_lr={lr}"
        )
        assert result.exit_code == 0, result.output
        tables[lr] = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["state_dict"][
            "model.ngram_embed.weight"
        ]
    once, twice = tables[5.0] - tables[0.0], tables[10.0] - tables[0.0]
    assert once.abs().max() > 1e-4
    assert torch.allclose(twice, 2 * once, atol=1e-6)


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


def test_ngram_linear_classifier_is_fitted_into_the_best_checkpoint(tmp_path):
    """model.ngram_linear: after training, best.ckpt holds scale x the weights of a LinearSVC
    fitted on the training documents' n-gram bags; last.ckpt keeps the zero table that training
    saw, so --resume goes on from the trained model alone."""
    from sklearn.svm import LinearSVC

    from hdc.checkpoint import load_checkpoint
    from hdc.data import load_examples
    from hdc.train import ngram_matrix

    out = tmp_path / "linear"
    grid = ("--set", "train.ngram_linear_c=[0.5]", "--set", "train.ngram_linear_scale=[2.0]")
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true", *grid)
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)["ngram_linear"]
    assert (fitted["c"], fitted["scale"]) == (0.5, 2.0) and "valid_macro_f1_after" not in fitted  # one candidate
    assert "n-gram linear classifier: C=0.5, scale 2" in result.stderr
    assert not torch.load(out / "checkpoints/last.ckpt", weights_only=True)["state_dict"]["model.ngram_linear"].any()

    model, info = load_checkpoint(out / "checkpoints/best.ckpt")
    examples = load_examples(ASSETS / "tiny_train.jsonl")
    segments = [info.segmenter().segment(e.text, max_tokens=info.config.data.max_tokens) for e in examples]
    features = ngram_matrix(segments, model.ngram_idf, "sublinear")
    svm = LinearSVC(C=0.5, dual=True, max_iter=5000).fit(features, [info.labels.index(e.label) for e in examples])
    assert model.ngram_linear.abs().max() > 0.1
    assert np.allclose(model.ngram_linear.numpy(), 2.0 * svm.coef_.T, atol=1e-5)
    assert np.allclose(model.ngram_linear_bias.numpy(), 2.0 * svm.intercept_, atol=1e-5)


def test_ngram_linear_choice_is_made_on_validation(tmp_path):
    out = tmp_path / "chosen"
    grid = ("--set", "train.ngram_linear_c=[0.1, 1.0]", "--set", "train.ngram_linear_scale=[0.5, 4.0]")
    result = run_cli(*tiny_train_args(out), *TWO_STEPS, "--set", "model.ngram_linear=true", *grid)
    assert result.exit_code == 0, result.output
    chosen = json.loads(result.stdout)["ngram_linear"]
    assert chosen["c"] in (0.1, 1.0) and chosen["scale"] in (0.5, 4.0)
    assert 0 <= chosen["valid_macro_f1_before"] <= 1 and 0 <= chosen["valid_macro_f1_after"] <= 1
    assert "validation macro-F1" in result.stderr


def test_fit_linear_gives_a_column_per_class():
    """Two classes: scikit-learn's one decision function goes to class 1 (class 0 keeps zeros).
    Multi-label: one column per label, zeros for a label on every document or on none."""
    from scipy.sparse import csr_matrix

    from hdc.train import fit_linear

    rng = np.random.default_rng(0)
    features = csr_matrix(rng.random((40, 6)))
    two = (features[:, 0].toarray().ravel() > 0.5).astype(int)
    weights, bias = fit_linear(features, two, 2, multilabel=False, c=1.0)
    assert weights.shape == (6, 2) and not weights[:, 0].any() and bias[0] == 0 and weights[0, 1] > 0
    labels = np.stack([two, np.ones(40), 1 - two], 1).astype(np.float32)
    weights, bias = fit_linear(features, labels, 3, multilabel=True, c=1.0)
    assert not weights[:, 1].any() and bias[1] == 0
    assert weights[0, 0] > 0 > weights[0, 2]
