import json
from collections import Counter

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from hdc.text import Segmenter, ngram_bag, split_sentences, train_tokenizer

TEXT = (
    'Dr. Smith arrived in the U.S. on Monday. He said: "It\'s fine." Then he left!\n\n'
    "Café naïve — 東京 is busy 🙂. A second paragraph follows. Numbers like 3.5 stay whole."
)


@pytest.fixture(scope="module")
def tokenizer(assets):
    texts = [json.loads(line)["text"] for line in open(assets / "tiny_train.jsonl")] + [TEXT] * 5
    return train_tokenizer(texts, 400)


def make_segmenter(tokenizer, ngram_raw=False):
    return Segmenter(tokenizer, 4, 12, ngram_orders=(2, 3), ngram_buckets=1000, ngram_raw=ngram_raw)


@pytest.fixture(scope="module")
def segmenter(tokenizer):
    return make_segmenter(tokenizer)


def bucket(gram: str) -> int:
    """The documented hash: h = n, then h = h * 1000003 + code point (mod 2^64), bucket h % B."""
    h = len(gram)
    for ch in gram:
        h = (h * 1_000_003 + ord(ch)) % 2**64
    return h % 1000 + 1


def phrase_ngrams(segments) -> list[Counter]:
    return [Counter(row[row > 0].tolist()) for row in segments.ngrams]


def test_sentences_respect_abbreviations_and_paragraphs():
    spans, _ = split_sentences(TEXT)
    sentences = [TEXT[a:b] for a, b in spans]
    assert sentences[0] == "Dr. Smith arrived in the U.S. on Monday."
    assert sentences[1] == 'He said: "It\'s fine."'
    assert sentences[2] == "Then he left!"
    assert sentences[3].startswith("Café")
    assert "3.5 stay whole." in sentences[-1]


def test_token_offsets_round_trip_to_the_text(segmenter):
    segments = segmenter.segment(TEXT, offsets=True)
    real = segments.tokens > 0
    ids, spans = segments.tokens[real] - 1, segments.token_spans[real]
    # Byte-level BPE may split one character into several byte tokens: they share its span.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (a, b) in zip(ids, spans):
        groups.setdefault((int(a), int(b)), []).append(int(i))
    for (a, b), members in groups.items():
        assert segmenter.tokenizer.decode(members).strip() == TEXT[a:b]
    covered = np.zeros(len(TEXT), int)
    for a, b in groups:
        covered[a:b] += 1
    visible = np.array([not c.isspace() for c in TEXT])
    assert (covered[visible] == 1).all() and (covered[~visible] == 0).all()


def test_phrases_stay_inside_sentences_and_are_balanced(segmenter):
    segments = segmenter.segment(TEXT * 3, offsets=True)
    lengths = np.count_nonzero(segments.tokens, 1)
    assert lengths.min() >= 1 and lengths.max() <= 4
    for s in range(segments.num_sentences):
        mine = lengths[segments.phrase_sentence == s]
        assert mine.max() - mine.min() <= 1  # balanced
        assert mine.sum() <= 12  # long sentences are cut into pieces
        a, b = segments.sentence_spans[s]
        spans = segments.phrase_spans[segments.phrase_sentence == s]
        assert spans[:, 0].min() == a and spans[:, 1].max() == b


