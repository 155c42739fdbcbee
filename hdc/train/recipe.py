"""The training recipe: what `hdc train` runs, top to bottom.

    read the labelled data -> train the tokenizer -> encode every document -> Lightning fit
    (best and last checkpoints, early stopping) -> fit the n-gram linear classifier -> summary

A run directory (hdc.schema.RunLayout) holds everything a trained model needs:

    runs/NAME/
      config.yaml  labels.json  tokenizer.json     the resolved config, the labels, the tokenizer
      checkpoints/best.ckpt  checkpoints/last.ckpt  best by validation macro-F1, and the latest
      logs/metrics.csv                             CSVLogger
      summary.json                                 the best epoch and its score, epochs, seconds

Without validation (data.valid_fraction=0 and no --valid, a final refit) best.ckpt is the last
epoch's model.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .. import __version__
from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from ..data import Example, check_known_labels, check_trainable, load_examples, split_examples
from ..errors import HdcError, UsageError
from ..io import write_atomic
from ..schema import ModelInfo, RunLayout, targets
from ..text import CHARS_PER_TOKEN, Segmenter, train_tokenizer
from .batches import DocumentData, EncodedDocuments, steps_per_epoch
from .module import CLASS_WEIGHT_SPREAD, SELECT, LitClassifier, class_weights, uneven
from .ngram_linear import CALIBRATION_DOCUMENTS, fit_after_training, ngram_idf
from .plumbing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    ProgressLog,
    ResumableCSVLogger,
    best_epoch,
    claim_run,
    drop_rows_after,
    quiet_lightning,
    resumed_epoch,
)
from .vectors import SWAP_NEIGHBOURS, corpus_vectors, load_word_vectors, neighbours, token_counts


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
    if resume and embeddings is not None:
        raise UsageError("--embeddings: a resumed run keeps the embeddings it was trained with; drop the flag")
    run = RunLayout(Path(out))
    lock = claim_run(run.root, resume)
    try:
        return _train(config, train_path, valid_path, run, embeddings, resume, overrides)
    finally:
        if lock is not None:
            lock.release()


def _train(
    config: Config,
    train_path: str | Path,
    valid_path: str | Path | None,
    run: RunLayout,
    embeddings: str | Path | None,
    resume: bool,
    overrides: tuple[str, ...],
) -> dict:
    # --- the run: a new one, or the one in --out continued from its last checkpoint
    if resume:
        if not run.last.exists():
            raise UsageError(f"--resume: {run.last} does not exist; start a new run without --resume")
        done_epoch = resumed_epoch(run.last)
        config = load_config(run.config, overrides)
    elif run.last.exists():
        raise UsageError(f"--out {run.root} already holds a run; pass --resume to continue it, or choose another --out")

    # --- the labelled data
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

    # --- the tokenizer, trained on the training split (or the run's own, resumed)
    if resume:
        saved_labels = tuple(json.loads(run.labels.read_text(encoding="utf-8")))
        info = ModelInfo(config, saved_labels, multilabel, run.tokenizer.read_text(encoding="utf-8"), __version__)
        if list(info.labels) != labels:
            raise HdcError(f"--resume: the labels of {train_path} differ from those of the run in {run.root}")
    else:
        # Only what segmentation keeps: a 50 MB record would otherwise cost gigabytes here.
        kept = d.max_tokens * CHARS_PER_TOKEN
        tokenizer = train_tokenizer((e.text[:kept] for e in train_examples), config.model.vocab_size)
        config = replace(config, model=replace(config.model, vocab_size=tokenizer.get_vocab_size() + 1))
        info = ModelInfo(config, tuple(labels), multilabel, tokenizer.to_str(), __version__)
    segmenter = info.segmenter()
    vectors = None
    if embeddings is not None:
        vectors = load_word_vectors(Path(embeddings), segmenter)
        config = replace(config, model=replace(config.model, embed_dim=vectors.shape[1]))
        info = replace(info, config=config)

    # --- every document cut into phrases once; the schedule fitted to the corpus's size
    valid_note = len(valid_examples) if validate else "none (data.valid_fraction=0: the last epoch is kept)"
    print(
        f"train: {len(train_examples)} documents, valid: {valid_note}, classes: {len(labels)}"
        f"{' (multi-label)' if multilabel else ''}",
        file=sys.stderr,
    )
    train_set = _encode(train_examples, segmenter, info, d.max_tokens)
    config, adapted = fit_schedule(config, train_set)
    if adapted:
        print(f"train: a small corpus, so {adapted}", file=sys.stderr)
    config, weighting = fit_class_weight(config, train_set.targets, multilabel)
    if weighting:
        print(f"train: {weighting}", file=sys.stderr)
    info, t = replace(info, config=config), config.train
    data = DocumentData(train_set, _encode(valid_examples, segmenter, info, d.max_tokens), config)
    write_atomic(run.config, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    write_atomic(run.labels, json.dumps(list(info.labels), indent=1))
    write_atomic(run.tokenizer, info.tokenizer)

    # --- the model, with its fixed parts set
    quiet_lightning()
    if t.threads:
        torch.set_num_threads(t.threads)
    L.seed_everything(t.seed, workers=True, verbose=False)
    weights = None
    if t.class_weight == "balanced":
        weights = class_weights(train_set.targets, len(labels), multilabel)
    module = LitClassifier(info, weights)
    # Token vectors from the training texts: the start of the embeddings (train.embed_init, not
    # on resume: the checkpoint has them) and the neighbours of train.token_swap.
    corpus_init = vectors is None and t.embed_init == "corpus" and not resume
    if corpus_init or t.token_swap:
        started = time.perf_counter()
        V, dim = config.model.vocab_size, module.model.embed.embedding_dim
        corpus = corpus_vectors(train_set.segments, V, dim, seed=t.seed)
        print(f"token vectors: learnt from the training texts ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        if t.token_swap:
            counts = token_counts(train_set.segments, V)
            module.swap_table = torch.from_numpy(neighbours(corpus, counts, SWAP_NEIGHBOURS))
        if corpus_init:
            vectors = corpus
    if vectors is not None:
        with torch.no_grad():
            module.model.embed.weight.copy_(torch.from_numpy(vectors))
    # The documents as the linear classifier reads them, fitted after training: further than
    # training does. The IDF weights come from them too, or what lies past data.max_tokens
    # would weigh nothing.
    bags = _read_further(train_examples, valid_examples, data, segmenter, info) if config.model.ngram_linear else data
    if config.model.ngrams:
        idf = ngram_idf(bags.train_set.segments, config.model.ngram_rows, t.ngram_min_df)
        module.model.set(ngram_idf=torch.from_numpy(idf))
        if bags is not data:  # some documents read further: rows of n-grams that training never reads stay 0
            with torch.no_grad():
                module.model.ngram_embed.weight[ngram_idf(data.train_set.segments, len(idf)) == 0] = 0

    # --- Lightning: best checkpoint by validation, last after every epoch, early stopping
    trainer = L.Trainer(
        default_root_dir=run.root,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        deterministic=t.deterministic,
        gradient_clip_val=t.grad_clip or None,
        logger=ResumableCSVLogger(run.root, name=run.logs.name, version=""),
        limit_val_batches=1.0 if validate else 0,
        callbacks=[
            ModelCheckpoint(
                dirpath=run.checkpoints,
                filename=run.best.stem,
                monitor=SELECT if validate else None,  # None: best.ckpt is the latest epoch's
                mode="max",
                save_top_k=1,
                enable_version_counter=False,
            ),
            LastCheckpoint(run.checkpoints),  # after the best one, so it holds the best score too
            *(
                [EarlyStopping(monitor=SELECT, mode="max", patience=t.patience, check_on_train_epoch_end=False)]
                if validate
                else []
            ),
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
        drop_rows_after(run.metrics, done_epoch)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=str(run.last) if resume else None, weights_only=True)
    summary = {
        "best_checkpoint": str(run.best),
        **({"schedule_fitted": adapted} if adapted else {}),
        **({"class_weight_fitted": weighting} if weighting else {}),
        **best_epoch(run.metrics),
        "epochs": trainer.current_epoch,
        "train_seconds": round(time.perf_counter() - start, 1),
        "parameters": sum(p.numel() for p in module.model.parameters()),
    }

    # --- the n-gram linear classifier, fitted into best.ckpt; the summary
    if trainer.global_rank != 0:
        return summary
    if not run.best.exists():  # stopped (train.max_steps) before the first validation
        write_atomic(run.summary, json.dumps(summary, indent=1))
        return summary
    fitted = fit_after_training(run.best, data, info, bags)
    summary["fitted_after_training"] = fitted
    if config.model.ngram_linear:
        before, after = fitted.get("valid_macro_f1_before"), fitted.get("valid_macro_f1_after")
        scored = f", validation macro-F1 {before:.4f} -> {after:.4f}" if after is not None else ""
        linear = (
            "no n-gram linear classifier: the network alone scored best"
            if fitted["c"] is None
            else f"the n-gram linear classifier's ({fitted['tf']} TF, word weight {fitted['word_weight']:g}, "
            f"C={fitted['c']:g}, class weights {fitted['class_weight']}) x {fitted['scale']:g}"
        )
        if "linear_cv_macro_f1" in fitted and fitted["c"] is not None:
            linear += (
                f" (its TF, C and class weights by cross-validation on the training split, "
                f"macro-F1 {fitted['linear_cv_macro_f1']:.4f}: fewer than {config.train.linear_cv_below} validation documents)"
            )
        print(f"mix: the network's logits x {fitted['deep_weight']:g} + {linear}{scored}", file=sys.stderr)
        if "thresholds" in fitted:
            spread = fitted["thresholds"].values()
            print(
                f"label thresholds: {min(spread):g} to {max(spread):g} on the linear classifier's scores, "
                f"by {config.train.threshold_folds}-fold cross-validation on the training split",
                file=sys.stderr,
            )
    calibrated = len(data.valid_set) >= CALIBRATION_DOCUMENTS and not multilabel
    print(
        f"temperature: {fitted['temperature']:g}, fitted on validation"
        if calibrated
        else f"temperature: 1, not fitted (it takes {CALIBRATION_DOCUMENTS} validation documents, single-label)",
        file=sys.stderr,
    )
    write_atomic(run.summary, json.dumps(summary, indent=1))
    return summary


def read_as_trained(
    info: ModelInfo, train_path: str | Path, valid_path: str | Path
) -> tuple[DocumentData, DocumentData]:
    """The training and validation files read as training read them for `info`'s model: what
    the network saw, and what the linear classifier saw (_read_further; the same data where
    the model has no linear classifier, as in training)."""
    d, segmenter = info.config.data, info.segmenter()
    train_examples, valid_examples = (
        load_examples(path, d.text_column, d.label_column) for path in (train_path, valid_path)
    )
    data = DocumentData(
        *(_encode(examples, segmenter, info, d.max_tokens) for examples in (train_examples, valid_examples)),
        info.config,
    )
    if not info.config.model.ngram_linear:
        return data, data
    return data, _read_further(train_examples, valid_examples, data, segmenter, info)


def refit(out: str | Path, train_path: str | Path, valid_path: str | Path, overrides: tuple[str, ...] = ()) -> dict:
    """Fit the parts set after training (fit_after_training) again on a finished run in `out`,
    on the data it was trained on, read as training read it, with the run's config changed by
    `overrides` (e.g. "train.ngram_linear_c=[1.0]"): what a change to that fit gives, without
    training the network again. Returns the run's summary, with the new fit and the overrides."""
    run = RunLayout(Path(out))
    _, info = model_from_checkpoint(read_checkpoint(run.best), run.best)
    info = replace(info, config=config_from_dict(apply_overrides(config_to_dict(info.config), overrides)))
    data, bags = read_as_trained(info, train_path, valid_path)
    summary = json.loads(run.summary.read_text(encoding="utf-8"))
    summary["fitted_after_training"] = fit_after_training(run.best, data, info, bags)
    summary["refit_overrides"] = list(overrides)
    write_atomic(run.summary, json.dumps(summary, indent=1))
    return summary


