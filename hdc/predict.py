"""Classify documents with a trained model: a checkpoint (torch) or an exported bundle (ONNX
Runtime, no torch). Short documents go through in length-sorted batches; long ones are streamed
block by block (hdc/stream.py). Results come back in input order, one per document, and a bad
input becomes an error result instead of stopping the batch.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .config import Config, config_from_dict
from .data import BadInput, Document
from .errors import HdcError, UsageError
from .io import Lock, check_overwrite, make_parent
from .stream import Backend, DocumentState, Progress, collate, run_document
from .text import Segmenter, Segments

LONG_DOCUMENT_CHARS = 1 << 22  # files larger than this are streamed without being read whole
PROGRESS_TOKENS = 1 << 20  # documents longer than this report progress on stderr
# Padded n-gram bag entries (documents x widest bag) per head run. The ONNX head gathers a
# [B, U, E] block of table rows, 16 MB at this cap with E = 64; one run for 450 short documents
# padded to their widest bag took 2.2 GB of peak RSS (0.7 GB with the cap).
HEAD_BAG_ENTRIES = 1 << 16


@dataclass(frozen=True)
class ModelInfo:
    """Everything besides the weights that a model needs to classify: saved in every checkpoint
    and every bundle."""

    config: Config
    labels: tuple[str, ...]
    multilabel: bool
    tokenizer: str  # the tokenizer's JSON
    version: str

    @classmethod
    def from_dict(cls, raw: dict) -> ModelInfo:
        return cls(
            config=config_from_dict(raw["config"]),
            labels=tuple(raw["labels"]),
            multilabel=bool(raw["multilabel"]),
            tokenizer=raw["tokenizer"],
            version=raw.get("version", "unknown"),
        )

    def to_dict(self) -> dict:
        from .config import config_to_dict

        return {
            "config": config_to_dict(self.config),
            "labels": list(self.labels),
            "multilabel": self.multilabel,
            "tokenizer": self.tokenizer,
            "version": self.version,
        }

    def segmenter(self) -> Segmenter:
        m = self.config.model
        return Segmenter(
            Tokenizer.from_str(self.tokenizer),
            m.phrase_tokens,
            m.sentence_tokens,
            m.ngram_orders,
            m.ngram_buckets,
            m.ngram_raw,
        )


def logits_to_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """[N, C] probabilities from logits: a sigmoid per label, or a softmax over the classes."""
    logits = logits.astype(np.float64)
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


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
    def __init__(self, backend: Backend, info: ModelInfo, source: str):
        self.backend, self.info, self.source = backend, info, source
        self.segmenter = info.segmenter()
        self.top_k = info.config.model.top_k

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def run(
        self,
        items: Iterable[Document | BadInput],
        batch_tokens: int = 32768,
        block_tokens: int = 65536,
        weights: bool = False,
        keep_sentences: int = 0,
        progress: bool = True,
    ) -> Iterator[Outcome]:
        """Outcomes in input order. A batch holds consecutive short documents up to batch_tokens
        tokens; longer documents are streamed in blocks of block_tokens. With weights=True,
        short documents also return their segments (with offsets) and every level's weights."""
        pending: list[tuple[Document, Segments]] = []
        for item in items:
            if isinstance(item, BadInput):
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                yield Outcome(item, error=item.error)
                continue
            try:
                if item.size > LONG_DOCUMENT_CHARS:
                    blocks = self.segmenter.blocks(item.chunks(), block_tokens, offsets=weights)
                    yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                    yield self._stream(item, blocks, keep_sentences, progress)
                    continue
                segments = self.segmenter.segment(item.read(), offsets=weights)
            except (OSError, ValueError) as e:
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                yield Outcome(item, error=f"cannot read: {e}")
                continue
            if segments.num_tokens == 0:
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                yield Outcome(item, error="empty after cleaning: the text has no tokens")
            elif segments.num_tokens > block_tokens:
                yield from self._flush(pending, batch_tokens, weights, keep_sentences)
                yield self._stream(item, segments.blocks(block_tokens), keep_sentences, progress)
            else:
                pending.append((item, segments))
                if sum(s.num_tokens for _, s in pending) >= batch_tokens:
                    yield from self._flush(pending, batch_tokens, weights, keep_sentences)
        yield from self._flush(pending, batch_tokens, weights, keep_sentences)

    def _stream(self, item: Document, blocks: Iterable[Segments], keep_sentences: int, progress: bool) -> Outcome:
        meter = Progress(item.name, enabled=progress)
        state = run_document(self.backend, blocks, self.top_k, keep_sentences, meter)
        if state.tokens == 0:
            return Outcome(item, error="empty after cleaning: the text has no tokens")
        probabilities, fusion = self._classify([state])
        return Outcome(item, probabilities=probabilities[0], fusion=fusion[0], state=state)

    def _classify(self, states: list[DocumentState]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and fusion weights [N, M, K] of finished documents."""
        return self.classify_heads([s.head_inputs() for s in states])

    def classify_heads(self, inputs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities [N, C] and fusion weights [N, M, K] of head inputs (each a batch of one
        or more, as DocumentState.head_inputs gives), run in as few batches as HEAD_BAG_ENTRIES
        allows."""
        probabilities, fusion = [], []
        for group in _bag_groups(inputs):
            logits, weights = self.backend.classify({name: _stack([i[name] for i in group]) for name in group[0]})
            probabilities.append(logits_to_probabilities(logits, self.info.multilabel))
            fusion.append(weights)
        return np.concatenate(probabilities), np.concatenate(fusion)

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
                state = DocumentState(top_k=self.top_k, keep_sentences=keep_sentences)
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


def _bag_groups(inputs: list[dict[str, np.ndarray]]) -> Iterator[list[dict[str, np.ndarray]]]:
    """Consecutive runs of head inputs whose padded n-gram bags (rows x widest bag) stay within
    HEAD_BAG_ENTRIES; without n-grams, one run."""
    group: list[dict[str, np.ndarray]] = []
    rows = width = 0
    for i in inputs:
        n, w = len(i["dense_sum"]), i["ngram_ids"].shape[1] if "ngram_ids" in i else 0
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
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)) for a in arrays])