@pytest.mark.parametrize("ngram_raw", [False, True])
def test_chunked_reading_gives_the_same_segments(tokenizer, ngram_raw):
    segmenter = make_segmenter(tokenizer, ngram_raw)
    text = TEXT.replace(". ", ".  ") * 40
    whole = segmenter.segment(text, offsets=True)
    for chunk in (7, 100, 1000):
        blocks = list(segmenter.blocks([text[i : i + chunk] for i in range(0, len(text), chunk)], 64, offsets=True))
        assert len(blocks) > 1
        assert all(b.num_phrases <= 64 // 4 for b in blocks)
        assert np.array_equal(np.concatenate([b.tokens for b in blocks]), whole.tokens)
        assert np.array_equal(np.concatenate([b.token_spans for b in blocks]), whole.token_spans)
        assert np.array_equal(np.concatenate([b.sentence_spans for b in blocks]), whole.sentence_spans)
        assert sum((phrase_ngrams(b) for b in blocks), []) == phrase_ngrams(whole)
        assert [b.first_phrase for b in blocks] == list(np.cumsum([0] + [b.num_phrases for b in blocks[:-1]]))


def test_truncation_keeps_leading_tokens(segmenter):
    segments = segmenter.segment(TEXT * 10, max_tokens=50)
    assert 40 <= segments.num_tokens <= 50
    assert np.array_equal(segments.tokens, segmenter.segment(TEXT * 10).tokens[: segments.num_phrases])


def test_empty_and_whitespace_text(segmenter):
    for text in ("", "   \n\n  "):
        segments = segmenter.segment(text)
        assert segments.num_phrases == 0 and segments.num_tokens == 0
    assert list(segmenter.blocks(["", "  "], 64)) == []


def test_char_ngrams_are_scikit_learns_char_wb_hashed(segmenter):
    """Each phrase's n-grams are exactly those of scikit-learn's char_wb analyzer on its text,
    under the documented hash."""
    analyzer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)).build_analyzer()
    segments = segmenter.segment(TEXT)
    assert segments.ngrams.shape[0] == segments.num_phrases
    expected = [Counter(map(bucket, analyzer(TEXT[a:b]))) for a, b in segments.phrase_spans]
    assert phrase_ngrams(segments) == expected
    assert sum(map(len, expected)) > 50


def test_raw_char_ngrams_are_every_window_of_the_text_as_written(tokenizer):
    """With ngram_raw, a phrase's n-grams are every window of its text and the whitespace that
    follows it, case and all."""
    text = TEXT.replace(". ", ".  ")
    segments = make_segmenter(tokenizer, ngram_raw=True).segment(text)
    pieces = [text[a : len(text) - len(text[b:].lstrip())] for a, b in segments.phrase_spans]
    expected = [Counter(bucket(p[i : i + n]) for n in (2, 3) for i in range(len(p) - n + 1)) for p in pieces]
    assert phrase_ngrams(segments) == expected
    seen = set().union(*expected)
    assert {bucket("Dr"), bucket(".  "), bucket("\n\n")} <= seen and bucket("dr") not in seen


def test_word_ngrams_hash_into_their_own_rows_after_the_character_ngrams(tokenizer):
    """With word_buckets, a word n-gram's row is past the character rows, at the same bucket
    as in shared rows; the character n-grams do not move."""
    text = "The river bank flooded. A bank loan was granted."
    shared = Segmenter(tokenizer, 4, 12, ngram_orders=(2, 3), ngram_buckets=1000, word_orders=(1, 2))
    apart = Segmenter(tokenizer, 4, 12, ngram_orders=(2, 3), ngram_buckets=1000, word_orders=(1, 2), word_buckets=500)
    chars = Segmenter(tokenizer, 4, 12, ngram_orders=(2, 3), ngram_buckets=1000).segment(text).ngrams
    both, own = shared.segment(text).ngrams, apart.segment(text).ngrams
    width = chars.shape[1]
    assert np.array_equal(own[:, :width], chars) and chars.max() <= 1000
    words = own[:, width:]
    assert words[words > 0].min() > 1000 and words.max() <= 1500
    hashed = words > 0  # the same hash: bucket h of 1000 shared rows is h mod 500 of the 500 own ones
    assert np.array_equal(words[hashed] - 1001, (both[:, width:][hashed] - 1) % 500)


def test_ngram_bag_counts_each_rows_buckets():
    rng = np.random.default_rng(0)
    ngrams = rng.integers(1, 20, (3, 4, 6)) * (rng.random((3, 4, 6)) < 0.7)
    ngrams[2] = 0  # a row with no n-gram at all
    ids, counts = ngram_bag(ngrams)
    assert ids.shape == counts.shape and ids.dtype == np.int64 and counts.dtype == np.float32
    for row, (i, c) in enumerate(zip(ids, counts)):
        expected = Counter(ngrams[row][ngrams[row] > 0].tolist())
        assert dict(zip(i[c > 0].tolist(), c[c > 0].tolist())) == expected
        assert (i[c == 0] == 0).all()  # padding
    assert counts[2].sum() == 0
