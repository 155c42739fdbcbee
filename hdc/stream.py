"""Classify documents of any length in one pass, with memory bounded by the block size. No torch.

Everything below the document level is local to a phrase or a sentence, so a long document is
read in blocks of whole sentences. Between blocks only this is kept (`DocumentState`):

  - the running top-K (score, phrase state) per retrieval query: merging two top-K lists and
    keeping the best K is exact, because the queries are learned and known before reading;
    and the best score left out of it (hdc.model.TIE_MARGIN), merged the same way;
  - the online-softmax statistics (max, sum, weighted sum) of the dense sentence pooling;
  - the counts of the document's hashed n-grams, for the n-gram branch (at most one per bucket
    of the model's table, so bounded too).

The same code drives the torch model and the ONNX graphs: a backend turns block inputs into a
block state (`encode`) and a merged state into logits (`classify`), all as numpy arrays.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from .schema import HEAD_STATE, INPUTS, NEG, NGRAM_INPUTS, VALID
from .text import Segments, ngram_bag


class Backend(Protocol):
    # Whether the next inputs should be read and tokenized in a thread while this backend runs
    # (read_ahead): yes where the reader gets a core the model leaves free.
    reads_ahead: bool

    def encode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def classify(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...


def first_occurrences(tokens: np.ndarray) -> np.ndarray:
    """[P] bool: True for the first phrase of each distinct token sequence. Repeated text gets
    one slot in the top-K, not K (a prototype lost needles to 7 copies of one filler phrase)."""
    keep = np.zeros(len(tokens), bool)
    if len(tokens):
        rows = np.ascontiguousarray(tokens).view(np.dtype((np.void, tokens.dtype.itemsize * tokens.shape[1])))
        keep[np.unique(rows.ravel(), return_index=True)[1]] = True
    return keep


def collate(documents: list[Segments], selectable: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Pad documents (or blocks) into the model's inputs: tokens [B, P, T], phrase_sentence
    [B, P], sentence_phrases [B, S, Q] (the phrases of each sentence) and selectable [B, P]."""
    B = len(documents)
    T = documents[0].tokens.shape[1]
    P = max(1, max(d.num_phrases for d in documents))
    S = max(1, max(d.num_sentences for d in documents))
    counts = [np.bincount(d.phrase_sentence, minlength=d.num_sentences) for d in documents]
    Q = max(1, max((int(c.max()) for c in counts if len(c)), default=1))
    tokens = np.zeros((B, P, T), np.int64)
    phrase_sentence = np.full((B, P), -1, np.int64)
    sentence_phrases = np.full((B, S, Q), -1, np.int64)
    chosen = np.zeros((B, P), bool)
    for b, (d, count) in enumerate(zip(documents, counts)):
        n = d.num_phrases
        tokens[b, :n] = d.tokens
        phrase_sentence[b, :n] = d.phrase_sentence
        position = np.arange(n) - (np.cumsum(count) - count)[d.phrase_sentence]
        sentence_phrases[b, d.phrase_sentence, position] = np.arange(n)
        chosen[b, :n] = first_occurrences(d.tokens) if selectable is None else selectable[b]
    return dict(zip(INPUTS, (tokens, phrase_sentence, sentence_phrases, chosen)))


