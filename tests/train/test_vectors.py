"""Initial token embeddings learnt from the training texts (train.embed_init: corpus)."""

import numpy as np


def _segments(sentences: list[list[int]]):
    from hdc.text import Segments

    empty = np.zeros((0, 2), np.int64)
    return [Segments(np.array([s], np.int32), np.zeros(1, np.int32), empty, empty, None) for s in sentences]


def test_corpus_vectors_put_tokens_that_share_contexts_close_together():
    """Tokens 1 and 2 appear in the same contexts (3 4 _ 5 6), token 7 in others (8 9 _ 10 11):
    1 ends nearer to 2 than to 7. Token 12 never occurs and padding stays zero."""
    from hdc.train.vectors import corpus_vectors

    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(200):
        middle = int(rng.choice([1, 2]))
        sentences.append([3, 4, middle, 5, 6])
        sentences.append([8, 9, 7, 10, 11])
    vectors = corpus_vectors(_segments(sentences), vocab_size=13, dim=4, window=2)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
    assert unit[1] @ unit[2] > 0.9 and unit[1] @ unit[2] > unit[1] @ unit[7] + 0.5
    assert not vectors[0].any() and vectors[12].any()  # padding zero; an unseen token keeps a random row
    assert abs(vectors[1:12].std() - 1.0) < 0.5  # about nn.Embedding's initial spread


def test_cooccurrences_count_pairs_within_the_window_and_never_across_documents():
    from hdc.train.vectors import cooccurrences

    counts = cooccurrences(_segments([[1, 2, 3], [4, 1]]), vocab_size=5, window=1).toarray()
    expected = np.zeros((5, 5))
    for a, b in [(1, 2), (2, 3), (4, 1)]:
        expected[a, b] += 1
        expected[b, a] += 1
    assert (counts == expected).all()  # 3 and 4 meet only across the two documents: no count
    assert cooccurrences(_segments([[1, 2, 3]]), vocab_size=5, window=2).toarray()[1, 3] == 1
