"""The LightningModule: losses, the two optimizers (AdamW, and SGD for the sparse n-gram table),
the learning-rate schedule, validation metrics, and what a checkpoint carries besides weights."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import PAYLOAD
from ..config import InferenceConfig
from ..metrics import scores
from ..model import HierarchicalClassifier
from ..schema import ModelInfo, decide, logits_to_probabilities
from .batches import bag_ngrams, data_epoch, drop_sentences, drop_tokens, swap_tokens

MONITOR = "val_macro_f1"
# What checkpointing and early stopping follow: macro-F1, with ties (common once validation is
# nearly perfect) broken by the lower validation log-loss, which keeps improving after F1 stops.
SELECT = "val_select"


class LitClassifier(L.LightningModule):
    """The model as Lightning trains it. Its `model` attribute is what a checkpoint's weights are
    saved under (hdc.checkpoint.WEIGHTS)."""

    def __init__(self, info: ModelInfo, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.info = info
        self.model = HierarchicalClassifier(info.config.model, len(info.labels))
        self.class_weights = class_weights  # [C] (train.class_weight), or None: not saved, recomputed
        self._outputs: list[tuple[np.ndarray, np.ndarray]] = []
        self.sparse_optimizer: torch.optim.Optimizer | None = None
        self._resumed_sparse_state: dict | None = None
        self.swap_table: torch.Tensor | None = None  # [V, k] token neighbours (train.token_swap); not saved

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.info.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.class_weights)
        smoothing = self.info.config.train.label_smoothing
        return F.cross_entropy(logits, targets, weight=self.class_weights, label_smoothing=smoothing)

    def on_train_epoch_start(self) -> None:
        # Dropout draws depend on (seed, epoch) alone, so resuming repeats an uninterrupted run.
        torch.manual_seed(self.info.config.train.seed * 1000 + data_epoch(self.trainer))

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        warmup = self.info.config.train.dense_warmup_steps
        self.model.set(dense_scale=min(1.0, self.global_step / warmup) if warmup else 1.0)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        t = self.info.config.train
        if t.sentence_dropout:
            inputs = drop_sentences(inputs, t.sentence_dropout)
        if t.token_dropout:
            inputs = drop_tokens(inputs, t.token_dropout)
        if t.token_swap:
            inputs = swap_tokens(inputs, self.swap_table, t.token_swap)
        inputs, select_k = bag_ngrams(inputs), t.select_k or None
        if t.dense_cut_loss and data_epoch(self.trainer) >= t.dense_cut_after:  # a loss on each pooling
            logits, cut_logits = self.model(**inputs, select_k=select_k, cut=True)
            w = t.dense_cut_loss
            loss = (1 - w) * self._loss(logits, targets) + w * self._loss(cut_logits, targets)
        else:
            loss = self._loss(self.model(**inputs, select_k=select_k), targets)
        self.log("train_loss", loss, batch_size=len(targets), prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        inputs, targets = batch
        logits = self.model(**bag_ngrams(inputs))
        self.log("val_loss", self._loss(logits, targets), batch_size=len(targets))
        probabilities = logits_to_probabilities(logits.float().cpu().numpy(), self.info.multilabel)
        self._outputs.append((probabilities, targets.cpu().numpy()))

    def on_validation_epoch_end(self) -> None:
        if not self._outputs:
            return
        probabilities = np.concatenate([p for p, _ in self._outputs])
        targets = np.concatenate([t for _, t in self._outputs])
        self._outputs.clear()
        predicted = decide(probabilities, self.info.multilabel, InferenceConfig().threshold)
        result = scores(targets, predicted, self.info.labels, self.info.multilabel)
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
        apart = [table.weight] if table is not None else []  # sparse gradients: SGD, below
        if t.embed_frozen:
            apart.append(self.model.embed.weight)  # kept as initialised (train.embed_frozen)
        dense = [p for p in self.parameters() if all(p is not q for q in apart)]
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


def class_weights(targets: np.ndarray, num_classes: int, multilabel: bool) -> torch.Tensor:
    """Balanced weights from the training targets: n / (C x count) per class, as scikit-learn's
    class_weight="balanced"; multi-label, each label's negatives / positives (BCE's pos_weight)."""
    if multilabel:
        positives = targets.sum(0)
        return torch.from_numpy(((len(targets) - positives) / np.maximum(positives, 1)).astype(np.float32))
    counts = np.bincount(targets, minlength=num_classes)
    return torch.from_numpy((len(targets) / (num_classes * np.maximum(counts, 1))).astype(np.float32))


# Balanced class weights (train.class_weight auto, and the linear classifier's) are used only
# where some class (multi-label: some label's positives or negatives) has more than this many
# times the documents of another: closer, they are about 1.
CLASS_WEIGHT_SPREAD = 2.0


def uneven(targets: np.ndarray, multilabel: bool) -> bool:
    """Whether some class has more than CLASS_WEIGHT_SPREAD times the training documents of
    another; multi-label, whether some label is on or off in that many more documents. Classes
    with no training documents have nothing to weigh."""
    if multilabel:
        columns = [np.array([p, len(targets) - p]) for p in targets.sum(0)]
    else:
        columns = [np.bincount(targets)]
    return any(c[c > 0].max() > CLASS_WEIGHT_SPREAD * c[c > 0].min() for c in columns)
