import json
import threading

import numpy as np
import pytest
import torch

from hdc.checkpoint import TorchBackend
from hdc.config import ModelConfig
from hdc.model import HierarchicalClassifier
from hdc.schema import NEG, NGRAM_INPUTS
from hdc.stream import DocumentState, collate, first_occurrences, read_ahead, run_document
from hdc.text import Segmenter, Segments, ngram_bag, train_tokenizer


@pytest.fixture(scope="module")
def texts(assets):
    return [json.loads(line)["text"] for line in open(assets / "tiny_train.jsonl")]


@pytest.fixture(scope="module", params=[(0, 0), (6, 0), (6, 1)], ids=["dense-all", "dense-top-6", "retrieved-layer"])
def setup(texts, request):
    """A model whose dense path reads every sentence, one that reads its 6 best
    (model.dense_sentences), and one whose selected phrases read each other
    (model.retrieved_layers): the stream's merge of each must equal one shot."""
    dense_sentences, retrieved_layers = request.param
    segmenter = Segmenter(
        train_tokenizer(texts, 400), phrase_tokens=8, sentence_tokens=32, ngram_orders=(2, 3), ngram_buckets=512
    )
    config = ModelConfig(
        vocab_size=segmenter.vocab_size,
        d_model=32,
        heads=2,
        phrase_tokens=8,
        sentence_tokens=32,
        queries=3,
        top_k=5,
        ngram_orders=(2, 3),
        ngram_word_orders=(),  # as the segmenter cuts them
        ngram_buckets=512,
        ngram_dim=8,
        dense_sentences=dense_sentences,
        retrieved_layers=retrieved_layers,
    )
    torch.manual_seed(0)
    model = HierarchicalClassifier(config, num_classes=4).eval()
    model.ngram_idf[1:] = torch.rand(512) + 1  # non-uniform weights, as after training
    return segmenter, model


def one_shot(model, segments: Segments) -> np.ndarray:
    with torch.inference_mode():
        inputs = collate([segments]) | dict(zip(NGRAM_INPUTS, ngram_bag(segments.ngrams[None])))
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()[0]


def streamed(model, segmenter, text: str, block_tokens: int, chunk: int = 500) -> tuple[np.ndarray, DocumentState]:
    backend = TorchBackend(model)
    blocks = segmenter.blocks([text[i : i + chunk] for i in range(0, len(text), chunk)], block_tokens)
    state = run_document(
        backend, blocks, DocumentState(model.config.top_k, dense_sentences=model.config.dense_sentences)
    )
    logits, _ = backend.classify(state.head_inputs())
    return logits[0], state


@pytest.mark.parametrize("block_tokens", [64, 200, 1000])
def test_streamed_equals_one_shot(setup, texts, block_tokens):
    segmenter, model = setup
    text = "\n\n".join(texts[:60])  # ~5K tokens, with many repeated sentences (templates)
    whole = segmenter.segment(text)
    expected = one_shot(model, whole)
    got, state = streamed(model, segmenter, text, block_tokens)
    assert state.tokens == whole.num_tokens and state.phrases == whole.num_phrases
    assert whole.num_tokens > 4 * block_tokens or block_tokens == 1000
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_fewer_phrases_than_k(setup):
    segmenter, model = setup
    text = "The City won the match."
    segments = segmenter.segment(text)
    assert segments.num_phrases < model.config.top_k
    got, state = streamed(model, segmenter, text, 64)
    assert np.isfinite(got).all()
    assert (state.top_phrases >= 0).sum(1).max() == segments.num_phrases
    np.testing.assert_allclose(got, one_shot(model, segments), atol=1e-5, rtol=0)


class FakeBackend:
    """Scores chosen by the test, to check the top-K merge against a brute-force ranking."""

    reads_ahead = True

    def __init__(self, scores: np.ndarray, top_k: int):
        self.scores, self.top_k, self.offset = scores, top_k, 0

    def encode(self, inputs):
        P = inputs["tokens"].shape[1]
        scores = np.where(inputs["selectable"][0], self.scores[:, self.offset : self.offset + P], NEG)[None]
        self.offset += P
        k = min(self.top_k, P)
        ranked = np.argsort(-scores, axis=-1, kind="stable")  # ties: lower index first
        order = ranked[..., :k]
        top = np.take_along_axis(scores, order, -1)
        spare = (
            np.take_along_axis(scores, ranked[..., k : k + 1], -1)[..., 0] if P > k else np.full(scores.shape[:2], NEG)
        )
        states = np.repeat(order[..., None].astype(np.float32), 2, -1)
        return {
            "dense_max": np.zeros(1),
            "dense_sum": np.ones(1),
            "dense_acc": np.zeros((1, 2)),
            "top_scores": top,
            "top_phrases": order,
            "top_states": states,
            "spare_scores": spare,
            "sentence_scores": np.zeros((1, P), np.float32),
        }


