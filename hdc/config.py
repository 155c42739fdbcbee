"""Frozen configuration, one dataclass per concern, read from YAML plus `--set key=value` overrides.

A config file has up to three sections, `model`, `data` and `train`, whose keys are the fields
below. The resolved config is saved with every model, so a run directory or bundle always says
how it was built.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import UsageError

BOUNDS = (("low", "at least"), ("above", "above"), ("high", "at most"), ("below", "below"))


NGRAM_TFS = ("sublinear", "binary")  # an n-gram's term frequency: 1 + ln(count), or 1 if present
CLASS_WEIGHTS = ("none", "balanced")  # all classes alike, or each inversely to its frequency


def ranged(default, low=None, high=None, *, above=None, below=None):
    """A config field whose value (for a tuple, each item) must be at least `low`, above
    `above`, at most `high` and below `below`, where given. Checked when the config is built, so
    a bad value fails at once, naming its key."""
    return field(default=default, metadata={"low": low, "above": above, "high": high, "below": below})


def _fits(value: float, bounds: dict) -> bool:
    """`not` on each failing test, so NaN (false in every comparison) never fits."""
    return not (
        (bounds["low"] is not None and not value >= bounds["low"])
        or (bounds["above"] is not None and not value > bounds["above"])
        or (bounds["high"] is not None and not value <= bounds["high"])
        or (bounds["below"] is not None and not value < bounds["below"])
    )


class Checked:
    """Checks every `ranged` field of a section's dataclass, then the section's own rules."""

    SECTION = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if not any(f.metadata.get(key) is not None for key, _ in BOUNDS):
                continue
            value = getattr(self, f.name)
            if not all(_fits(item, f.metadata) for item in (value if isinstance(value, tuple) else (value,))):
                rule = " and ".join(
                    "finite" if f.metadata[key] == float("inf") else f"{text} {f.metadata[key]:g}"
                    for key, text in BOUNDS
                    if f.metadata[key] is not None
                )
                raise UsageError(f"{self.SECTION}.{f.name} must be {rule}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Rules between fields."""


