"""The engine: a model behind a Backend, run over documents of any length.

Short documents go through in length-sorted batches; long ones are streamed block by block
(hdc/stream.py). Results come back in input order, one per document, and a bad input becomes an
error result instead of stopping the batch. The model is a checkpoint (torch, hdc.checkpoint)
or an exported bundle (ONNX Runtime, no torch, hdc.runtime): `load_predictor` takes either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import InferenceConfig
from .data import BadInput, Document
from .errors import HdcError
from .runtime import load_bundle
from .schema import ModelInfo, checkpoint_file, chosen_labels, is_bundle, logits_to_probabilities
from .stream import Backend, DocumentState, Progress, collate, read_ahead, run_document
from .text import Segments

LONG_DOCUMENT_CHARS = 1 << 22  # files larger than this are streamed without being read whole
# Padded n-gram bag entries (documents x widest bag) per head run. The ONNX head gathers a
# [B, U, E] block of table rows, 16 MB at this cap with E = 64; one run for 450 short documents
# padded to their widest bag took 2.2 GB of peak RSS (0.7 GB with the cap).
HEAD_BAG_ENTRIES = 1 << 16
# An input as read: (item, its segments, None), or (item, None, why it failed), or (item, None,
# None) for a file too large to read whole, which is streamed.
Read = tuple[Document | BadInput, Segments | None, str | None]


@dataclass
class Outcome:
    """What happened to one input: probabilities and the document's state, or an error."""

    item: Document | BadInput
    probabilities: np.ndarray | None = None  # [C]
    state: DocumentState | None = None
    fusion: np.ndarray | None = None  # [M, K] weight of each selected phrase in its query's output
    segments: Segments | None = None  # the whole document, when weights were asked for
    weights: dict[str, np.ndarray] | None = None  # its encode outputs (word, phrase, ... weights)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Predictor:
    """A model (behind a Backend: torch or ONNX Runtime) with the settings it runs with."""

    def __init__(self, backend: Backend, info: ModelInfo, source: str, settings: InferenceConfig = InferenceConfig()):
        self.backend, self.info, self.source, self.settings = backend, info, source, settings
        self.segmenter = info.segmenter()
        self.top_k = info.config.model.top_k

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    @property
    def reads_ahead(self) -> bool:
        """Whether the next documents (and a long one's next blocks) are read in a thread."""
        return self.settings.read_ahead and self.backend.reads_ahead

    def new_state(self, keep_sentences: int = 0) -> DocumentState:
        """An empty running state of one document, for this model."""
        dense = self.info.config.model.dense_sentences
        return DocumentState(top_k=self.top_k, keep_sentences=keep_sentences, dense_sentences=dense)

    def run(
        self,
        items: Iterable[Document | BadInput],
        weights: bool = False,
        keep_sentences: int = 0,
        progress: bool = True,
    ) -> Iterator[Outcome]:
        """Outcomes in input order. A batch holds consecutive short documents up to
        settings.batch_tokens tokens; longer documents are streamed in blocks of
        settings.block_tokens. With weights=True, short documents also return their segments
        (with offsets) and every level's weights. Where the backend reads ahead, the next batch's
        documents are read and tokenized while this one runs (stream.read_ahead)."""
        batch_tokens, block_tokens = self.settings.batch_tokens, self.settings.block_tokens
        pending: list[tuple[Document, Segments]] = []
        reads: Iterable[Read] = (self._read(item, weights) for item in items)
        if self.reads_ahead:
            reads = read_ahead(reads, _read_tokens, budget=batch_tokens)
        for item, segments, error in reads:
            if error is not None:
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                yield Outcome(item, error=error)
            elif segments is None:  # a large file: streamed from disk, never read whole
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                try:
                    blocks = self.segmenter.blocks(item.chunks(), block_tokens, offsets=weights)
                    outcome = self._stream(item, blocks, keep_sentences, progress)
                except (OSError, ValueError) as e:  # the file failed while it was read
                    outcome = Outcome(item, error=f"cannot read: {e}")
                yield outcome
            elif segments.num_tokens > block_tokens:
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                yield self._stream(item, segments.blocks(block_tokens), keep_sentences, progress)
            else:
                pending.append((item, segments))
                if sum(s.num_tokens for _, s in pending) >= batch_tokens:
                    yield from self._flush(pending, batch_tokens, weights, keep_sentences)
        yield from self._flush(pending, batch_tokens, weights, keep_sentences)

    def _read(self, item: Document | BadInput, weights: bool) -> Read:
        """The input read and cut into segments (in the read-ahead thread), or why it failed."""
        if isinstance(item, BadInput):
            return item, None, item.error
        try:
            if item.size > LONG_DOCUMENT_CHARS:
                return item, None, None
            segments = self.segmenter.segment(item.read(), offsets=weights)
        except (OSError, ValueError) as e:
            return item, None, f"cannot read: {e}"
        if segments.num_tokens == 0:
            return item, None, "empty after cleaning: the text has no tokens"
        return item, segments, None

    def _stream(self, item: Document, blocks: Iterable[Segments], keep_sentences: int, progress: bool) -> Outcome:
        meter = Progress(item.name, enabled=progress)
        state = run_document(self.backend, blocks, self.new_state(keep_sentences), meter, self.reads_ahead)
        if state.tokens == 0:
            return Outcome(item, error="empty after cleaning: the text has no tokens")
        probabilities, fusion = self._classify([state])
        return Outcome(item, probabilities=probabilities[0], fusion=fusion[0], state=state)

    def _classify(self, states: list[DocumentState]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and fusion weights [N, M, K] of finished documents."""
        return self.classify_heads([s.head_inputs() for s in states])

    def classify_heads(self, inputs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and fusion weights [N, M, K] of head inputs (each a batch of one
        or more, as DocumentState.head_inputs gives)."""
        logits, fusion = self.run_heads(inputs)
        return logits_to_probabilities(logits, self.info.multilabel), fusion

    def run_heads(self, inputs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Logits [N, C] and fusion weights [N, M, K] of head inputs, run in as few batches as
        HEAD_BAG_ENTRIES allows."""
        # Grouped by bag width: a group's bags are padded to its widest, and in input order 43% of
        # the news test set's padded n-gram entries were padding.
        order = sorted(range(len(inputs)), key=lambda i: _bag_width(inputs[i]))
        logits, fusion = [], []
        for group in _bag_groups([inputs[i] for i in order]):
            z, weights = self.backend.classify({name: _stack([i[name] for i in group]) for name in group[0]})
            logits.append(z)
            fusion.append(weights)
        # back to input order, an input being one or more rows
        rows = np.cumsum([0] + [len(inputs[i]["dense_sum"]) for i in order])
        back = np.concatenate([np.arange(rows[k], rows[k + 1]) for k in np.argsort(order)])
        return np.concatenate(logits)[back], np.concatenate(fusion)[back]

    def _flush(
        self, pending: list[tuple[Document, Segments]], batch_tokens: int, weights: bool, keep_sentences: int
    ) -> Iterator[Outcome]:
        """Run the pending short documents in length-sorted micro-batches, then yield them in order."""
        if not pending:
            return
        T = self.segmenter.phrase_tokens
        order = sorted(range(len(pending)), key=lambda i: pending[i][1].num_phrases)
        states: dict[int, DocumentState] = {}
        extra: dict[int, dict[str, np.ndarray]] = {}
        start = 0
        while start < len(order):
            stop = start + 1  # grow the micro-batch while its padded size fits
            while stop < len(order) and (stop - start + 1) * pending[order[stop]][1].num_phrases * T <= batch_tokens:
                stop += 1
            batch = [pending[i][1] for i in order[start:stop]]
            outputs = self.backend.encode(collate(batch))
            for row, i in enumerate(order[start:stop]):
                state = self.new_state(keep_sentences)
                state.merge(pending[i][1], outputs, row)
                states[i] = state
                if weights:
                    segments = pending[i][1]
                    P, S = segments.num_phrases, segments.num_sentences
                    extra[i] = {
                        "word_weights": outputs["word_weights"][row, :P],
                        "phrase_weights": outputs["phrase_weights"][row, :P],
                        "sentence_scores": outputs["sentence_scores"][row, :S],
                        "phrase_scores": outputs["phrase_scores"][row, :, :P],
                    }
            start = stop
        probabilities, fusion = self._classify([states[i] for i in range(len(pending))])
        for i, (item, segments) in enumerate(pending):
            yield Outcome(
                item,
                probabilities=probabilities[i],
                fusion=fusion[i],
                state=states[i],
                segments=segments if weights else None,
                weights=extra.get(i),
            )
        pending.clear()


def _read_tokens(read: Read) -> int:
    return read[1].num_tokens if read[1] is not None else 0


def _bag_width(inputs: dict[str, np.ndarray]) -> int:
    return inputs["ngram_ids"].shape[1] if "ngram_ids" in inputs else 0


def _bag_groups(inputs: list[dict[str, np.ndarray]]) -> Iterator[list[dict[str, np.ndarray]]]:
    """Consecutive runs of head inputs whose padded n-gram bags (rows x widest bag) stay within
    HEAD_BAG_ENTRIES; without n-grams, one run."""
    group: list[dict[str, np.ndarray]] = []
    rows = width = 0
    for i in inputs:
        n, w = len(i["dense_sum"]), _bag_width(i)
        if group and (rows + n) * max(width, w) > HEAD_BAG_ENTRIES:
            yield group
            group, rows, width = [], 0, 0
        group.append(i)
        rows, width = rows + n, max(width, w)
    if group:
        yield group


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate along the batch axis, padding axis 1 with 0 where widths differ (n-gram bags)."""
    if arrays[0].ndim < 2:
        return np.concatenate(arrays)
    # Filled in place: np.pad per array cost 4% of the news test split's prediction time.
    out = np.zeros(
        (sum(len(a) for a in arrays), max(a.shape[1] for a in arrays), *arrays[0].shape[2:]), arrays[0].dtype
    )
    row = 0
    for a in arrays:
        out[row : row + len(a), : a.shape[1]] = a
        row += len(a)
    return out


def load_predictor(path: str | Path, settings: InferenceConfig = InferenceConfig()) -> Predictor:
    """A run directory, a checkpoint file, or an exported bundle (a folder with manifest.json)."""
    if is_bundle(Path(path)):
        backend, info = load_bundle(Path(path), settings.threads)
        return Predictor(backend, info, str(path), settings)
    checkpoint = checkpoint_file(path)
    try:  # torch is optional: a runtime-only install reads bundles
        from .checkpoint import load_checkpoint
    except ImportError as e:
        raise HdcError(
            f"{checkpoint}: reading a checkpoint needs torch ({e}); install hdc[train], or export a bundle and use that"
        ) from None
    backend, info = load_checkpoint(checkpoint, settings.threads)
    return Predictor(backend, info, str(checkpoint), settings)


def result_record(outcome: Outcome, info: ModelInfo, settings: InferenceConfig) -> dict:
    """The JSON record of one outcome: its name, its label(s), and the top labels with their
    probabilities."""
    record = outcome.item.record()
    if not outcome.ok:
        record["error"] = outcome.error
        return record
    p = outcome.probabilities
    chosen = chosen_labels(p, info.labels, info.multilabel, settings.threshold)
    if info.multilabel:
        record["labels"] = chosen
    else:
        record["label"] = chosen[0]
    top = np.argsort(-p, kind="stable")[: settings.top_labels]
    record["top"] = [{"label": info.labels[i], "prob": round(float(p[i]), 6)} for i in top]
    if isinstance(outcome.item, Document) and outcome.item.warnings:
        record["warnings"] = list(outcome.item.warnings)
    return record


def dumps(record: dict) -> str:
    """One JSON line. Names are clean (hdc.data.clean), so the line encodes as UTF-8."""
    return json.dumps(record, ensure_ascii=False)
