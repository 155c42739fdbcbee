"""Initial token embeddings: word vectors from a file (fastText .vec or GloVe text, `--embeddings`),
or vectors learnt from the training texts' co-occurrences (train.embed_init: corpus)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from sklearn.utils.extmath import randomized_svd

from ..errors import HdcError, UsageError
from ..text import Segmenter, Segments


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


def cooccurrences(segments: list[Segments], vocab_size: int, window: int):
    """[vocab_size, vocab_size] scipy CSR, symmetric: how often two tokens occur within `window`
    tokens of each other in one document (padding, id 0, never counts)."""
    # Every document's tokens in order, `window` paddings between documents: no pair crosses one.
    gap = np.zeros(window, np.int64)
    stream = np.concatenate([part for s in segments for part in (s.tokens[s.tokens > 0].astype(np.int64), gap)])
    counts = csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    for offset in range(1, window + 1):
        left, right = stream[:-offset], stream[offset:]
        keep = (left > 0) & (right > 0)
        pairs = coo_matrix((np.ones(int(keep.sum())), (left[keep], right[keep])), shape=(vocab_size, vocab_size))
        counts = counts + pairs.tocsr() + pairs.T.tocsr()
    return counts


def corpus_vectors(segments: list[Segments], vocab_size: int, dim: int, window: int = 4, seed: int = 0) -> np.ndarray:
    """[vocab_size, dim] token vectors learnt from the training texts themselves, before training:
    the truncated SVD of the positive pointwise mutual information (PPMI) of tokens that occur
    within `window` tokens of each other. The recipe and its settings (context smoothing 0.75,
    singular values to the power 0.5) are Levy, Goldberg & Dagan (2015), "Improving
    distributional similarity with lessons learned from word embeddings". Tokens that share
    contexts start close together, so a word that training documents use once starts near the
    words used like it elsewhere in the corpus. Rows are scaled to nn.Embedding's initial spread;
    tokens the corpus never has keep a random row."""
    counts = cooccurrences(segments, vocab_size, window).tocoo()
    rows, cols = counts.sum(1).A1, counts.sum(0).A1
    smoothed = cols**0.75
    # log P(i, j) / (P(i) P_0.75(j)), where P_0.75(j) = c_j^0.75 / sum c^0.75: the totals cancel.
    pmi = np.log(counts.data) - np.log(rows[counts.row]) - np.log(smoothed[counts.col]) + np.log(smoothed.sum())
    keep = pmi > 0
    ppmi = coo_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=(vocab_size, vocab_size)).tocsr()
    rng = np.random.default_rng(seed)
    vectors = rng.normal(0, 1, (vocab_size, dim)).astype(np.float32)
    seen = rows > 0
    if ppmi.nnz and dim < vocab_size:
        u, s, _ = randomized_svd(ppmi, dim, n_iter=5, random_state=seed)
        learnt = u[seen] * np.sqrt(s)
        vectors[seen] = learnt / learnt.std()
    vectors[0] = 0  # padding
    return vectors


SWAP_NEIGHBOURS = 10  # train.token_swap draws a token's replacement from its 10 nearest


def neighbours(vectors: np.ndarray, counts: np.ndarray, k: int, min_count: int = 5) -> np.ndarray:
    """[V, k] int64: each token's k nearest tokens by cosine of `vectors`, among tokens seen at
    least min_count times (counts [V]: occurrences in the training texts). A token seen fewer
    times, or padding, has only itself: its vector says too little to pick company by."""
    V = len(vectors)
    table = np.repeat(np.arange(V)[:, None], k, 1)
    common = np.flatnonzero(counts >= min_count)
    common = common[common > 0]
    if len(common) <= k:
        return table
    unit = vectors[common] / np.linalg.norm(vectors[common], axis=1, keepdims=True).clip(1e-9)
    for start in range(0, len(common), 2048):  # [2048, N] similarities at a time
        rows = common[start : start + 2048]
        similarity = unit[start : start + 2048] @ unit.T
        similarity[np.arange(len(rows)), np.arange(start, start + len(rows))] = -np.inf  # not itself
        best = np.argpartition(-similarity, k, axis=1)[:, :k]
        table[rows] = common[best]
    return table


def token_counts(segments: list[Segments], vocab_size: int) -> np.ndarray:
    """[vocab_size] occurrences of each token id in the documents."""
    return np.bincount(np.concatenate([s.tokens[s.tokens > 0] for s in segments]), minlength=vocab_size)
