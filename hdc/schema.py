"""The contract between hdc's torch half (training, the model, export) and its torch-free half
(the ONNX runtime, prediction, inspection, serving). No torch here, and nothing above this layer.

- `ModelInfo`: everything besides the weights that a model needs to classify, saved in every
  checkpoint and every bundle.
- The names of the tensors that cross between the two halves: the block graph's inputs and
  outputs, the head's inputs and outputs.
- `NEG`, the finite "minus infinity" of masked scores, on both sides.
- The bundle format and the run-directory layout.
- How logits become probabilities and probabilities become labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .config import Config, config_from_dict, config_to_dict
from .errors import HdcError, UsageError
from .text import Segmenter

NEG = -1e9  # a finite "minus infinity": masked scores stay finite, so nothing turns into NaN
VALID = NEG / 2  # scores above this are real phrases

# The block graph (HierarchicalClassifier.encode): one block of phrases in, a state out whose
# parts merge exactly across blocks (hdc.stream), plus each level's weights for inspection.
INPUTS = ("tokens", "phrase_sentence", "sentence_phrases", "selectable")
STATE = ("dense_max", "dense_sum", "dense_acc", "top_scores", "top_phrases", "top_states", "spare_scores")
WEIGHTS = ("word_weights", "phrase_weights", "sentence_scores", "phrase_scores")
# With model.dense_sentences, the block's best sentences too: the stream keeps the best of all.
DENSE_TOP = ("dense_top_scores", "dense_top_states")


def block_outputs(dense_top: bool) -> tuple[str, ...]:
    """The block graph's output names, for a model whose dense path reads every sentence or not."""
    return STATE + WEIGHTS + (DENSE_TOP if dense_top else ())


# The head graph (HierarchicalClassifier.classify): a merged state, and with the n-gram branch a
# document's distinct n-gram buckets and their counts (padded with 0), in; logits and the fusion
# weight of each selected phrase out.
HEAD_STATE = ("dense_sum", "dense_acc", "top_scores", "top_states", "spare_scores")
NGRAM_INPUTS = ("ngram_ids", "ngram_counts")
HEAD_OUTPUTS = ("logits", "fusion")

FORMAT = 3  # the bundle layout hdc.export writes and hdc.runtime reads (3: the head takes the spare scores)


def head_inputs(ngrams: bool) -> tuple[str, ...]:
    """The head graph's input names, for a model with or without the n-gram branch."""
    return HEAD_STATE + (NGRAM_INPUTS if ngrams else ())


# Keys added after models were first saved, at the values that describe a model saved without
# them: it pooled every sentence at inference (it still does), hashed word n-grams into the
# character n-grams' rows, and trained without the loss on the best sentences' pooling (a
# resumed or refitted run keeps training as it did).
SAVED_BEFORE = {"model": {"dense_sentences": 0, "ngram_word_buckets": 0}, "train": {"dense_cut_loss": 0.0}}


@dataclass(frozen=True)
class ModelInfo:
    """Everything besides the weights that a model needs to classify."""

    config: Config
    labels: tuple[str, ...]
    multilabel: bool
    tokenizer: str  # the tokenizer's JSON
    version: str

    @classmethod
    def from_dict(cls, raw: dict) -> ModelInfo:
        config = raw["config"] | {
            section: values | (raw["config"].get(section) or {}) for section, values in SAVED_BEFORE.items()
        }
        return cls(
            config=config_from_dict(config),
            labels=tuple(raw["labels"]),
            multilabel=bool(raw["multilabel"]),
            tokenizer=raw["tokenizer"],
            version=raw.get("version", "unknown"),
        )

    def to_dict(self) -> dict:
        return {
            "config": config_to_dict(self.config),
            "labels": list(self.labels),
            "multilabel": self.multilabel,
            "tokenizer": self.tokenizer,
            "version": self.version,
        }

    def with_model(self, **changes) -> ModelInfo:
        """This info with some model settings changed (inference ones, such as top_k)."""
        return replace(self, config=replace(self.config, model=replace(self.config.model, **changes)))

    def segmenter(self) -> Segmenter:
        """The tokenizer and the text -> phrases cut the model was trained with."""
        try:
            tokenizer = Tokenizer.from_str(self.tokenizer)
        except Exception as e:  # tokenizers raises its own exception types
            raise HdcError(f"its tokenizer is unreadable ({str(e).splitlines()[0]})") from None
        m = self.config.model
        return Segmenter(
            tokenizer,
            m.phrase_tokens,
            m.sentence_tokens,
            m.ngram_orders,
            m.ngram_buckets,
            m.ngram_raw,
            m.ngram_word_orders,
            m.ngram_word_buckets,
        )


