"""The contract between the torch half and the runtime: names, layouts, labels from logits."""

import numpy as np
import pytest

from hdc.config import Config
from hdc.errors import HdcError, UsageError
from hdc.schema import (
    HEAD_STATE,
    NGRAM_INPUTS,
    BundleLayout,
    ModelInfo,
    RunLayout,
    checkpoint_file,
    chosen_labels,
    decide,
    head_inputs,
    is_bundle,
    logits_to_probabilities,
    targets,
)
from hdc.text import train_tokenizer


def test_probabilities_sum_to_one_and_survive_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    p = logits_to_probabilities(logits, multilabel=False)
    assert np.isfinite(p).all() and np.allclose(p.sum(-1), 1) and p[0, 0] == 1.0
    sigmoid = logits_to_probabilities(logits, multilabel=True)
    assert np.isfinite(sigmoid).all() and sigmoid[1].tolist() == [0.5, 0.5, 0.5]


def test_decide_takes_the_best_class_or_every_label_at_the_threshold():
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert decide(p, False, 0.5).tolist() == [1, 0]
    assert decide(p, True, 0.5).tolist() == [[0, 1, 0], [1, 0, 0]]  # at the threshold counts
    assert chosen_labels(p[0], ("a", "b", "c"), True, 0.25) == ["b", "c"]
    assert chosen_labels(p[1], ("a", "b", "c"), False, 0.99) == ["a"]


def test_targets_are_indices_or_multi_hot_rows():
    assert targets([("b",), ("a",)], ["a", "b"], False).tolist() == [1, 0]
    assert targets([("a", "b"), ("b",)], ["a", "b"], True).tolist() == [[1, 1], [0, 1]]


def test_head_inputs_add_the_ngram_bag_only_with_ngrams():
    assert head_inputs(False) == HEAD_STATE and head_inputs(True) == HEAD_STATE + NGRAM_INPUTS


def test_run_and_bundle_layouts(tmp_path):
    run = RunLayout(tmp_path / "run")
    assert run.best == tmp_path / "run/checkpoints/best.ckpt" and run.last.name == "last.ckpt"
    assert {run.config.name, run.labels.name, run.tokenizer.name, run.summary.name} <= set(RunLayout.ENTRIES)
    bundle = BundleLayout(tmp_path / "b")
    assert [bundle.block.name, bundle.head.name, bundle.tokenizer.name, bundle.description.name] == list(bundle.FILES)
    assert not is_bundle(tmp_path / "b")


def test_checkpoint_file_names_what_is_missing(tmp_path):
    with pytest.raises(UsageError, match="no such model"):
        checkpoint_file(tmp_path / "nope")
    with pytest.raises(UsageError, match="not a run directory"):
        checkpoint_file(tmp_path)
    (tmp_path / "m.ckpt").write_bytes(b"x")
    assert checkpoint_file(tmp_path / "m.ckpt") == tmp_path / "m.ckpt"


def test_model_info_round_trips_and_refuses_a_broken_tokenizer():
    tokenizer = train_tokenizer(["one two three"] * 3, 300).to_str()
    info = ModelInfo(Config(), ("a", "b"), False, tokenizer, "0")
    assert ModelInfo.from_dict(info.to_dict()) == info
    assert info.with_model(top_k=3).config.model.top_k == 3 and info.config.model.top_k != 3
    with pytest.raises(HdcError, match="tokenizer is unreadable"):
        ModelInfo(Config(), ("a", "b"), False, "{not json", "0").segmenter()


def test_a_model_saved_before_newer_keys_keeps_working_as_trained():
    tokenizer = train_tokenizer(["one two three"] * 3, 300).to_str()
    saved = ModelInfo(Config(), ("a", "b"), False, tokenizer, "0").to_dict()
    del saved["config"]["model"]["dense_sentences"]  # as written before the keys existed
    del saved["config"]["train"]["dense_cut_loss"]
    del saved["config"]["model"]["ngram_word_buckets"]
    saved["config"]["train"]["lr"] = 0.123  # a key that was saved
    old = ModelInfo.from_dict(saved).config
    assert old.model.dense_sentences == 0 and old.train.dense_cut_loss == 0.0
    assert old.model.ngram_word_buckets == 0 and old.model.ngram_rows == 1 + old.model.ngram_buckets  # shared rows
    new = Config()  # a new model reads only its best sentences, and trains on that pooling too
    assert new.model.dense_sentences > 0 and new.train.dense_cut_loss > 0
    assert old.train.lr == 0.123
