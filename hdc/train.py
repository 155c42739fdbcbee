"""Training with Lightning: `train()` is what `hdc train` calls.

A run directory holds everything a trained model needs:

    runs/NAME/
      config.yaml  labels.json  tokenizer.json     the resolved config, the labels, the tokenizer
      checkpoints/best.ckpt  checkpoints/last.ckpt  best by validation macro-F1, and the latest
      logs/metrics.csv                             CSVLogger
      summary.json                                 the best epoch and its score, epochs, seconds

Without validation (data.valid_fraction=0 and no --valid, a final refit) best.ckpt is the last
epoch's model.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, Sampler

from . import __version__
from .checkpoint import PAYLOAD, model_from_checkpoint, read_checkpoint
from .config import Config, config_to_dict, load_config
from .data import Example, check_known_labels, check_trainable, load_examples, split_examples
from .errors import HdcError, UsageError
from .io import Lock, atomic_open, write_atomic
from .metrics import decide, scores
from .model import NGRAM_INPUTS, HierarchicalClassifier, ngram_weights
from .predict import ModelInfo, logits_to_probabilities
from .stream import collate
from .text import CHARS_PER_TOKEN, Segmenter, Segments, ngram_bag, train_tokenizer

MONITOR = "val_macro_f1"
# What checkpointing and early stopping follow: macro-F1, with ties (common once validation is
# nearly perfect) broken by the lower validation log-loss, which keeps improving after F1 stops.
SELECT = "val_select"


# ---------------------------------------------------------------------------------------------
# Data


class EncodedDocuments(Dataset):
    """Documents already cut into phrases, with their targets: class index or multi-hot row."""

    def __init__(self, segments: list[Segments], targets: np.ndarray):
        self.segments, self.targets = segments, targets

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> tuple[Segments, np.ndarray]:
        return self.segments[i], self.targets[i]


def collate_examples(items: list[tuple[Segments, np.ndarray]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model's block inputs plus, with the n-gram branch, each phrase's n-grams [B, P, G]:
    per phrase, so that sentence dropout removes them with their sentence (see `bag_ngrams`)."""
    documents = [s for s, _ in items]
    inputs = collate(documents)
    if documents[0].ngrams is not None:
        P, G = inputs["tokens"].shape[1], max(d.ngrams.shape[1] for d in documents)
        inputs["ngrams"] = ngrams = np.zeros((len(documents), P, G), np.int64)
        for b, d in enumerate(documents):
            ngrams[b, : d.num_phrases, : d.ngrams.shape[1]] = d.ngrams
    return {k: torch.from_numpy(v) for k, v in inputs.items()}, torch.from_numpy(np.stack([t for _, t in items]))


