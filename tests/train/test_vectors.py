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


def test_neighbours_are_the_nearest_common_tokens_and_rare_ones_keep_themselves():
    from hdc.train.vectors import neighbours

    vectors = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [1, 0.01]], np.float32)
    counts = np.array([0, 9, 9, 9, 9, 1])  # token 5 is rare: neither swapped nor swapped in
    table = neighbours(vectors, counts, k=1)
    assert table[:, 0].tolist() == [0, 2, 1, 4, 3, 5]


def test_swap_tokens_replaces_about_p_of_the_tokens_with_a_neighbour_and_never_padding():
    import torch

    from hdc.train.batches import swap_tokens

    torch.manual_seed(0)
    table = torch.tensor([[0, 0], [7, 8], [7, 8], [7, 8], [7, 8], [7, 8], [7, 8], [7, 7], [8, 8]])
    tokens = torch.randint(1, 7, (64, 32))
    tokens[:, 24:] = 0
    swapped = swap_tokens({"tokens": tokens, "other": tokens}, table, 0.25)["tokens"]
    changed = swapped != tokens
    assert not changed[:, 24:].any() and set(swapped[changed].tolist()) == {7, 8}
    assert 0.2 < changed[:, :24].float().mean() < 0.3
