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


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 16384  # size of the BPE vocabulary trained on the training split
    embed_dim: int = 0  # width of the token embeddings; 0 means d_model (--embeddings sets it)
    d_model: int = 96
    heads: int = 4
    layers: int = 1  # encoder layers inside each phrase
    ff_mult: int = 4
    dropout: float = 0.1
    phrase_tokens: int = 32  # T: a sentence is cut into phrases of at most T tokens
    sentence_tokens: int = 256  # longer sentences are cut into pieces of this many tokens
    queries: int = 2  # M learned retrieval queries of the sparse path
    top_k: int = 8  # K phrases selected per query, whatever the document's length
    sparse: bool = True  # the HSA path: top-K phrase retrieval
    dense: bool = True  # the HAN path: attention pooling over all sentences
    ngram_orders: tuple[int, ...] = ()  # hashed char n-gram branch, e.g. [2, 3, 4, 5]; () turns it off
    ngram_buckets: int = 262144  # hash table rows; each holds an ngram_dim-wide embedding
    ngram_dim: int = 64
    # The n-grams of the text as written (case and whitespace kept, across words) instead of
    # scikit-learn's char_wb ones (lower-cased, within words); see hdc.text.char_ngrams.
    ngram_raw: bool = False
    ngram_tf: str = "sublinear"  # an n-gram's term frequency: 1 + ln(count), or "binary": 1
    # Add a linear classifier on the n-gram bag, fitted to convergence after training (hdc.train):
    # the jointly trained branch stops where the deep part's epochs stop, well short of that.
    ngram_linear: bool = False

    def __post_init__(self):
        if self.ngram_tf not in ("sublinear", "binary"):
            raise UsageError(f"model.ngram_tf must be sublinear or binary, got {self.ngram_tf!r}")
        if self.ngram_linear and not self.ngram_orders:
            raise UsageError("model.ngram_linear needs the n-gram branch: set model.ngram_orders, e.g. [2, 3, 4]")
        if self.sentence_tokens < self.phrase_tokens:  # a sentence holds whole phrases
            raise UsageError(
                f"model.sentence_tokens ({self.sentence_tokens}) must be at least model.phrase_tokens "
                f"({self.phrase_tokens})"
            )


@dataclass(frozen=True)
class DataConfig:
    text_column: str = "text"  # for CSV/TSV and JSONL
    label_column: str = "label"
    max_tokens: int = 4096  # training and validation documents keep their first max_tokens tokens
    # Held out of --train, stratified, when --valid is not given. 0 holds nothing out: a refit on
    # all the data, once settings and max_epochs were chosen on validation; the last epoch is kept.
    valid_fraction: float = 0.1

    def __post_init__(self):
        if not 0 <= self.valid_fraction < 1:
            raise UsageError(f"data.valid_fraction must be at least 0 and below 1, got {self.valid_fraction!r}")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 13
    max_epochs: int = 10
    max_steps: int = -1  # stop after this many optimizer steps; -1: no limit
    batch_tokens: int = 16384  # cap on padded tokens per batch
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    label_smoothing: float = 0.1
    sentence_dropout: float = 0.0  # drop each training sentence with this probability (a regularizer)
    token_dropout: float = 0.0  # drop each training token with this probability
    ngram_min_df: int = 1  # n-gram buckets in fewer training documents get no weight
    # The n-gram table's learning rate (plain SGD, on the same schedule as `lr`). Its inputs are
    # L2-normalised TF-IDF weights of a few thousand n-grams, about 0.02 each, hence the size.
    ngram_lr: float = 50.0
    # The n-gram linear classifier (model.ngram_linear): a LinearSVC's C, and how much its
    # scores weigh against the logits. Every pair is scored on validation and the best kept;
    # without validation the middle value of each.
    ngram_linear_c: tuple[float, ...] = (1.0, 3.0, 10.0)
    ngram_linear_scale: tuple[float, ...] = (1.0, 2.0, 4.0)
    patience: int = 3  # early stopping on validation macro-F1, in epochs
    # Validate and save an exponential moving average of the weights, updated after every step
    # with this decay (0: off; 0.995 averages over about the last 200 steps).
    ema_decay: float = 0.0
    curriculum_epochs: int = 0  # epoch e < this trains on documents of <= max_tokens / 2^(this - e) tokens
    dense_warmup_steps: int = 0  # curriculum: the dense path fades in over these steps
    # Phrases selected per query in training steps (0: model.top_k). Fewer than at inference
    # makes retrieval rank the deciding phrase near the top, not merely among the K: a long
    # document has far more phrases competing for the K slots than any training document.
    select_k: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    accelerator: str = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. ddp, ddp_spawn
    deterministic: bool = True

    def __post_init__(self):
        for name in ("sentence_dropout", "token_dropout", "ema_decay"):  # fractions: 995 is a typo
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"train.{name} must be at least 0 and below 1, got {getattr(self, name)!r}")
        for name in ("ngram_linear_c", "ngram_linear_scale"):
            if not getattr(self, name) or min(getattr(self, name)) <= 0:
                raise UsageError(f"train.{name} must be a list of numbers above 0, got {list(getattr(self, name))!r}")
        if not self.lr > 0 or not self.ngram_lr >= 0:  # the n-gram table's steps scale by ngram_lr / lr
            raise UsageError(
                f"train.lr must be above 0 and train.ngram_lr at least 0, got {self.lr!r} and {self.ngram_lr!r}"
            )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


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


def _build(cls: type, values: dict, where: str):
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