@dataclass
class DocumentState:
    """The running summary of a document read so far. Its size does not grow with the length."""

    top_k: int
    keep_sentences: int = 0  # remember this many best sentences (for inspection summaries)
    dense_sentences: int = 0  # model.dense_sentences: the dense path reads this many (0: all)
    dense_max: float = NEG
    dense_sum: float = 0.0
    dense_acc: np.ndarray | None = None  # [D]
    # With model.dense_sentences: the N best sentences so far, whose statistics are the three above
    dense_top_scores: np.ndarray | None = None  # [<= N]
    dense_top_states: np.ndarray | None = None  # [<= N, D]
    top_scores: np.ndarray | None = None  # [M, K], NEG where empty
    top_states: np.ndarray | None = None  # [M, K, D]
    top_phrases: np.ndarray | None = None  # [M, K] phrase index in the document, -1 where empty
    spare_scores: np.ndarray | None = None  # [M] the best score left out of the top-K, NEG if none
    top_spans: np.ndarray | None = None  # [M, K, 2] character spans
    # the sentence of each selected phrase: [M, K, 3] (index, start, end) and its dense score [M, K]
    top_sentences: np.ndarray | None = None
    top_sentence_scores: np.ndarray | None = None
    top_keys: dict[int, bytes] = field(default_factory=dict)  # phrase index -> its token ids
    ngram_ids: np.ndarray | None = None  # [U] distinct n-gram buckets seen so far
    ngram_counts: np.ndarray | None = None  # [U] how often each occurred
    best_sentences: list[tuple[float, int, int, int]] = field(default_factory=list)  # score, index, span
    tokens: int = 0
    phrases: int = 0
    sentences: int = 0

    def selectable(self, block: Segments) -> np.ndarray:
        """Phrases of `block` the sparse path may pick: first occurrences in the block whose text
        is not already in the running top-K. Equal to first occurrences in the whole document
        for the result: a repeat of an evicted phrase has the evicted (too low) score."""
        keep = first_occurrences(block.tokens)
        if self.top_keys:
            known = set(self.top_keys.values())
            for i in np.flatnonzero(keep):
                if block.tokens[i].tobytes() in known:
                    keep[i] = False
        return keep

    def merge(self, block: Segments, state: dict[str, np.ndarray], b: int = 0) -> None:
        """Fold row b of a block state (from Backend.encode) into the running state."""
        if "dense_top_scores" in state:
            self._merge_dense_top(state["dense_top_scores"][b], state["dense_top_states"][b])
        else:
            self._merge_dense(float(state["dense_max"][b]), float(state["dense_sum"][b]), state["dense_acc"][b])
        self._merge_top(
            block,
            state["top_scores"][b],
            state["top_states"][b],
            state["top_phrases"][b],
            state["spare_scores"][b],
            state["sentence_scores"][b],
        )
        if block.ngrams is not None:
            self._merge_ngrams(block.ngrams)
        if self.keep_sentences:
            self._merge_sentences(block, state["sentence_scores"][b])
        self.tokens += block.num_tokens
        self.phrases += block.num_phrases
        self.sentences += block.num_sentences

    def _merge_dense(self, m: float, s: float, acc: np.ndarray) -> None:
        if self.dense_acc is None:
            self.dense_max, self.dense_sum, self.dense_acc = m, s, acc.astype(np.float32)
            return
        new = max(self.dense_max, m)
        old_scale, block_scale = np.exp(self.dense_max - new), np.exp(m - new)
        self.dense_sum = self.dense_sum * old_scale + s * block_scale
        self.dense_acc = self.dense_acc * old_scale + acc * block_scale
        self.dense_max = new

    def _merge_dense_top(self, scores: np.ndarray, states: np.ndarray) -> None:
        """Keep the dense_sentences best sentences of all blocks, and their softmax statistics as
        the model computes them for one block."""
        if self.dense_top_scores is not None:
            scores = np.concatenate([self.dense_top_scores, scores])
            states = np.concatenate([self.dense_top_states, states])
            keep = np.argsort(-scores, kind="stable")[: self.dense_sentences]
            scores, states = scores[keep], states[keep]
        self.dense_top_scores, self.dense_top_states = scores, states
        real = scores > VALID
        self.dense_max = float(scores.max()) if len(scores) else NEG
        e = (np.exp(scores - self.dense_max) * real).astype(np.float32)
        self.dense_sum, self.dense_acc = float(e.sum()), (e @ states).astype(np.float32)

    def _merge_ngrams(self, ngrams: np.ndarray) -> None:
        ids, counts = (a[0] for a in ngram_bag(ngrams[None]))
        if self.ngram_ids is not None:
            ids, inverse = np.unique(np.concatenate([self.ngram_ids, ids]), return_inverse=True)
            counts = np.bincount(inverse, np.concatenate([self.ngram_counts, counts]))
        keep = ids > 0
        self.ngram_ids, self.ngram_counts = ids[keep], counts[keep].astype(np.float32)

    def _merge_top(
        self,
        block: Segments,
        scores: np.ndarray,
        states: np.ndarray,
        local: np.ndarray,
        spare: np.ndarray,
        sentence_scores: np.ndarray,
    ) -> None:
        M, D = scores.shape[0], states.shape[-1]
        if self.top_scores is None:
            self.spare_scores = np.full(M, NEG, np.float32)
            self.top_scores = np.full((M, 0), NEG, np.float32)
            self.top_states = np.zeros((M, 0, D), np.float32)
            self.top_phrases = np.full((M, 0), -1, np.int64)
            self.top_spans = np.zeros((M, 0, 2), np.int64)
            self.top_sentences = np.zeros((M, 0, 3), np.int64)
            self.top_sentence_scores = np.full((M, 0), NEG, np.float32)
        if block.num_phrases == 0:
            return
        index = np.where(scores > VALID, local + block.first_phrase, -1)
        local = np.minimum(local, block.num_phrases - 1)  # padding rows: masked below
        sentence = block.phrase_sentence[local]  # [M, k]
        sentences = np.concatenate(
            [(sentence + block.first_sentence)[..., None], block.sentence_spans[sentence]], axis=-1
        )  # [M, k, 3]
        all_scores = np.concatenate([self.top_scores, scores], 1)
        all_states = np.concatenate([self.top_states, states], 1)
        all_index = np.concatenate([self.top_phrases, index], 1)
        all_spans = np.concatenate([self.top_spans, block.phrase_spans[local]], 1)
        all_sentences = np.concatenate([self.top_sentences, sentences], 1)
        all_sentence_scores = np.concatenate([self.top_sentence_scores, sentence_scores[sentence]], 1)
        width = min(self.top_k, all_scores.shape[1])
        keep = np.empty((M, width), np.int64)
        for m in range(M):
            # Best score first; ties go to the earlier phrase, as in a one-shot top-k.
            valid = all_index[m] >= 0
            ranked = np.where(valid, all_scores[m], NEG)
            order = np.lexsort((np.where(valid, all_index[m], np.iinfo(np.int64).max), -ranked))
            keep[m] = order[:width]
            left_out = ranked[order[width]] if len(order) > width else NEG
            self.spare_scores[m] = max(self.spare_scores[m], spare[m], left_out)
        rows = np.arange(M)[:, None]
        self.top_scores = np.where(all_index[rows, keep] >= 0, all_scores[rows, keep], NEG).astype(np.float32)
        self.top_states = all_states[rows, keep]
        self.top_phrases = all_index[rows, keep]
        self.top_spans = all_spans[rows, keep]
        self.top_sentences = all_sentences[rows, keep]
        self.top_sentence_scores = all_sentence_scores[rows, keep]
        keys = {}
        for i in np.unique(self.top_phrases[self.top_phrases >= 0]):
            i = int(i)
            keys[i] = self.top_keys[i] if i in self.top_keys else block.tokens[i - block.first_phrase].tobytes()
        self.top_keys = keys

    def _merge_sentences(self, block: Segments, scores: np.ndarray) -> None:
        scores = scores[: block.num_sentences]
        best = np.argsort(-scores, kind="stable")[: self.keep_sentences]
        found = [
            (
                float(scores[i]),
                block.first_sentence + int(i),
                int(block.sentence_spans[i, 0]),
                int(block.sentence_spans[i, 1]),
            )
            for i in best
        ]
        self.best_sentences = sorted(self.best_sentences + found, key=lambda x: (-x[0], x[1]))[: self.keep_sentences]

    def head_inputs(self) -> dict[str, np.ndarray]:
        """The merged state as a batch of one, for Backend.classify, with the top-K padded to K
        (padding has score NEG and gets no weight) so that documents stack into a batch."""
        M, k = self.top_scores.shape
        top_scores = np.full((1, M, self.top_k), NEG, np.float32)
        top_states = np.zeros((1, M, self.top_k, self.top_states.shape[-1]), np.float32)
        top_scores[0, :, :k], top_states[0, :, :k] = self.top_scores, self.top_states
        inputs = dict(
            zip(
                HEAD_STATE,
                (
                    np.asarray([self.dense_sum], np.float32),
                    self.dense_acc[None].astype(np.float32),
                    top_scores,
                    top_states,
                    self.spare_scores[None],
                ),
            )
        )
        if self.ngram_ids is not None:
            width = max(1, len(self.ngram_ids))  # an empty bag still has one (padding) column
            ids, counts = np.zeros((1, width), np.int64), np.zeros((1, width), np.float32)
            ids[0, : len(self.ngram_ids)], counts[0, : len(self.ngram_counts)] = self.ngram_ids, self.ngram_counts
            inputs |= dict(zip(NGRAM_INPUTS, (ids, counts)))
        return inputs

    def sentence_weight(self, score: float) -> float:
        if self.dense_top_scores is not None and len(self.dense_top_scores) and score < self.dense_top_scores.min():
            return 0.0  # outside the N sentences the dense path reads
        return float(np.exp(score - self.dense_max) / self.dense_sum) if self.dense_sum > 0 else 0.0