def load_predictor(path: str | Path, threads: int = 0) -> Predictor:
    """A run directory, a checkpoint file, or an exported bundle (a folder with manifest.json)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such model; pass a run directory, a .ckpt file or an exported bundle")
    if path.is_dir() and (path / "manifest.json").exists():
        from .runtime import load_bundle

        return load_bundle(path, threads)
    if path.is_dir():
        best = path / "checkpoints" / "best.ckpt"
        if not best.exists():
            raise UsageError(
                f"{path}: not a run directory (no checkpoints/best.ckpt) and not a bundle (no manifest.json)"
            )
        path = best
    try:
        from .checkpoint import load_checkpoint
    except ImportError as e:
        raise HdcError(
            f"{path}: reading a checkpoint needs torch ({e}); install hdc[train], or export a bundle and use that"
        ) from None
    model, info = load_checkpoint(path)
    from .checkpoint import TorchBackend

    return Predictor(TorchBackend(model, threads), info, str(path))


def result_record(outcome: Outcome, labels: tuple[str, ...], multilabel: bool, k: int, threshold: float) -> dict:
    """The JSON record of one outcome: its name, label(s), top-k labels with probabilities."""
    record = outcome.item.record()
    if not outcome.ok:
        record["error"] = outcome.error
        return record
    p = outcome.probabilities
    top = np.argsort(-p, kind="stable")[: max(1, k)]
    if multilabel:
        record["labels"] = [labels[i] for i in np.flatnonzero(p >= threshold)]
    else:
        record["label"] = labels[int(top[0])]
    record["top"] = [{"label": labels[i], "prob": round(float(p[i]), 6)} for i in top]
    if isinstance(outcome.item, Document) and outcome.item.warnings:
        record["warnings"] = list(outcome.item.warnings)
    return record


def dumps(record: dict) -> str:
    """One JSON line. Names are clean (hdc.data.clean), so the line encodes as UTF-8."""
    return json.dumps(record, ensure_ascii=False)


def is_predictions(head: bytes) -> bool:
    """Whether a file's first bytes are those of `hdc predict` output (records start with the
    document's key), so --output may replace it."""
    return head.startswith((b'{"id": ', b'{"path": '))