@dataclass(frozen=True)
class ModelConfig(Checked):
    SECTION = "model"

    vocab_size: int = ranged(16384, 1)  # size of the BPE vocabulary trained on the training split
    embed_dim: int = ranged(0, 0)  # width of the token embeddings; 0 means d_model (--embeddings sets it)
    d_model: int = ranged(96, 1)
    heads: int = ranged(4, 1)
    layers: int = ranged(1, 1)  # encoder layers inside each phrase
    ff_mult: int = ranged(4, 1)
    dropout: float = ranged(0.1, 0, below=1)
    phrase_tokens: int = ranged(32, 1)  # T: a sentence is cut into phrases of at most T tokens
    sentence_tokens: int = ranged(256, 1)  # longer sentences are cut into pieces of this many tokens
    queries: int = ranged(2, 1)  # M learned retrieval queries of the sparse path
    top_k: int = ranged(8, 1)  # K phrases selected per query, whatever the document's length
    # Queries of a second retrieval hop, each conditioned on what the first hop's M queries found
    # (what a two-sentence fact needs). Exact within one streamed block (hdc.stream): an experiment.
    hop_queries: int = ranged(0, 0)
    # Transformer layers over the selected phrases before fusion, in which they read each other
    # (the HSA bypass, at the level of the retrieved phrases): fusion weighs each phrase alone, so
    # without them no phrase can change what another one means. An experiment.
    retrieved_layers: int = ranged(0, 0)
    # At inference the dense path pools only the N sentences it scores highest (0: every one;
    # training always pools every one). Pooling all of them, a document far longer than the
    # training ones averages its evidence away: on bench/needle.py's 64K-token test documents,
    # 0.50 accuracy with every sentence, 0.93 with the best 32, the same model (bench/RESULTS.md).
    dense_sentences: int = ranged(32, 0)
    sparse: bool = True  # the HSA path: top-K phrase retrieval
    dense: bool = True  # the HAN path: attention pooling over sentences (dense_sentences of them)
    # The hashed n-gram branch: character n-grams of these orders ([] turns them off), and word
    # n-grams (below). On by default: on small corpora the n-grams carry most of what is learnt.
    ngram_orders: tuple[int, ...] = ranged((2, 3, 4), 1)
    # Hashed word n-grams in the same bag, e.g. [1, 2] (lower-cased words of 2+ letters, as
    # scikit-learn's word analyzer): genre and topic lean on words, an outlet's style on characters.
    ngram_word_orders: tuple[int, ...] = ranged((1, 2), 1)
    ngram_buckets: int = ranged(262144, 1)  # hash table rows; each holds an ngram_dim-wide embedding
    # Word n-grams hash into rows of their own, this many, after the character n-grams' (0: into
    # the character n-grams' rows, as models saved before it did). Apart, the linear classifier
    # can weigh the two kinds against each other (train.ngram_linear_word_weight).
    ngram_word_buckets: int = ranged(262144, 0)
    ngram_dim: int = ranged(64, 1)
    # The n-grams of the text as written (case and whitespace kept, across words) instead of
    # scikit-learn's char_wb ones (lower-cased, within words); see hdc.text.char_ngrams.
    ngram_raw: bool = False
    ngram_tf: str = "sublinear"  # the branch's term frequency, one of NGRAM_TFS
    # Add a linear classifier on the n-gram bag, fitted to convergence after training (hdc.train):
    # the jointly trained branch stops where the deep part's epochs stop, well short of that.
    ngram_linear: bool = True

    @property
    def all_queries(self) -> int:
        """M, the retrieval queries of both hops: the rows of every per-query part of the state."""
        return self.queries + self.hop_queries

    @property
    def ngrams(self) -> bool:
        """Whether the model has the n-gram branch (character n-grams, word n-grams or both)."""
        return bool(self.ngram_orders or self.ngram_word_orders)

    @property
    def ngram_rows(self) -> int:
        """The n-gram tables' rows: padding, the character n-grams' buckets, the word n-grams'."""
        return 1 + self.ngram_buckets + (self.ngram_word_buckets if self.ngram_word_orders else 0)

    @property
    def ngram_words_from(self) -> int:
        """The first row of the word n-grams' own buckets; 0 where the two kinds are not apart
        (shared rows, or only one kind)."""
        apart = self.ngram_word_buckets and self.ngram_orders and self.ngram_word_orders
        return 1 + self.ngram_buckets if apart else 0

    def check(self) -> None:
        if self.d_model % self.heads:
            raise UsageError(f"model.d_model ({self.d_model}) must be divisible by model.heads ({self.heads})")
        if self.ngram_tf not in NGRAM_TFS:
            raise UsageError(f"model.ngram_tf must be sublinear or binary, got {self.ngram_tf!r}")
        if self.ngram_linear and not self.ngrams:
            raise UsageError("model.ngram_linear needs the n-gram branch: set model.ngram_orders, e.g. [2, 3, 4]")
        if self.sentence_tokens < self.phrase_tokens:  # a sentence holds whole phrases
            raise UsageError(
                f"model.sentence_tokens ({self.sentence_tokens}) must be at least model.phrase_tokens "
                f"({self.phrase_tokens})"
            )


@dataclass(frozen=True)
class DataConfig(Checked):
    SECTION = "data"

    text_column: str = "text"  # for CSV/TSV and JSONL
    label_column: str = "label"
    max_tokens: int = ranged(4096, 1)  # training and validation documents keep their first max_tokens tokens
    # What the linear classifier, fitted after training, reads of each document: up to this many
    # tokens, as prediction reads it whole. Its bag of n-grams costs little per token, and the
    # evidence of a long document may lie past max_tokens (on CUAD contracts, of a median 7K
    # tokens, macro-F1 0.61 -> 0.68).
    fit_max_tokens: int = ranged(65536, 1)
    # Held out of --train, stratified, when --valid is not given. 0 holds nothing out: a refit on
    # all the data, once settings and max_epochs were chosen on validation; the last epoch is kept.
    valid_fraction: float = ranged(0.1, 0, below=1)