class Progress:
    """Tokens done and tokens/s on stderr, for documents long enough to wait for."""

    def __init__(self, name: str, every: float = 2.0, enabled: bool = True):
        self.name, self.every, self.enabled = name, every, enabled
        self.start = self.last = time.perf_counter()
        self.shown = False

    def update(self, tokens: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < self.every) or (final and not self.shown):
            return
        self.last, self.shown = now, True
        rate = tokens / max(now - self.start, 1e-9)
        end = "\n" if final or not sys.stderr.isatty() else "\r"
        print(f"{self.name}: {tokens:,} tokens, {rate:,.0f} tokens/s", end=end, file=sys.stderr, flush=True)


# Blocks cut ahead of the one being encoded. A long text is tokenized a chunk (hdc.data.CHUNK_BYTES,
# about 4 blocks) at a time, so with 4 the next chunk's tokenizing overlaps this chunk's blocks:
# on a 1M-token document at 1 thread, 1.13x the tokens/s of no read-ahead, 1.02x at 2 threads.
READ_AHEAD_BLOCKS = 4


def run_document(
    backend: Backend,
    blocks: Iterable[Segments],
    state: DocumentState,
    progress: Progress | None = None,
    ahead: bool = False,
) -> DocumentState:
    """Stream the blocks of one document through `backend.encode` and merge them into `state`.
    With `ahead`, the next blocks are cut and tokenized while this one is encoded, up to
    READ_AHEAD_BLOCKS ahead, so memory stays bounded by the block size."""
    if ahead:
        blocks = read_ahead(blocks, lambda b: 1, budget=READ_AHEAD_BLOCKS)
    for block in blocks:
        if block.num_phrases == 0:
            continue
        outputs = backend.encode(collate([block], [state.selectable(block)]))
        state.merge(block, outputs)
        if progress:
            progress.update(state.tokens)
    if progress:
        progress.update(state.tokens, final=True)
    return state


