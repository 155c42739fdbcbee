"""Word vectors (fastText .vec or GloVe text) as the initial token embeddings: `--embeddings`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import HdcError, UsageError
from ..text import Segmenter


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
