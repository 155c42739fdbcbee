"""Training batches: capped by padded tokens, the length curriculum, sentence dropout."""

import json

import numpy as np
import torch
from conftest import ASSETS


def test_batches_are_capped_and_follow_the_curriculum():

    from hdc.train.batches import BucketBatchSampler

    rng = np.random.default_rng(0)
    phrases = rng.integers(1, 100, 400)
    tokens = phrases * 20
    lengths = set()
    for epoch in range(5):
        sampler = BucketBatchSampler(
            list(phrases), list(tokens), 8, 4096, True, 1, curriculum_epochs=2, max_tokens=2000, epoch=lambda e=epoch: e
        )
        batches = list(sampler)
        lengths.add(len(batches))
        assert all(len(b) * max(phrases[b]) * 8 <= 4096 or len(b) == 1 for b in batches)  # the token cap
        longest = max(tokens[i] for b in batches for i in b)
        assert longest <= {0: 500, 1: 1000}.get(epoch, 2000)  # epoch 0: <= 1/4 of max_tokens, epoch 1: 1/2
    assert len(lengths) == 1  # Lightning counts the batches once

    ranks = [list(BucketBatchSampler(list(phrases), list(tokens), 8, 4096, True, 1, rank=r, world=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}


def test_sentence_dropout_keeps_inputs_consistent():

    from hdc.stream import collate
    from hdc.text import Segmenter, train_tokenizer
    from hdc.train.batches import drop_sentences

    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_train.jsonl")]
    segmenter = Segmenter(train_tokenizer(texts, 300), 8, 32)
    inputs = {k: torch.from_numpy(v) for k, v in collate([segmenter.segment(t) for t in texts[:8]]).items()}
    torch.manual_seed(0)
    dropped = drop_sentences(inputs, 0.5)
    present = dropped["sentence_phrases"][:, :, 0] >= 0
    assert present.any(-1).all()  # every document keeps a sentence
    assert present.sum() < (inputs["sentence_phrases"][:, :, 0] >= 0).sum()
    gone = dropped["phrase_sentence"] < 0
    assert (dropped["tokens"][gone] == 0).all() and not dropped["selectable"][gone].any()
    kept = dropped["sentence_phrases"][dropped["sentence_phrases"] >= 0]
    assert (
        dropped["phrase_sentence"]
        .gather(1, dropped["sentence_phrases"].clamp_min(0).flatten(1))
        .view_as(dropped["sentence_phrases"])[dropped["sentence_phrases"] >= 0]
        >= 0
    ).all() and len(kept)


def test_joined_items_hold_one_label_each_within_join_tokens_and_every_document_once():

    from hdc.train.batches import BucketBatchSampler

    rng = np.random.default_rng(0)
    phrases = rng.integers(1, 40, 300)
    tokens = phrases * 20
    kinds = [bytes([k]) for k in rng.integers(0, 3, 300)]

    def sampler(epoch: int) -> BucketBatchSampler:
        return BucketBatchSampler(
            list(phrases), list(tokens), 8, 100_000, True, 1, curriculum_epochs=1, max_tokens=800,
            epoch=lambda: epoch, join_tokens=3000, kinds=kinds,
        )  # fmt: skip

    after = sampler(1)
    items = [item for batch in after._pack(after._joined(np.arange(300)), np.random.default_rng(0)) for item in batch]
    assert any(len(item) > 1 for item in items)
    assert sorted(i for item in items for i in item) == list(range(300))  # each document once
    assert all(len({kinds[i] for i in item}) == 1 for item in items)
    assert all(tokens[list(item)].sum() <= 3000 or len(item) == 1 for item in items)
    assert any(isinstance(i, tuple) for batch in after for i in batch)  # an epoch after the curriculum joins
    early = sampler(0)  # during the curriculum nothing is joined
    assert all(isinstance(i, int) for batch in early for i in batch)


def test_joined_segments_keep_every_phrase_and_shift_sentence_indices():

    from hdc.stream import collate
    from hdc.text import Segmenter, train_tokenizer
    from hdc.train.batches import join

    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_train.jsonl")]
    segmenter = Segmenter(train_tokenizer(texts, 300), 8, 32)
    a, b = segmenter.segment(texts[0]), segmenter.segment(texts[1])
    joined = join([a, b])
    assert joined.num_phrases == a.num_phrases + b.num_phrases
    assert joined.num_sentences == a.num_sentences + b.num_sentences
    assert (joined.phrase_sentence[a.num_phrases :] == b.phrase_sentence + a.num_sentences).all()
    assert (np.diff(joined.sentence_spans[:, 0]) > 0).all()  # spans still in order
    inputs = collate([joined])
    assert (inputs["sentence_phrases"][0, :, 0] >= 0).sum() == joined.num_sentences