@dataclass(frozen=True)
class RunLayout:
    """Where `hdc train` puts each file of a run directory."""

    root: Path

    ENTRIES = ("config.yaml", "labels.json", "tokenizer.json", "checkpoints", "logs", "summary.json", ".lock")

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.logs / "metrics.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


@dataclass(frozen=True)
class BundleLayout:
    """Where `hdc export` puts each file of a bundle. The manifest lists the sha256 of all the
    others, and the runtime checks each before it loads it."""

    root: Path

    FILES = ("block.onnx", "head.onnx", "tokenizer.json", "model.json")
    MANIFEST = "manifest.json"

    @property
    def block(self) -> Path:
        return self.root / "block.onnx"

    @property
    def head(self) -> Path:
        return self.root / "head.onnx"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def description(self) -> Path:
        return self.root / "model.json"

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST


def is_bundle(path: Path) -> bool:
    return path.is_dir() and BundleLayout(path).manifest.exists()


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint that a model path names: a .ckpt file, or a run directory's best.ckpt."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such model; pass a run directory, a .ckpt file or an exported bundle")
    if not path.is_dir():
        return path
    best = RunLayout(path).best
    if not best.exists():
        raise UsageError(
            f"{path}: not a run directory (no checkpoints/best.ckpt) and not a bundle (no {BundleLayout.MANIFEST})"
        )
    return best


# ---------------------------------------------------------------------------------------------
# Logits -> probabilities -> labels


def logits_to_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """[N, C] probabilities from logits: a sigmoid per label, or a softmax over the classes."""
    logits = logits.astype(np.float64)
    if multilabel:  # 1 / (1 + e^-x), written so that no exp overflows
        return np.exp(-np.logaddexp(0.0, -logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def decide(probabilities: np.ndarray, multilabel: bool, threshold: float) -> np.ndarray:
    """Predictions from probabilities [N, C]: class indices [N], or a 0/1 matrix [N, C] of the
    labels at or above `threshold`."""
    if multilabel:
        return (probabilities >= threshold).astype(np.int64)
    return probabilities.argmax(-1)


def chosen_labels(probabilities: np.ndarray, labels: Sequence[str], multilabel: bool, threshold: float) -> list[str]:
    """The labels `decide` gives one document, from its probabilities [C]."""
    decision = decide(probabilities[None], multilabel, threshold)[0]
    return [labels[i] for i in np.flatnonzero(decision)] if multilabel else [labels[int(decision)]]


def targets(label_sets: Iterable[tuple[str, ...]], labels: Sequence[str], multilabel: bool) -> np.ndarray:
    """Each document's labels as the model's target: a class index [N] (one label each), or a
    multi-hot row [N, C] float32."""
    index = {label: i for i, label in enumerate(labels)}
    label_sets = list(label_sets)
    if not multilabel:
        return np.asarray([index[s[0]] for s in label_sets], np.int64)
    out = np.zeros((len(label_sets), len(labels)), np.float32)
    for row, labels_of in enumerate(label_sets):
        out[row, [index[label] for label in labels_of]] = 1.0
    return out