@dataclass(frozen=True)
class TrainConfig(Checked):
    SECTION = "train"

    seed: int = ranged(13, 0)
    max_epochs: int = ranged(10, 1)
    max_steps: int = ranged(-1, -1)  # stop after this many optimizer steps; -1: no limit
    step_tokens: int = ranged(16384, 1)  # cap on the padded tokens of one training step's batch
    lr: float = ranged(2e-3, above=0, below=float("inf"))
    weight_decay: float = ranged(0.01, 0, below=float("inf"))
    warmup_steps: int = ranged(50, 0)
    # Fit step_tokens and warmup_steps to a small corpus (hdc.train.recipe.fit_schedule): smaller
    # batches until an epoch has enough steps, and warm-up within a tenth of all steps.
    fit_schedule: bool = True
    label_smoothing: float = ranged(0.1, 0, below=1)
    # "balanced": each class (multi-label: each label's positives) weighs in the loss inversely to
    # its frequency in the training split; "none": all alike; "auto": balanced where the classes
    # are uneven (hdc.train.module.uneven), else none, resolved when training starts and written
    # to the run's config.yaml. Over four uneven corpora balanced weights gained 0.4 points of
    # validation macro-F1 on average, +0.3 test (bench/RESULTS.md, "Accuracy on corpora hdc was
    # not tuned on"). (The linear classifier's weighting is chosen on validation:
    # ngram_linear_class_weight.)
    class_weight: str = "auto"
    # The token embeddings' start: "random", or "corpus": vectors from the training texts'
    # co-occurrences (hdc.train.vectors.corpus_vectors). --embeddings overrides both.
    embed_init: str = "random"
    # Keep the initial token embeddings through training. Tokens that training's documents use
    # then stay near the tokens used like them elsewhere, which training never sees.
    embed_frozen: bool = False
    sentence_dropout: float = ranged(0.0, 0, below=1)  # drop each training sentence with this probability
    token_dropout: float = ranged(0.0, 0, below=1)  # drop each training token with this probability
    # Replace each training token, with this probability, by one of its SWAP_NEIGHBOURS nearest
    # tokens in vectors learnt from the training texts (hdc.train.vectors): the same document in
    # words the corpus uses alike, so that a phrasing training never saw is less of a stranger.
    token_swap: float = ranged(0.0, 0, below=1)
    ngram_min_df: int = ranged(1, 0)  # n-gram buckets in fewer training documents get no weight
    # The n-gram table's learning rate (plain SGD, on the same schedule as `lr`). Its inputs are
    # L2-normalised TF-IDF weights of a few thousand n-grams, about 0.02 each, hence the size.
    ngram_lr: float = ranged(50.0, 0, below=float("inf"))
    # The n-gram linear classifier (model.ngram_linear): a LinearSVC's C, and how much its
    # scores weigh against the logits. Every pair is scored on validation and the best kept;
    # without validation the middle value of each.
    ngram_linear_c: tuple[float, ...] = ranged((1.0, 3.0, 10.0), above=0, below=float("inf"))
    # (News validation chose 4, the largest of 1-4, in all three seeds; up to 16 it chose 4, 16, 16.)
    ngram_linear_scale: tuple[float, ...] = ranged((1.0, 2.0, 4.0, 8.0, 16.0), above=0, below=float("inf"))
    # The TFs of the linear classifier's inputs, each tried with every C (model.ngram_tf names
    # them; without validation the first): on news validation binary TF gains 0.5 points of
    # macro-F1, on healthtweets 0.1.
    ngram_linear_tf: tuple[str, ...] = ("binary", "sublinear")
    # The linear classifier's class weights, each tried with every TF and C ("none", "balanced"
    # as in class_weight; without validation, class_weight's). Balanced weights lift the rare
    # labels of a multi-label corpus: CUAD macro-F1 0.55 -> 0.61. Where every class has about
    # as many documents as the others (within CLASS_WEIGHT_SPREAD), "balanced" is not tried.
    ngram_linear_class_weight: tuple[str, ...] = ("none", "balanced")
    # How much the word n-grams weigh against the character n-grams in the linear classifier's
    # input, before its L2 norm (with model.ngram_word_buckets). The TF, C and class weights are
    # chosen at the first; then the others are tried outward from it, in order of size, each way
    # while validation improves (without validation: the first). A question holds ~16 word
    # n-grams and ~112 character ones, so at 1 its words barely count: in a check on validation
    # (bench/RESULTS.md, "Would a validated word-block weight help elsewhere?") TREC questions
    # and SMS spam wanted 4, the largest tried, speeches, news and tweets 0.5, the smallest, and
    # 20 Newsgroups 1; with 0.25-8, TREC chose 8 and Dutch speeches 0.25, the ends again.
    ngram_linear_word_weight: tuple[float, ...] = ranged(
        (1.0, 0.0625, 0.125, 0.25, 0.5, 2.0, 4.0, 8.0, 16.0), above=0, below=float("inf")
    )
    # Multi-label: each label's decision threshold on the linear classifier's scores, and the
    # classifier's C with them, chosen by this many-fold cross-validation on the training split
    # (the F1 of the out-of-fold scores), kept where validation macro-F1 does not fall (0: every
    # threshold at 0). A LinearSVC's 0 suits a label on half the documents, not one on a tenth.
    threshold_folds: int = ranged(5, 0)
    # Single-label, with fewer validation documents than this (or none): the linear classifier's
    # TF, C and class weights are chosen by 5-fold cross-validation on the training split, and
    # validation chooses only the network's weight and the scale: a few dozen validation
    # documents choose among 120 mixes by chance as much as by merit. On the party corpora (77 and
    # 140) it moved no 3-seed mean by more than 0.4 points (bench/RESULTS.md). 0: off.
    linear_cv_below: int = ranged(200, 0)
    # The weights of the network's logits tried beside the linear classifier, with each (C, scale):
    # 0 leaves the linear classifier alone, where the network does not help on validation.
    deep_weights: tuple[float, ...] = ranged((1.0, 0.0), 0, below=float("inf"))
    patience: int = ranged(3, 0)  # early stopping on validation macro-F1, in epochs
    # Validate and save an exponential moving average of the weights, updated after every step
    # with this decay (0: off; 0.995 averages over about the last 200 steps).
    ema_decay: float = ranged(0.0, 0, below=1)
    curriculum_epochs: int = ranged(0, 0)  # epoch e < this trains on documents of <= max_tokens / 2^(this - e) tokens
    dense_warmup_steps: int = ranged(0, 0)  # curriculum: the dense path fades in over these steps
    # Phrases selected per query in training steps (0: model.top_k). Fewer than at inference
    # makes retrieval rank the deciding phrase near the top, not merely among the K: a long
    # document has far more phrases competing for the K slots than any training document.
    select_k: int = ranged(0, 0)
    # The share of the loss taken by the logits whose dense path pools only its
    # model.dense_sentences best sentences, as inference does; the rest by training's pooling of
    # every sentence (0: that alone). Every sentence keeps a gradient to rise by, and the head
    # learns the pooling that long documents get: on bench/needle.py's 1M-token documents, 1.000
    # against 0.933 without (needle-free ones: 1.00 against 0.33). A document of at most N
    # sentences pools the same both ways, so a corpus of short documents trains as without it.
    dense_cut_loss: float = ranged(0.5, 0, 1)
    # The epochs trained before that loss starts. Until the sentence scores rank the deciding
    # sentence high, a document's best N are filler, and a loss on them teaches the network to
    # remember documents: with the loss from the first step, bench/needle.py's validation stayed
    # at 0.45 (training 0.98) where the default reaches 0.99 in its first epoch.
    dense_cut_after: int = ranged(1, 0)
    # Label-preserving lengthening: after the curriculum, each epoch joins training documents of
    # the same label (the same label set, multi-label) into documents of up to this many tokens
    # (0: off). Retrieval then meets the look-alikes of many documents at once, as it will in a
    # long one, at no extra cost: each document is still seen once an epoch.
    join_tokens: int = ranged(0, 0)
    # Clip the gradient's norm to this before each step (0: off). On a needle task of the
    # long-document suite, one step at 1,060 of training sent the loss from 0.001 to 3.8 and the
    # model never came back from chance (bench/RESULTS.md, "The long-document suite").
    grad_clip: float = ranged(0.0, 0, below=float("inf"))
    threads: int = ranged(0, 0)  # torch intra-op threads; 0 keeps torch's default
    accelerator: str = "cpu"
    devices: int = ranged(1, 1)
    num_nodes: int = ranged(1, 1)
    strategy: str = "auto"  # e.g. ddp, ddp_spawn
    deterministic: bool = True

    def check(self) -> None:
        if self.class_weight not in ("auto", *CLASS_WEIGHTS):
            raise UsageError(f"train.class_weight must be auto, none or balanced, got {self.class_weight!r}")
        if self.embed_init not in ("random", "corpus"):
            raise UsageError(f"train.embed_init must be random or corpus, got {self.embed_init!r}")
        if self.max_steps == 0:
            raise UsageError("train.max_steps must be -1 (no limit) or at least 1, got 0")
        if not (
            self.ngram_linear_c and self.ngram_linear_scale and self.deep_weights and self.ngram_linear_word_weight
        ):
            raise UsageError(
                "train.ngram_linear_c, train.ngram_linear_scale, train.ngram_linear_word_weight and train.deep_weights "
                "must each list at least one number"
            )
        if self.threshold_folds == 1:
            raise UsageError("train.threshold_folds must be 0 (off) or at least 2, got 1")
        if not self.ngram_linear_class_weight or set(self.ngram_linear_class_weight) - set(CLASS_WEIGHTS):
            raise UsageError(
                f"train.ngram_linear_class_weight must list none, balanced or both, got {self.ngram_linear_class_weight!r}"
            )
        if not self.ngram_linear_tf or set(self.ngram_linear_tf) - set(NGRAM_TFS):
            raise UsageError(f"train.ngram_linear_tf must list sublinear, binary or both, got {self.ngram_linear_tf!r}")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class InferenceConfig(Checked):
    """How a trained model is run: set by the command line of predict, evaluate, inspect and
    serve, never saved with the model. The defaults here are the flags' defaults."""

    SECTION = "inference"

    top_labels: int = ranged(3, 1)  # labels listed per document, best first (--top-k)
    threshold: float = ranged(0.5, 0, 1)  # a multi-label model gives every label at or above it
    batch_tokens: int = ranged(32768, 256)  # short documents are batched up to this many padded tokens
    block_tokens: int = ranged(65536, 256)  # longer documents are streamed in blocks of this many tokens
    threads: int = ranged(0, 0)  # CPU threads; 0 lets the backend choose
    # Read and tokenize the next documents in a thread while the model runs, where the backend
    # gains from it (stream.Backend.reads_ahead). hdc batch turns it off: Ray gives a worker as
    # many CPUs as its model's threads, and a reader would take the next worker's (2 workers ran
    # 1.24x as fast as one with it, 1.64-1.67x without).
    read_ahead: bool = True
    top_sentences: int = ranged(5, 1)  # sentences an inspection summary shows (--top)
    top_phrases: int = ranged(3, 1)  # selected phrases per query it shows (--phrases)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(value, hint, where: str):
    """Check one value against its field's type; YAML gives lists where we keep tuples."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(hint)[0], where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML reads 3e-3 (no dot) as a string
            return float(value)
        except ValueError:
            raise UsageError(f"{where} must be a number, got {value!r}") from None
    if hint in (int, float, str) and not (isinstance(value, hint) and not isinstance(value, bool)):
        raise UsageError(f"{where} must be a {hint.__name__}, got {value!r}")
    return value


# Keys that were renamed, old -> new: configs and saved models that use the old name still load.
RENAMED = {"train.batch_tokens": "train.step_tokens"}


def _build(cls: type, values: dict, where: str):
    renamed = {
        old.partition(".")[2]: new.partition(".")[2] for old, new in RENAMED.items() if old.startswith(where + ".")
    }
    values = {renamed.get(k, k): v for k, v in values.items()}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise UsageError(f"unknown key {where}.{sorted(unknown)[0]}; valid keys are: {', '.join(sorted(known))}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()})


def config_from_dict(raw: dict | None) -> Config:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UsageError("a config must be a mapping with sections model, data and train")
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise UsageError(f"unknown config section {sorted(unknown)[0]!r}; valid sections are: model, data, train")
    sections = {}
    for name, cls in SECTIONS.items():
        values = raw.get(name) or {}
        if not isinstance(values, dict):
            raise UsageError(f"config section {name!r} must be a mapping")
        sections[name] = _build(cls, values, name)
    return Config(**sections)


def config_to_dict(config: Config) -> dict:
    out = dataclasses.asdict(config)
    for section in out.values():
        for key, value in section.items():
            if isinstance(value, tuple):
                section[key] = list(value)
    return out


def apply_overrides(raw: dict, overrides: typing.Iterable[str]) -> dict:
    """Apply `section.key=value` strings; values are parsed as YAML (so 3, 1e-3, [1, 2], true work)."""
    raw = {name: dict(raw.get(name) or {}) for name in SECTIONS} | {k: v for k, v in raw.items() if k not in SECTIONS}
    for item in overrides:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise UsageError(f"--set {item!r}: expected section.key=value, e.g. train.max_epochs=3")
        if section not in SECTIONS:
            raise UsageError(f"--set {item!r}: unknown section {section!r}; use model, data or train")
        raw[section][name] = yaml.safe_load(text)
    return raw


def load_config(path: str | Path | None, overrides: typing.Iterable[str] = ()) -> Config:
    raw = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise UsageError(f"cannot read config {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise UsageError(f"config {path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise UsageError(f"config {path} must be a mapping with sections model, data and train")
    return config_from_dict(apply_overrides(raw, overrides))