# An epoch of fewer optimizer steps than this learns next to nothing (a 48-document corpus once
# made one step an epoch, and its 50 warm-up steps never ended).
MIN_STEPS_PER_EPOCH = 16


def fit_schedule(config: Config, train_set: EncodedDocuments) -> tuple[Config, str]:
    """The config with its batches and warm-up fitted to a small corpus: batches small enough
    for MIN_STEPS_PER_EPOCH steps an epoch (down to one document), and warm-up no longer than a
    tenth of all steps. Returns the config and what changed (empty when nothing did)."""
    t, T = config.train, config.model.phrase_tokens
    if not t.fit_schedule:
        return config, ""
    phrases = [s.num_phrases for s in train_set.segments]
    step_tokens = t.step_tokens
    while steps_per_epoch(phrases, T, step_tokens) < MIN_STEPS_PER_EPOCH and step_tokens > T * max(phrases):
        step_tokens = max(T * max(phrases), step_tokens // 2)
    steps = steps_per_epoch(phrases, T, step_tokens) * t.max_epochs
    warmup = min(t.warmup_steps, max(1, steps // 10))
    changes = [
        f"train.{key} {old} -> {new}"
        for key, old, new in (("step_tokens", t.step_tokens, step_tokens), ("warmup_steps", t.warmup_steps, warmup))
        if old != new
    ]
    config = replace(config, train=replace(t, step_tokens=step_tokens, warmup_steps=warmup))
    return config, ", ".join(changes)


def fit_class_weight(config: Config, targets: np.ndarray, multilabel: bool) -> tuple[Config, str]:
    """The config with train.class_weight "auto" resolved: "balanced" where the training classes
    are uneven (module.uneven), else "none". Returns the config and why (empty when not auto)."""
    if config.train.class_weight != "auto":
        return config, ""
    balanced = uneven(targets, multilabel)
    weighting = "balanced" if balanced else "none"
    why = "uneven" if balanced else f"within {CLASS_WEIGHT_SPREAD:g}x of each other"
    config = replace(config, train=replace(config.train, class_weight=weighting))
    return config, f"train.class_weight auto -> {weighting} (the classes' documents are {why})"


_TEXT = re.compile(r"\S")


def _read_further(
    train: list[Example], valid: list[Example], data: DocumentData, segmenter: Segmenter, info: ModelInfo
) -> DocumentData:
    """`data` as the linear classifier reads it: the documents that data.max_tokens cut, read
    again up to data.fit_max_tokens; the others as they are (read again, 20 Newsgroups' would
    cost a minute for nothing). `data` itself where no document was cut."""
    d = info.config.data
    if d.fit_max_tokens <= d.max_tokens:
        return data

    def cut(examples: list[Example], encoded: EncodedDocuments) -> list[int]:
        # text after the last phrase kept
        return [
            i
            for i, (e, s) in enumerate(zip(examples, encoded.segments))
            if _TEXT.search(e.text, int(s.phrase_spans[-1, 1]))
        ]

    cut_train, cut_valid = cut(train, data.train_set), cut(valid, data.valid_set)
    if not cut_train and not cut_valid:
        return data

    def further(examples: list[Example], encoded: EncodedDocuments, cut: list[int]) -> EncodedDocuments:
        segments = list(encoded.segments)
        for i in cut:
            segments[i] = segmenter.segment(examples[i].text, max_tokens=d.fit_max_tokens)
        return EncodedDocuments(segments, encoded.targets)

    return DocumentData(
        further(train, data.train_set, cut_train), further(valid, data.valid_set, cut_valid), info.config
    )


def _encode(examples: list[Example], segmenter: Segmenter, info: ModelInfo, max_tokens: int) -> EncodedDocuments:
    segments = [segmenter.segment(e.text, max_tokens=max_tokens) for e in examples]
    empty = [e for e, s in zip(examples, segments) if s.num_tokens == 0]
    if empty:
        raise HdcError(f"{empty[0].where}: empty after cleaning (no tokens); remove the record")
    return EncodedDocuments(segments, targets((e.labels for e in examples), info.labels, info.multilabel))