Item = TypeVar("Item")


def read_ahead(items: Iterable[Item], cost: Callable[[Item], int], budget: int) -> Iterator[Item]:
    """`items` in order, produced by a background thread that runs ahead of the consumer until
    the items waiting for it cost `budget` or more. Reading and tokenizing the next documents
    (the tokenizer and numpy leave the GIL) then overlaps the model's run on these (ONNX Runtime
    and torch leave it too), where before one core idled while the other did either. An
    exception in `items` is raised here, where its item would have been; closing this iterator
    stops the thread before its next item."""
    ready = threading.Condition()
    waiting: deque[tuple[Item | None, int, BaseException | None]] = deque()  # item, its cost, or the end
    ahead, stopped = [0], [False]  # the cost waiting; whether the consumer has gone

    def produce() -> None:
        error = None
        try:
            for item in items:
                c = max(1, cost(item))  # so that free items cannot run ahead without end
                with ready:
                    while ahead[0] >= budget and not stopped[0]:
                        ready.wait()
                    if stopped[0]:
                        return
                    waiting.append((item, c, None))
                    ahead[0] += c
                    ready.notify_all()
        except BaseException as e:  # handed to the consumer, which raises it
            error = e
        with ready:
            waiting.append((None, -1, error))  # the end
            ready.notify_all()

    threading.Thread(target=produce, name="hdc-read-ahead", daemon=True).start()
    try:
        while True:
            with ready:
                while not waiting:
                    ready.wait()
                item, c, error = waiting.popleft()
                ahead[0] -= max(c, 0)
                ready.notify_all()
            if error is not None:
                raise error
            if c < 0:
                return
            yield item
    finally:
        with ready:
            stopped[0] = True
            ready.notify_all()