class PredictionsFile:
    """`hdc predict --output F`: records go to F.partial, which is renamed to F when the run
    completes. F.partial.index holds, for each record, the (key, name, fingerprint) of the
    input it came from, so `--resume` matches the records to the inputs by position and content,
    not by name (names may repeat). F.partial is locked while a process writes it.

    A record is written and flushed before its index line, so after a kill the two agree on
    every record but perhaps the last, which is then done again."""

    def __init__(self, output: Path, resume: bool):
        self.output, self.partial, self.index_path = self.paths(output)
        check_overwrite(output, is_predictions, "--output")
        self.lock = Lock(self.partial, f"--output {output}")
        self.records = open(self.lock.fd, "r+b", closefd=False)
        self.index = open(self.index_path, "a+b")
        self.done = self._recover() if resume else []
        if not resume:
            self.records.truncate(0)
            self.index.truncate(0)
        self.records.seek(0, os.SEEK_END)
        self.index.seek(0, os.SEEK_END)

    @staticmethod
    def paths(output: Path) -> tuple[Path, Path, Path]:
        """The output, its partial file and the partial's index."""
        return output, output.with_name(output.name + ".partial"), output.with_name(output.name + ".partial.index")

    def _recover(self) -> list[list[str]]:
        """The (key, name, fingerprint) of each record a killed run completed; both files are
        cut back to those records (a torn last line, or a record without its index line)."""
        records = _complete_lines(self.records, lambda line: isinstance(json.loads(line), dict))
        index = _complete_lines(self.index, lambda line: len(json.loads(line)) == 3)
        n = min(len(records), len(index))
        for f, ends in ((self.records, records), (self.index, index)):
            f.truncate(ends[n - 1] if n else 0)
        self.index.seek(0)
        return [json.loads(line) for line in itertools.islice(self.index, n)]

    def skip_done(self, items: Iterable[Document | BadInput]) -> Iterator[Document | BadInput]:
        """The inputs after those already done, checking that the done ones are the same inputs."""
        position = 0
        for item in items:
            if position < len(self.done):
                expected = self.done[position]
                if [item.key, item.name, item.fingerprint()] != expected:
                    raise UsageError(
                        f"--resume: {self.partial} was written for other inputs (its record {position + 1} is "
                        f"{expected[1]!r}, the input there is {item.name!r}, or it has changed); "
                        "run without --resume to start over"
                    )
                position += 1
                continue
            yield item
        if position < len(self.done):
            raise UsageError(
                f"--resume: {self.partial} holds {len(self.done)} records but the inputs give only {position}; "
                "run without --resume to start over"
            )

    def write(self, line: str, item: Document | BadInput) -> None:
        self.records.write(_encode(line))
        self.records.flush()
        self.index.write(_encode(json.dumps([item.key, item.name, item.fingerprint()], ensure_ascii=False)))
        self.index.flush()

    def finish(self) -> None:
        """The run is complete: F.partial becomes F (still under the lock)."""
        self.records.close()
        self.index.close()
        os.replace(self.partial, self.output)
        self.index_path.unlink(missing_ok=True)
        self.lock.release()

    def close(self) -> None:
        """The run stops short: F.partial stays, for --resume."""
        self.records.close()
        self.index.close()
        self.lock.release()


def _encode(line: str) -> bytes:
    """A JSON line as UTF-8; a lone surrogate (which UTF-8 cannot hold) stays a JSON escape."""
    return (line + "\n").encode("utf-8", "backslashreplace")


def _complete_lines(f, valid) -> list[int]:
    """The end offset of each leading line of the binary file `f` that ends in a newline and
    passes `valid`."""
    f.seek(0)
    ends, offset = [], 0
    for line in f:
        offset += len(line)
        try:
            if not line.endswith(b"\n") or not valid(line):
                break
        except (ValueError, TypeError):
            break
        ends.append(offset)
    return ends


def predict(
    model: str | Path,
    inputs: list[str],
    output: str | Path | None = None,
    k: int = 3,
    threshold: float = 0.5,
    batch_tokens: int = 32768,
    block_tokens: int = 65536,
    threads: int = 0,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    text_column: str | None = None,
) -> tuple[int, int]:
    """Write one JSONL record per document, to stdout or to `output`, as each batch finishes.

    `output` is written as OUTPUT.partial and renamed when complete; with resume=True the
    documents already in OUTPUT.partial are skipped. shard=(i, n) keeps every n-th document,
    starting at the i-th. .csv/.tsv inputs are tables of documents, their text in `text_column`
    (default: the column the model was trained on). Returns (documents classified, errors)."""
    import sys

    from .data import iter_documents

    sink = None
    own: set[Path] = set()
    if output is not None:
        output = make_parent(output, "--output")
        own = {path.resolve() for path in PredictionsFile.paths(output)}
        for item in inputs:
            if item != "-" and Path(item).resolve() in own:
                raise UsageError(f"--output {output} is also an input; write the predictions elsewhere")
    predictor = load_predictor(model, threads)
    text_column = text_column or predictor.info.config.data.text_column
    index, count = shard
    items = (item for i, item in enumerate(iter_documents(inputs, text_column, exclude=own)) if i % count == index)
    if output is not None:
        sink = PredictionsFile(output, resume)
        if sink.done:
            print(f"resume: {len(sink.done)} documents already in {sink.partial}", file=sys.stderr)
        items = sink.skip_done(items)
    ok = errors = 0
    try:
        for outcome in predictor.run(items, batch_tokens, block_tokens):
            line = dumps(result_record(outcome, predictor.labels, predictor.info.multilabel, k, threshold))
            if sink is None:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            else:
                sink.write(line, outcome.item)
            if outcome.ok:
                ok += 1
            else:
                errors += 1
                print(f"error: {outcome.item.name}: {outcome.error}", file=sys.stderr)
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    if sink is not None:
        sink.finish()
    return ok, errors