def block(first: int, n: int) -> Segments:
    tokens = np.arange(first + 1, first + n + 1, dtype=np.int32)[:, None].repeat(2, 1)  # distinct phrases
    return Segments(
        tokens=tokens,
        phrase_sentence=np.arange(n, dtype=np.int32),
        sentence_spans=np.zeros((n, 2), np.int64),
        phrase_spans=np.zeros((n, 2), np.int64),
        token_spans=None,
        first_sentence=first,
        first_phrase=first,
    )


def test_top_k_merge_is_exact_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (2, 23)).astype(np.float32)  # many ties
    K = 5
    backend = FakeBackend(scores, K)
    blocks = [block(0, 7), block(7, 1), block(8, 9), block(17, 6)]
    state = run_document(backend, blocks, DocumentState(K), ahead=True)  # the merge must not depend on it
    for m in range(2):
        ranking = sorted(range(23), key=lambda i: (-scores[m, i], i))
        expected = ranking[:K]
        assert state.top_phrases[m].tolist() == expected
        assert state.top_scores[m].tolist() == scores[m, expected].tolist()
        # the best score left out, which the K-th phrase's fusion weight is measured against
        assert state.spare_scores[m] == scores[m, ranking[K]]
        assert state.top_sentences[m, :, 0].tolist() == expected  # each phrase is its own sentence here


def test_repeated_phrases_take_one_slot():
    tokens = np.array([[5, 6], [7, 8], [5, 6], [9, 9], [7, 8]], np.int32)
    assert first_occurrences(tokens).tolist() == [True, True, False, True, False]


def test_empty_and_padding_blocks_give_no_nan(setup):
    segmenter, model = setup
    empty = segmenter.segment("")
    short = segmenter.segment("The City won the match. Rain is expected.")
    backend = TorchBackend(model)
    outputs = backend.encode(collate([empty, short]))
    assert all(np.isfinite(v).all() for v in outputs.values())
    assert outputs["dense_sum"][0] == 0 and (outputs["dense_acc"][0] == 0).all()
    state = DocumentState(top_k=model.config.top_k, dense_sentences=model.config.dense_sentences)
    state.merge(empty, outputs, 0)
    state.merge(short, outputs, 1)
    logits, fusion = backend.classify(state.head_inputs())
    assert np.isfinite(logits).all() and np.isfinite(fusion).all()


def test_million_token_document_through_predict(tiny_run, tmp_path):
    """A 1M-token file goes through `hdc predict`, streamed in blocks (no timing asserted)."""
    from conftest import ASSETS, jsonl, run_cli

    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_train.jsonl")]
    path = tmp_path / "long.txt"
    with open(path, "w") as f:
        written = 0
        while written < 5_200_000:  # ~1.05M tokens of the tiny tokenizer
            for t in texts:
                f.write(t + "\n\n")
                written += len(t) + 2
    result = run_cli("predict", tiny_run, path, "--block-tokens", "65536")
    assert result.exit_code == 0, result.output
    [record] = jsonl(result.stdout)
    assert record["label"] in ("cooking", "sport", "weather")
    assert "tokens/s" in result.stderr  # progress for a long document
    final = [line for line in result.stderr.splitlines() if "tokens/s" in line][-1]
    assert int(final.split(": ")[1].split(" tokens")[0].replace(",", "")) >= 1_000_000


def test_read_ahead_keeps_order_and_raises_the_source_error_in_its_place():
    def source():
        yield from range(5)
        raise ValueError("bad input 5")

    got = []
    with pytest.raises(ValueError, match="bad input 5"):
        for item in read_ahead(source(), cost=lambda x: 1, budget=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]


def test_read_ahead_stops_within_its_budget_when_closed():
    """An endless source read 3 items ahead at most: closed after its first item, the reader
    stops having produced a handful, not without end."""
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    items = read_ahead(endless(), cost=lambda x: 1, budget=3)
    assert next(items) == 0
    items.close()
    for thread in threading.enumerate():
        if thread.name == "hdc-read-ahead":
            thread.join(timeout=60)  # a safety net: the assert below is on counts, not on time
            assert not thread.is_alive()
    # the first item, 3 waiting, one in the reader's hands when it stopped
    assert len(produced) <= 1 + 3 + 1