def bag_ngrams(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-phrase n-grams -> the documents' n-gram bags, the model's input (hdc.text.ngram_bag)."""
    if "ngrams" not in inputs:
        return inputs
    rest = {k: v for k, v in inputs.items() if k != "ngrams"}
    return rest | dict(zip(NGRAM_INPUTS, map(torch.from_numpy, ngram_bag(inputs["ngrams"].numpy()))))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of documents of similar length, capped by padded tokens (B x P x T) rather than by
    document count. The order depends only on (seed, epoch), so a resumed run sees the same
    batches as an uninterrupted one. The epoch is read from `epoch()` (the trainer's), because
    Lightning only calls set_epoch on samplers, not on batch samplers. Under DDP each rank takes
    every world-th batch.

    Length curriculum: in epoch e < curriculum_epochs, batches are drawn only from documents of
    at most max_tokens / 2^(curriculum_epochs - e) tokens, as many batches as a full epoch has.
    Sparse retrieval is learned on short documents, where the needle is usually among the
    top-K, and then carried to long ones (a from-scratch model on long documents stayed at chance).
    """

    def __init__(
        self,
        phrases: list[int],
        tokens: list[int],
        phrase_tokens: int,
        batch_tokens: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        curriculum_epochs: int = 0,
        max_tokens: int = 0,
        epoch: Callable[[], int] = lambda: 0,
    ):
        self.phrases, self.tokens = np.asarray(phrases), np.asarray(tokens)
        self.T, self.cap = phrase_tokens, batch_tokens
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.curriculum_epochs, self.max_tokens = curriculum_epochs, max_tokens
        self.epoch = epoch
        # Every epoch has the same number of batches: Lightning counts them once, and runs
        # validation when that count is reached.
        everything = np.arange(len(self.phrases))
        self.length = len(self._pack(everything, np.random.default_rng(seed)))

    def _pack(self, order: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
        # Sort inside pools of ~64 batches: little padding, and batches still vary between epochs.
        per_batch = max(1, self.cap // (self.T * max(1, int(self.phrases.mean()))))
        pool = 64 * per_batch
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.phrases[chunk], kind="stable")]
            batch: list[int] = []
            for i in chunk:
                longest = max(self.phrases[i], self.phrases[batch[-1]] if batch else 0)
                if batch and (len(batch) + 1) * longest * self.T > self.cap:
                    batches.append(batch)
                    batch = []
                batch.append(int(i))
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _batches(self) -> list[list[int]]:
        epoch = self.epoch()
        rng = np.random.default_rng([self.seed, epoch])
        pool = np.arange(len(self.phrases))
        if self.shuffle and epoch < self.curriculum_epochs:
            limit = self.max_tokens >> (self.curriculum_epochs - epoch)
            short = np.flatnonzero(self.tokens <= limit)
            pool = short if len(short) else pool
        batches: list[list[int]] = []
        while len(batches) < self.length:  # shuffled passes over the pool, cut to the epoch's length
            batches += self._pack(rng.permutation(pool) if self.shuffle else pool, rng)
        batches = batches[: self.length]
        if self.world > 1:
            usable = len(batches) - len(batches) % self.world or len(batches)
            batches = (batches * self.world)[:usable] if len(batches) < self.world else batches[:usable]
            batches = batches[self.rank :: self.world]
        return batches

    def __iter__(self):
        # A generator: the batches are drawn at the first next(), once Lightning has restored
        # the fit loop's progress, not when the iterator object is created.
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


def data_epoch(trainer: L.Trainer | None) -> int:
    """The epoch about to be trained. After a resume from a checkpoint written at an epoch's end,
    trainer.current_epoch still names the finished epoch until the next one has started; the
    fit loop's count of processed epochs (what Lightning gives samplers) is already right."""
    return trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0


class DocumentData(L.LightningDataModule):
    def __init__(self, train: EncodedDocuments, valid: EncodedDocuments, config: Config):
        super().__init__()
        self.train_set, self.valid_set, self.config = train, valid, config

    def _loader(self, dataset: EncodedDocuments, shuffle: bool) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if shuffle and self.trainer else (0, 1)
        sampler = BucketBatchSampler(
            [s.num_phrases for s in dataset.segments],
            [s.num_tokens for s in dataset.segments],
            self.config.model.phrase_tokens,
            self.config.train.batch_tokens,
            shuffle=shuffle,
            seed=self.config.train.seed,
            rank=rank,
            world=world,
            curriculum_epochs=self.config.train.curriculum_epochs,
            max_tokens=self.config.data.max_tokens,
            epoch=lambda: data_epoch(self.trainer),
        )
        # Its own generator: creating an iterator draws a seed, and must not move the global RNG
        # that dropout uses (else a resumed run would drift from an uninterrupted one).
        generator = torch.Generator().manual_seed(self.config.train.seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_examples, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Every rank scores the whole validation set, so all agree on the best epoch.
        return self._loader(self.valid_set, shuffle=False)


# ---------------------------------------------------------------------------------------------
# Model


def drop_sentences(inputs: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Remove each sentence with probability p (each document keeps at least one), so the model
    cannot lean on a few sentences such as bylines and boilerplate."""
    sentence_phrases = inputs["sentence_phrases"]
    present = sentence_phrases[:, :, 0] >= 0  # [B, S]
    dropped = (torch.rand(present.shape) < p) & present
    everything = dropped.sum(-1) == present.sum(-1)
    dropped[torch.arange(len(dropped)), present.float().argmax(-1)] &= ~everything
    phrase_sentence = inputs["phrase_sentence"]
    dropped_phrase = torch.gather(dropped, 1, phrase_sentence.clamp_min(0)) & (phrase_sentence >= 0)
    kept = {
        "tokens": inputs["tokens"].masked_fill(dropped_phrase[..., None], 0),
        "phrase_sentence": phrase_sentence.masked_fill(dropped_phrase, -1),
        "sentence_phrases": sentence_phrases.masked_fill(dropped[..., None], -1),
        "selectable": inputs["selectable"] & ~dropped_phrase,
    }
    if "ngrams" in inputs:
        kept["ngrams"] = inputs["ngrams"].masked_fill(dropped_phrase[..., None], 0)
    return kept


class LitClassifier(L.LightningModule):
    def __init__(self, info: ModelInfo):
        super().__init__()
        self.info = info
        self.model = HierarchicalClassifier(info.config.model, len(info.labels))
        self.model.train_select_k = info.config.train.select_k or info.config.model.top_k
        self._outputs: list[tuple[np.ndarray, np.ndarray]] = []
        self.sparse_optimizer: torch.optim.Optimizer | None = None
        self._resumed_sparse_state: dict | None = None

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.info.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.cross_entropy(logits, targets, label_smoothing=self.info.config.train.label_smoothing)

    def on_train_epoch_start(self) -> None:
        # Dropout draws depend on (seed, epoch) alone, so resuming repeats an uninterrupted run.
        torch.manual_seed(self.info.config.train.seed * 1000 + data_epoch(self.trainer))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        warmup = self.info.config.train.dense_warmup_steps
        self.model.dense_scale.fill_(min(1.0, self.global_step / warmup) if warmup else 1.0)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        t = self.info.config.train
        if t.sentence_dropout:
            inputs = drop_sentences(inputs, t.sentence_dropout)
        if t.token_dropout:
            inputs = inputs | {
                "tokens": inputs["tokens"].masked_fill(torch.rand(inputs["tokens"].shape) < t.token_dropout, 0)
            }
        loss = self._loss(self.model(**bag_ngrams(inputs)), targets)
        self.log("train_loss", loss, batch_size=len(targets), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.model(**bag_ngrams(inputs))
        self.log("val_loss", self._loss(logits, targets), batch_size=len(targets))
        probabilities = torch.sigmoid(logits) if self.info.multilabel else torch.softmax(logits, -1)
        self._outputs.append((probabilities.float().cpu().numpy(), targets.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        if not self._outputs:
            return
        probabilities = np.concatenate([p for p, _ in self._outputs])
        targets = np.concatenate([t for _, t in self._outputs])
        self._outputs.clear()
        result = scores(targets, decide(probabilities, self.info.multilabel), self.info.labels, self.info.multilabel)
        p = np.clip(probabilities, 1e-7, 1 - 1e-7)
        if self.info.multilabel:
            log_loss = float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
        else:
            log_loss = float(-np.log(p[np.arange(len(targets)), targets]).mean())
        self.log(MONITOR, result["macro_f1"])
        self.log("val_accuracy", result["accuracy"])
        self.log(SELECT, result["macro_f1"] - 1e-4 * min(log_loss, 10.0))

    def configure_optimizers(self):
        t = self.info.config.train
        table = getattr(self.model, "ngram_embed", None)
        dense = [p for p in self.parameters() if table is None or p is not table.weight]
        optimizer = torch.optim.AdamW(dense, lr=t.lr, weight_decay=t.weight_decay)
        # The n-gram table has sparse gradients, which AdamW cannot take: plain SGD steps it
        # beside Lightning's optimizer (optimizer_step), on the same schedule. SparseAdam scored
        # no better on news validation, and its two table-sized moment buffers made checkpoints
        # 1.8x larger and training 1.15x slower (bench/RESULTS.md).
        self.sparse_optimizer = None if table is None else torch.optim.SGD([table.weight], lr=t.ngram_lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
            if step < t.warmup_steps:
                return (step + 1) / t.warmup_steps
            progress = min(1.0, (step - t.warmup_steps) / max(1, total - t.warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)  # forward, backward, AdamW
        if self.sparse_optimizer is not None:
            t = self.info.config.train
            for group in self.sparse_optimizer.param_groups:  # this step's, before the scheduler moves it
                group["lr"] = optimizer.param_groups[0]["lr"] * t.ngram_lr / t.lr
            self.sparse_optimizer.step()
            self.sparse_optimizer.zero_grad(set_to_none=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The log is written out first: a checkpoint never counts an epoch whose rows are lost.
        if self.trainer.logger is not None:
            self.trainer.logger.save()
        checkpoint[PAYLOAD] = self.info.to_dict()
        if self.sparse_optimizer is not None:
            checkpoint["sparse_optimizer"] = self.sparse_optimizer.state_dict()

    def on_train_start(self) -> None:
        # Resuming: Lightning restores its own optimizer; this one comes from the checkpoint here.
        if self._resumed_sparse_state is not None and self.sparse_optimizer is not None:
            self.sparse_optimizer.load_state_dict(self._resumed_sparse_state)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_sparse_state = checkpoint.get("sparse_optimizer")


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt after every epoch, which --resume continues from. (ModelCheckpoint's save_last
    writes it only in an epoch that also saves the best checkpoint: a resumed run would repeat
    every epoch since the best.)"""

    def __init__(self, folder: Path):
        super().__init__(dirpath=folder, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    @property
    def state_key(self) -> str:  # apart from the best checkpoint's state, which has another monitor
        return "LastCheckpoint"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename: a kill mid-write leaves
    the previous checkpoint intact, never half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; on --resume we append to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class ProgressLog(Callback):
    """Progress on stderr: a live line on a terminal, plain lines every few seconds otherwise."""

    def __init__(self, every: float = 10.0):
        self.tty = sys.stderr.isatty()
        self.every = every

    def on_train_epoch_start(self, trainer, module) -> None:
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_rank != 0:
            return
        now = time.perf_counter()
        if now - self.last < (0.5 if self.tty else self.every):
            return
        self.last = now
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        line = (
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: batch {batch_idx + 1}/"
            f"{trainer.num_training_batches} loss {loss:.4f} ({now - self.start:.0f} s)"
        )
        print(line, end="\r" if self.tty else "\n", file=sys.stderr, flush=True)

    def on_validation_end(self, trainer, module) -> None:  # after the module has logged
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        self._epoch_line(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.global_rank == 0 and trainer.limit_val_batches == 0:  # no validation to wait for
            self._epoch_line(trainer)

    def _epoch_line(self, trainer) -> None:
        m = trainer.callback_metrics
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: " + " ".join(
            f"{name} {float(m[name]):.4f}" for name in ("train_loss", "val_loss", "val_accuracy", MONITOR) if name in m
        )
        print(
            ("\r\033[K" if self.tty else "") + line + f" ({time.perf_counter() - self.start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


# ---------------------------------------------------------------------------------------------
# The n-gram branch's fixed parts: IDF weights, and the linear classifier fitted after training


def ngram_idf(segments: list[Segments], buckets: int, min_df: int = 1) -> np.ndarray:
    """Smoothed inverse document frequency of each n-gram bucket, as scikit-learn's TfidfVectorizer
    computes it: ln((1 + N) / (1 + df)) + 1. Bucket 0 (padding) and buckets in fewer than min_df
    documents get 0."""
    df = np.zeros(buckets + 1, np.int64)
    for s in segments:
        df[np.unique(s.ngrams)] += 1
    idf = np.log((1 + len(segments)) / (1 + df)) + 1
    idf[df < min_df] = 0.0
    idf[0] = 0.0
    return idf.astype(np.float32)


def ngram_matrix(segments: list[Segments], idf: torch.Tensor, tf: str):
    """[N, buckets + 1] scipy CSR: each document's n-gram bag, weighted as the model weighs it."""
    from scipy.sparse import csr_matrix

    indptr, indices, values = [0], [], []
    for s in segments:
        ids, counts = ngram_bag(s.ngrams[None])
        weights = ngram_weights(torch.from_numpy(ids), torch.from_numpy(counts), idf, tf)[0].numpy()
        keep = weights > 0
        indices.append(ids[0, keep])
        values.append(weights[keep])
        indptr.append(indptr[-1] + int(keep.sum()))
    return csr_matrix((np.concatenate(values), np.concatenate(indices), indptr), shape=(len(segments), len(idf)))


def fit_linear(features, targets: np.ndarray, num_classes: int, multilabel: bool, c: float):
    """A LinearSVC's weights [F, C] and biases [C], one column per class: one-vs-rest, as
    scikit-learn fits several classes. Two classes give one decision function: it goes to class 1."""
    from sklearn.svm import LinearSVC

    weights = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.zeros(num_classes, np.float32)
    columns = [targets[:, j] for j in range(num_classes)] if multilabel else [targets]
    for j, y in enumerate(columns):
        if len(np.unique(y)) < 2:  # a label on every document or on none: nothing to separate
            continue
        svm = LinearSVC(C=c, dual=True, max_iter=5000).fit(features, y)
        rows = slice(j, j + 1) if multilabel else slice(num_classes - len(svm.coef_), num_classes)
        weights[:, rows], bias[rows] = svm.coef_.T, svm.intercept_
    return weights, bias


def fit_ngram_linear(checkpoint_path: Path, data: DocumentData, info: ModelInfo) -> dict:
    """Fit the model's n-gram linear classifier (model.ngram_linear) on the training bags and
    store it in the checkpoint. With validation data, every (C, scale) of the config is scored
    there on top of the trained model's logits, and the best pair kept (the first in the
    config's order on a tie)."""
    start = time.perf_counter()
    t, labels, multilabel = info.config.train, info.labels, info.multilabel
    checkpoint = read_checkpoint(checkpoint_path)
    model, _ = model_from_checkpoint(checkpoint, checkpoint_path)
    model.ngram_linear.zero_()
    model.ngram_linear_bias.zero_()
    train_x = ngram_matrix(data.train_set.segments, model.ngram_idf, model.config.ngram_tf)
    candidates = [(c, scale) for c in t.ngram_linear_c for scale in t.ngram_linear_scale]
    fits = {}
    best, result = None, {}
    if len(data.valid_set) and len(candidates) > 1:
        valid_x = ngram_matrix(data.valid_set.segments, model.ngram_idf, model.config.ngram_tf)
        logits = _logits(model, data.valid_set)
        targets = data.valid_set.targets

        def macro_f1(z: np.ndarray) -> float:
            predicted = decide(logits_to_probabilities(z, multilabel), multilabel)
            return scores(targets, predicted, labels, multilabel)["macro_f1"]

        result["valid_macro_f1_before"] = macro_f1(logits)
        for c, scale in candidates:
            if c not in fits:
                fits[c] = fit_linear(train_x, data.train_set.targets, len(labels), multilabel, c)
            weights, bias = fits[c]
            score = macro_f1(logits + scale * (valid_x @ weights + bias))
            if best is None or score > best[0]:
                best = (score, c, scale)
        result["valid_macro_f1_after"], c, scale = best
    else:
        c, scale = t.ngram_linear_c[len(t.ngram_linear_c) // 2], t.ngram_linear_scale[len(t.ngram_linear_scale) // 2]
    weights, bias = fits.get(c) or fit_linear(train_x, data.train_set.targets, len(labels), multilabel, c)
    checkpoint["state_dict"]["model.ngram_linear"] = torch.from_numpy(scale * weights)
    checkpoint["state_dict"]["model.ngram_linear_bias"] = torch.from_numpy(scale * bias)
    with atomic_open(checkpoint_path, "wb") as f:
        torch.save(checkpoint, f)
    return {"c": c, "scale": scale, **result, "seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def _logits(model: HierarchicalClassifier, dataset: EncodedDocuments, batch: int = 16) -> np.ndarray:
    """[N, C] the model's logits for every document of `dataset`, in its order."""
    model.eval()
    out = []
    for start in range(0, len(dataset), batch):
        inputs, _ = collate_examples([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
        out.append(model(**bag_ngrams(inputs)).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------------
# Word vectors


def load_word_vectors(path: Path, segmenter: Segmenter) -> np.ndarray:
    """Rows for the tokenizer's vocabulary from fastText/GloVe text vectors: a token's word
    (its byte-level space marker removed) is looked up as is, then lower-cased. Tokens with no
    vector keep a small random row."""
    vocab = segmenter.tokenizer.get_vocab()
    wanted: dict[str, list[int]] = {}
    for token, i in vocab.items():
        word = token.removeprefix("\u0120")
        for form in dict.fromkeys((word, word.lower())):
            wanted.setdefault(form, []).append(i + 1)  # + 1: id 0 is padding
    matrix, found = None, set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # the fastText header: count and width
                if len(parts) < 3:
                    continue
                if matrix is None:
                    matrix = (
                        np.random.default_rng(0)
                        .normal(0, 0.02, (segmenter.vocab_size, len(parts) - 1))
                        .astype(np.float32)
                    )
                    matrix[0] = 0
                if len(parts) - 1 != matrix.shape[1]:
                    raise HdcError(
                        f"{path}:{number}: {len(parts) - 1} numbers, but the first vector has {matrix.shape[1]}"
                    )
                for i in wanted.get(parts[0], ()):
                    if i not in found:
                        matrix[i] = np.asarray(parts[1:], np.float32)
                        found.add(i)
    except OSError as e:
        raise UsageError(f"--embeddings {path}: {e.strerror}") from None
    except ValueError:
        raise HdcError(f"{path}: not a word-vector text file (a word, then numbers, on each line)") from None
    if matrix is None:
        raise HdcError(f"{path}: no vectors found; expected fastText .vec or GloVe text format")
    print(f"embeddings: {len(found)}/{segmenter.vocab_size - 1} tokens initialised from {path}", file=sys.stderr)
    return matrix


# ---------------------------------------------------------------------------------------------


def _targets(examples: list[Example], labels: list[str], multilabel: bool) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    if not multilabel:
        return np.asarray([index[e.label] for e in examples], np.int64)
    targets = np.zeros((len(examples), len(labels)), np.float32)
    for row, e in enumerate(examples):
        for label in e.labels:
            targets[row, index[label]] = 1.0
    return targets


def _best_epoch(metrics_csv: Path) -> dict:
    """The selected epoch (counted from 1) and its macro-F1, read back from the log; None for
    both when nothing was validated."""
    rows = [r for r in csv.DictReader(open(metrics_csv)) if r.get(SELECT)] if metrics_csv.exists() else []
    best = max(rows, key=lambda r: float(r[SELECT])) if rows else None
    return {
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "best_" + MONITOR: float(best[MONITOR]) if best else None,
    }


def _quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*exists and is not empty.*",
        ".*LeafSpec.*",
        ".*isinstance.*treespec.*",
        ".*smaller than the logging interval.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def train(
    config: Config,
    train_path: str | Path,
    valid_path: str | Path | None,
    out: str | Path,
    embeddings: str | Path | None = None,
    resume: bool = False,
    overrides: tuple[str, ...] = (),
) -> dict:
    """Train a model and write its run directory. With resume=True, continue from
    out/checkpoints/last.ckpt with the saved config (plus `overrides`) and tokenizer."""
    out = Path(out)
    lock = _claim_run(out, resume)
    try:
        return _train(config, train_path, valid_path, out, embeddings, resume, overrides)
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: Config,
    train_path: str | Path,
    valid_path: str | Path | None,
    out: Path,
    embeddings: str | Path | None,
    resume: bool,
    overrides: tuple[str, ...],
) -> dict:
    last = out / "checkpoints" / "last.ckpt"
    if resume:
        if not last.exists():
            raise UsageError(f"--resume: {last} does not exist; start a new run without --resume")
        resumed_epoch = _readable_last(last)
        config = load_config(out / "config.yaml", overrides)
    elif last.exists():
        raise UsageError(f"--out {out} already holds a run; pass --resume to continue it, or choose another --out")

    d, t = config.data, config.train
    train_examples = load_examples(train_path, d.text_column, d.label_column)
    labels, multilabel = check_trainable(train_examples, str(train_path))
    if valid_path is not None:
        valid_examples = load_examples(valid_path, d.text_column, d.label_column)
    elif d.valid_fraction:
        train_examples, valid_examples = split_examples(train_examples, d.valid_fraction, t.seed)
    else:
        valid_examples = []
    check_known_labels(valid_examples, labels, multilabel)
    validate = bool(valid_examples)

    if resume:
        tokenizer_json = (out / "tokenizer.json").read_text(encoding="utf-8")
        info = ModelInfo(
            config, tuple(json.loads((out / "labels.json").read_text())), multilabel, tokenizer_json, __version__
        )
        if list(info.labels) != labels:
            raise HdcError(f"--resume: the labels of {train_path} differ from those of the run in {out}")
    else:
        # Only what segmentation keeps: a 50 MB record would otherwise cost gigabytes here.
        kept = d.max_tokens * CHARS_PER_TOKEN
        tokenizer = train_tokenizer((e.text[:kept] for e in train_examples), config.model.vocab_size)
        model_config = replace(config.model, vocab_size=tokenizer.get_vocab_size() + 1)
        config = replace(config, model=model_config)
        info = ModelInfo(config, tuple(labels), multilabel, tokenizer.to_str(), __version__)
    segmenter = info.segmenter()
    vectors = None
    if embeddings is not None and not resume:
        vectors = load_word_vectors(Path(embeddings), segmenter)
        config = replace(config, model=replace(config.model, embed_dim=vectors.shape[1]))
        info = replace(info, config=config)

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    write_atomic(out / "labels.json", json.dumps(list(info.labels), indent=1))
    write_atomic(out / "tokenizer.json", info.tokenizer)

    def encode(examples: list[Example]) -> EncodedDocuments:
        segments = [segmenter.segment(e.text, max_tokens=d.max_tokens) for e in examples]
        empty = [e for e, s in zip(examples, segments) if s.num_tokens == 0]
        if empty:
            raise HdcError(f"{empty[0].where}: empty after cleaning (no tokens); remove the record")
        return EncodedDocuments(segments, _targets(examples, labels, multilabel))

    valid_note = len(valid_examples) if validate else "none (data.valid_fraction=0: the last epoch is kept)"
    print(
        f"train: {len(train_examples)} documents, valid: {valid_note}, classes: {len(labels)}"
        f"{' (multi-label)' if multilabel else ''}",
        file=sys.stderr,
    )
    data = DocumentData(encode(train_examples), encode(valid_examples), config)

    _quiet_lightning()
    if t.threads:
        torch.set_num_threads(t.threads)
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = LitClassifier(info)
    with torch.no_grad():
        if vectors is not None:
            module.model.embed.weight.copy_(torch.from_numpy(vectors))
        if config.model.ngram_orders:
            module.model.ngram_idf.copy_(
                torch.from_numpy(
                    ngram_idf(data.train_set.segments, config.model.ngram_buckets, config.train.ngram_min_df)
                )
            )

    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=SELECT if validate else None,  # None: best.ckpt is the latest epoch's
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    stop_early = EarlyStopping(monitor=SELECT, mode="max", patience=t.patience, check_on_train_epoch_end=False)
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        deterministic=t.deterministic,
        logger=ResumableCSVLogger(out, name="logs", version=""),
        limit_val_batches=1.0 if validate else 0,
        callbacks=[
            checkpoints,
            LastCheckpoint(out / "checkpoints"),  # after `checkpoints`, so it holds the best score too
            *([stop_early] if validate else []),
            ProgressLog(),
            # Validation and checkpoints then see the averaged weights; the raw ones are kept in
            # the checkpoint too, so --resume goes on from them. The in-place (foreach) update:
            # EMAWeightAveraging's per-tensor one allocates copies of the 64 MB n-gram table at
            # every step, ~10x slower (115 ms against 10 ms a step, on one thread).
            *([WeightAveraging(multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay))] if t.ema_decay else []),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    if resume:  # rows a killed run logged after its last checkpoint: that epoch runs again
        _drop_rows_after(out / "logs" / "metrics.csv", resumed_epoch)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None, weights_only=True)
    seconds = time.perf_counter() - start
    summary = {
        "best_checkpoint": str(out / "checkpoints" / "best.ckpt"),
        **_best_epoch(out / "logs" / "metrics.csv"),
        "epochs": trainer.current_epoch,
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in module.model.parameters()),
    }
    if config.model.ngram_linear and trainer.global_rank == 0:
        fitted = fit_ngram_linear(out / "checkpoints" / "best.ckpt", data, info)
        summary["ngram_linear"] = fitted
        before, after = fitted.get("valid_macro_f1_before"), fitted.get("valid_macro_f1_after")
        scored = f", validation macro-F1 {before:.4f} -> {after:.4f}" if after is not None else ""
        print(f"n-gram linear classifier: C={fitted['c']:g}, scale {fitted['scale']:g}{scored}", file=sys.stderr)
    if trainer.global_rank == 0:
        write_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


# What hdc writes in a run directory; --out may name a folder that holds nothing else.
RUN_ENTRIES = {"config.yaml", "labels.json", "tokenizer.json", "checkpoints", "logs", "summary.json", ".lock"}


def launched_rank() -> int:
    """This process's rank when a launcher (torchrun, srun) started one per device; else 0."""
    for variable in ("RANK", "SLURM_PROCID"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def _claim_run(out: Path, resume: bool) -> Lock | None:
    """Check that --out is absent, empty or a run directory, create it, and lock it (on the first
    process of a multi-process launch), so that two runs never write one directory."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; name a folder for the run")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES) if out.exists() else []
    if foreign and not resume:
        raise UsageError(
            f"--out {out}: holds {foreign[0]!r}, which hdc did not write; choose a new or empty folder for the run"
        )
    out.mkdir(parents=True, exist_ok=True)
    return Lock(out / ".lock", f"--out {out}") if launched_rank() == 0 else None


def _readable_last(last: Path) -> int:
    """The epoch that last.ckpt finished (counted from 0), or a one-line error if it is broken."""
    try:
        checkpoint = read_checkpoint(last)
        return int(checkpoint["epoch"])
    except (KeyError, TypeError, ValueError):
        raise HdcError(f"--resume: {last} has no epoch count; it was not written by hdc train") from None
    except HdcError as e:
        raise HdcError(f"--resume: {e}; a run cannot continue from it, so start a new one") from None


def _drop_rows_after(metrics_csv: Path, epoch: int) -> None:
    """Keep the log's rows of epochs up to `epoch`: the rest are logged again when resumed."""
    if not metrics_csv.exists():
        return
    with open(metrics_csv, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) > column and r[column] and int(float(r[column])) <= epoch]
    if len(kept) < len(rows):
        with atomic_open(metrics_csv, "w") as f:
            csv.writer(f, lineterminator="\n").writerows(kept)
