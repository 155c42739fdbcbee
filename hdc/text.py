"""Text -> sentences -> phrases of token ids, with character offsets. No torch here.

A document is cut into sentences by a rule-based splitter, each sentence is tokenized by a
byte-level BPE tokenizer trained on the user's corpus, and each sentence's tokens are cut into
phrases of at most T tokens (balanced, so a 33-token sentence with T=32 gives 17 + 16, not
32 + 1). A phrase never crosses a sentence: it is the unit of sparse selection.

Each phrase can also carry its hashed character and word n-grams (`char_ngrams`, `word_ngrams`), the input of the
model's n-gram branch; they travel with the phrase through truncation, blocks and dropout.

Long texts arrive in chunks (`Segmenter.blocks`): the splitter only emits sentences whose end it
has seen, so the segmentation of a text does not depend on how it was chunked.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

_ABBREVIATIONS = (
    "Mr Mrs Ms Dr St Jr Sr Prof Gen Gov Sen Rep Col Lt Sgt Capt Mt Ft No vs etc Inc Ltd Co Corp "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec U.S U.K U.N a.m p.m e.g i.e"
).split()
# A sentence ends at [.!?] (plus closing quotes/brackets) before whitespace and a capital, digit
# or opening quote, unless the period ends an abbreviation or an initial; or at a blank line.
# The exceptions are fixed-width lookbehinds, so the whole search runs inside the regex engine.
_BREAK = re.compile(
    r"(?<=[.!?])"
    + "".join(rf"(?<!\b{re.escape(a)}\.)" for a in _ABBREVIATIONS)
    + r"(?<!\b[A-Z]\.)"
    + r"""(?P<close>["'\u201d\u2019)\]]*)\s+(?=["'\u201c\u2018(\[]*[A-Z0-9])"""
    + r"|\n[ \t\r\f\v]*\n\s*"
)
WORD_START = "\u0120"  # the byte-level BPE marker of a word's first token ("Ġ")
MAX_SENTENCE_CHARS = 20_000  # a longer run without a boundary is cut, at whitespace if it can be
# A document kept to its first N tokens is cut to N * CHARS_PER_TOKEN characters before it is
# tokenized (and before the tokenizer is trained on it), so a 50 MB record costs little. A BPE
# token of prose averages 4 to 5 characters, whitespace included, so the cut keeps the N tokens.
CHARS_PER_TOKEN = 16


def _cut_long(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    while end - start > MAX_SENTENCE_CHARS:
        cut = text.rfind(" ", start + MAX_SENTENCE_CHARS // 2, start + MAX_SENTENCE_CHARS)
        cut = cut if cut > start else start + MAX_SENTENCE_CHARS
        yield start, cut
        start = cut
    yield start, end


def split_sentences(text: str, final: bool = True) -> tuple[list[tuple[int, int]], int]:
    """Character spans of the sentences of `text`, whitespace trimmed.

    With final=False the text is the head of a longer stream: the spans stop at the last boundary
    seen, and the second value is where the unfinished rest begins (to be carried over).
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _BREAK.finditer(text):
        end = match.end("close")  # closing quotes stay with their sentence
        spans.extend(_cut_long(text, start, end if end >= 0 else match.start()))
        start = match.end()
    rest = len(text)
    if not final:
        # Keep the unfinished sentence for the next chunk, except the pieces already too long.
        tail = list(_cut_long(text, start, len(text)))
        spans.extend(tail[:-1])
        rest = tail[-1][0]
    else:
        spans.extend(_cut_long(text, start, len(text)))
    trimmed = []
    for a, b in spans:
        if a < b and not (text[a].isspace() or text[b - 1].isspace()):
            trimmed.append((a, b))  # the common case: breaks already consumed the whitespace
            continue
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            a += len(piece) - len(piece.lstrip())
            trimmed.append((a, a + len(stripped)))
    return trimmed, rest


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `texts`: every byte is covered, so nothing is unknown."""
    tokenizer = Tokenizer(models.BPE())
    # Splitting on whitespace first keeps whitespace out of the tokens, and the byte-level
    # step then marks each word start, so offsets always land on visible text.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.ByteLevel(add_prefix_space=True)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


@dataclass
class Segments:
    """Whole sentences cut into phrases: one short document, or one block of a long one.

    Token ids are shifted by one so that 0 is padding. Spans are character offsets into the
    whole document.
    """

    tokens: np.ndarray  # [P, T] int32, 0 = padding
    phrase_sentence: np.ndarray  # [P] int32, index into sentence_spans
    sentence_spans: np.ndarray  # [S, 2] int64
    phrase_spans: np.ndarray  # [P, 2] int64
    token_spans: np.ndarray | None  # [P, T, 2] int64, only when offsets were asked for
    ngrams: np.ndarray | None = None  # [P, G] int32 hashed char n-grams + 1, 0 = padding
    first_sentence: int = 0  # index of sentence 0 in the whole document
    first_phrase: int = 0  # index of phrase 0 in the whole document

    @property
    def num_phrases(self) -> int:
        return len(self.tokens)

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_spans)

    @property
    def num_tokens(self) -> int:
        return int(np.count_nonzero(self.tokens))

    def sentences(self, start: int, stop: int) -> Segments:
        """The sentences [start, stop) as Segments of their own."""
        first, last = np.searchsorted(self.phrase_sentence, [start, stop])
        return Segments(
            tokens=self.tokens[first:last],
            phrase_sentence=self.phrase_sentence[first:last] - start,
            sentence_spans=self.sentence_spans[start:stop],
            phrase_spans=self.phrase_spans[first:last],
            token_spans=None if self.token_spans is None else self.token_spans[first:last],
            ngrams=None if self.ngrams is None else self.ngrams[first:last],
            first_sentence=self.first_sentence + start,
            first_phrase=self.first_phrase + int(first),
        )

    def blocks(self, block_tokens: int) -> Iterator[Segments]:
        """Cut at sentence boundaries into blocks of at most block_tokens // T phrases (a longer
        sentence stays whole: sentence_tokens bounds it)."""
        block_phrases = max(1, block_tokens // self.tokens.shape[1])
        ends = np.cumsum(np.bincount(self.phrase_sentence, minlength=self.num_sentences))
        start = 0
        while start < self.num_sentences:
            done = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, done + block_phrases, "right")))
            yield self.sentences(start, stop)
            start = stop


class Segmenter:
    """Cuts text into Segments with a trained tokenizer."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        phrase_tokens: int,
        sentence_tokens: int,
        ngram_orders: tuple[int, ...] = (),
        ngram_buckets: int = 0,
        ngram_raw: bool = False,
        word_orders: tuple[int, ...] = (),
        word_buckets: int = 0,
    ):
        """word_buckets: word n-grams hash into that many buckets of their own, after the
        character n-grams' ngram_buckets (0: into those, shared)."""
        self.tokenizer = tokenizer
        self.phrase_tokens = phrase_tokens
        self.sentence_tokens = sentence_tokens
        self.ngram_orders, self.ngram_buckets, self.ngram_raw = tuple(ngram_orders), ngram_buckets, ngram_raw
        self.word_orders, self.word_buckets = tuple(word_orders), word_buckets

    @property
    def ngrams(self) -> bool:
        """Whether phrases carry hashed n-grams (of characters, of words, or both)."""
        return bool(self.ngram_orders or self.word_orders)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size() + 1  # + padding

    def segment(self, text: str, offsets: bool = False, max_tokens: int | None = None) -> Segments:
        """One whole document. With max_tokens, only its first max_tokens tokens are kept."""
        if max_tokens is not None:
            text = text[: max_tokens * CHARS_PER_TOKEN]  # no need to tokenize what will be cut off
        spans, _ = split_sentences(text)
        segments = self._segment(text, spans, 0, offsets)
        if max_tokens is not None and segments.num_tokens > max_tokens:
            segments = _truncate(segments, max_tokens)
        return segments

    def blocks(self, chunks: Iterable[str], block_tokens: int, offsets: bool = False) -> Iterator[Segments]:
        """Segments of at most ~block_tokens tokens each, cut at sentence boundaries, from a
        text that arrives in chunks. Only one chunk and its carried-over tail are held at once."""
        carry, carry_start = "", 0  # the unfinished text and its offset in the document
        next_sentence = next_phrase = 0
        chunks = iter(chunks)
        chunk = next(chunks, None)
        while chunk is not None:
            following = next(chunks, None)
            text = carry + chunk
            spans, rest = split_sentences(text, final=following is None)
            segments = self._segment(text, spans, carry_start, offsets)
            segments.first_sentence, segments.first_phrase = next_sentence, next_phrase
            next_sentence += segments.num_sentences
            next_phrase += segments.num_phrases
            yield from segments.blocks(block_tokens)
            carry, carry_start = text[rest:], carry_start + rest
            chunk = following

    def _segment(self, text: str, spans: list[tuple[int, int]], base: int, offsets: bool) -> Segments:
        T, cap = self.phrase_tokens, self.sentence_tokens
        encodings = self.tokenizer.encode_batch([text[a:b] for a, b in spans], add_special_tokens=False)
        counts = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        n = int(counts.sum())
        if n == 0:
            return Segments(
                tokens=np.zeros((0, T), np.int32),
                phrase_sentence=np.zeros(0, np.int32),
                sentence_spans=np.zeros((0, 2), np.int64),
                phrase_spans=np.zeros((0, 2), np.int64),
                token_spans=np.zeros((0, T, 2), np.int64) if offsets else None,
                ngrams=np.zeros((0, 1), np.int32) if self.ngrams else None,
            )
        ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int32, n)
        token_spans = np.fromiter(
            itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets) for e in encodings),
            np.int64,
            2 * n,
        ).reshape(n, 2)
        span_starts = np.asarray([a for a, _ in spans], np.int64)
        token_spans += (span_starts + base).repeat(counts)[:, None]
        # A lone word-start marker (a word whose first merge is not in the vocabulary) gets an
        # empty span at the word's start, so no character belongs to two tokens.
        marker = self.tokenizer.token_to_id(WORD_START)
        if marker is not None:
            token_spans[ids == marker, 1] = token_spans[ids == marker, 0]

        # Sentences longer than `cap` tokens are cut into pieces that count as sentences.
        sentence = np.arange(len(counts)).repeat(counts)
        position = np.arange(n) - (np.cumsum(counts) - counts).repeat(counts)
        piece = sentence * (n + 1) + position // cap
        new_sentence = np.empty(n, bool)
        new_sentence[0] = True
        new_sentence[1:] = piece[1:] != piece[:-1]
        sentence = np.cumsum(new_sentence) - 1
        counts = np.bincount(sentence)
        position = np.arange(n) - (np.cumsum(counts) - counts).repeat(counts)

        # Balanced phrases: a sentence of n tokens gives p = ceil(n / T) phrases, and token i
        # goes to phrase floor(i * p / n), so phrases differ in length by at most one.
        phrases = -(-counts // T)
        n_tok, n_phr = counts[sentence], phrases[sentence]
        in_sentence = position * n_phr // n_tok
        phrase = (np.cumsum(phrases) - phrases)[sentence] + in_sentence
        column = position - (in_sentence * n_tok + n_phr - 1) // n_phr

        P = int(phrases.sum())
        tokens = np.zeros((P, T), np.int32)
        tokens[phrase, column] = ids + 1
        last = np.cumsum(counts) - 1
        sentence_spans = np.stack([token_spans[last - counts + 1, 0], token_spans[last, 1]], 1)
        phrase_first = np.flatnonzero(column == 0)
        phrase_last = np.r_[phrase_first[1:], n] - 1
        phrase_spans = np.stack([token_spans[phrase_first, 0], token_spans[phrase_last, 1]], 1)
        full_spans = None
        if offsets:
            full_spans = np.zeros((P, T, 2), np.int64)
            full_spans[phrase, column] = token_spans
        ngrams = None
        if self.ngrams:
            parts = []
            if self.ngram_orders:
                parts.append(
                    char_ngrams(text, phrase_spans - base, self.ngram_orders, self.ngram_buckets, self.ngram_raw)
                )
            if self.word_orders:
                own = (self.word_buckets, self.ngram_buckets) if self.word_buckets else (self.ngram_buckets, 0)
                parts.append(word_ngrams(text, phrase_spans - base, self.word_orders, *own))
            ngrams = _side_by_side(parts)
        return Segments(
            tokens=tokens,
            phrase_sentence=np.arange(len(counts), dtype=np.int32).repeat(phrases),
            sentence_spans=sentence_spans,
            phrase_spans=phrase_spans,
            token_spans=full_spans,
            ngrams=ngrams,
        )


def _truncate(segments: Segments, max_tokens: int) -> Segments:
    """Keep the leading phrases that hold at most max_tokens tokens (at least one phrase)."""
    keep = max(1, int(np.searchsorted(np.cumsum(np.count_nonzero(segments.tokens, 1)), max_tokens, "right")))
    stop = int(segments.phrase_sentence[keep - 1]) + 1
    cut = segments.sentences(0, stop)
    cut.tokens, cut.phrase_sentence = cut.tokens[:keep], cut.phrase_sentence[:keep]
    cut.phrase_spans = cut.phrase_spans[:keep]
    if cut.ngrams is not None:
        cut.ngrams = cut.ngrams[:keep]
    if cut.token_spans is not None:
        cut.token_spans = cut.token_spans[:keep]
    return cut


_SPACES = str.maketrans("\t\n\r\v\f\x85\xa0", "       ")
_WHITESPACE = re.compile(r"\s*")


def char_ngrams(text: str, spans: np.ndarray, orders: Iterable[int], buckets: int, raw: bool = False) -> np.ndarray:
    """[P, G] int32: the hashed character n-grams of each span of `text` (bucket + 1; 0 pads).

    By default like scikit-learn's char_wb analyzer: lower-cased, and an n-gram never crosses a
    word boundary, though it may start or end with the space that pads each word. With raw=True,
    the text as written: case and whitespace kept, each span extended over the whitespace that
    follows it, and an n-gram may cross words but not spans. (On NewsArticles the outlets differ
    in capitalisation and in the spaces after a sentence, which char_wb folds away.) The hash is
    a fixed polynomial over code points, so it is the same in every process and on every machine."""
    if raw:
        pieces = [text[a : _WHITESPACE.match(text, b).end()] for a, b in spans]
        joined, pad = "".join(pieces), 0
    else:
        pieces = [text[a:b].lower().translate(_SPACES) for a, b in spans]
        # " piece0 piece1 ... " : every piece is padded by the spaces around it
        joined, pad = " " + " ".join(pieces) + " ", 1
    P = len(pieces)
    lengths = np.fromiter(map(len, pieces), np.int64, P)
    code = np.frombuffer(joined.encode("utf-32-le"), np.uint32).astype(np.uint64)
    space = code == 32
    owner = np.concatenate([np.zeros(pad, np.int64), np.arange(P).repeat(lengths + pad)])  # the piece of each position
    # The hash of the n-gram at s is n * K^n + sum_j code[s + j] K^(n - 1 - j), K = 1,000,003,
    # wrapping modulo 2^64 (deterministic). Its sum part grows one order from the last.
    K = 1_000_003
    rolling, done = np.zeros(len(code), np.uint64), 0
    runs = []  # per order: the bucket ids and their pieces, which are sorted
    for n in sorted(set(orders)):
        L = len(code) - n + 1
        if L <= 0 or P == 0:
            break
        for j in range(done, n):
            rolling = rolling[: len(code) - j] * np.uint64(K) + code[j:]
        done = n
        if raw:
            start = np.flatnonzero(owner[:L] == owner[n - 1 : n - 1 + L])
            first = owner[start]
        else:
            interior = np.zeros(L, bool)
            for j in range(1, n - 1):
                interior |= space[j : j + L]
            valid = ~interior
            if n <= 2:  # longer n-grams have a letter inside; these must not be all space
                valid &= ~(space[:L] & space[n - 1 : n - 1 + L])
            start = np.flatnonzero(valid)
            # an n-gram belongs to the piece of its first letter (its leading space may be shared)
            first = owner[start + space[start]]
        seed = np.uint64(n * pow(K, n, 1 << 64) % (1 << 64))  # n K^n
        ids = ((rolling[start] + seed) % np.uint64(buckets)).astype(np.int32) + 1
        runs.append((ids, first, np.bincount(first, minlength=P)))
    if not runs:
        return np.zeros((P, 1), np.int32)
    # Row p holds piece p's n-grams, order by order: each order's are one run of its sorted array.
    out = np.zeros((P, max(1, int(sum(counts for _, _, counts in runs).max()))), np.int32)
    filled = np.zeros(P, np.int64)
    for ids, first, counts in runs:
        column = filled[first] + np.arange(len(ids)) - (np.cumsum(counts) - counts)[first]
        out[first, column] = ids
        filled += counts
    return out


_WORD = re.compile(r"\w\w+")  # scikit-learn's default token pattern: words of two or more letters


def word_ngrams(text: str, spans: np.ndarray, orders: Iterable[int], buckets: int, offset: int = 0) -> np.ndarray:
    """[P, G] int32: the hashed word n-grams of each span of `text` (offset + bucket + 1; 0 pads), as
    scikit-learn's word analyzer makes them: lower-cased words of two or more letters, n-grams of
    consecutive words inside the span. The hash is CRC-32 of the n-gram's words, with its order in
    front (so that no word n-gram hashes as a character n-gram's text would), the same everywhere."""
    rows = []
    for a, b in spans:
        words = _WORD.findall(text, a, b)
        words = [w.lower() for w in words]
        rows.append(
            [
                zlib.crc32(f"\x00{n}\x00{' '.join(words[i : i + n])}".encode()) % buckets + 1 + offset
                for n in orders
                for i in range(len(words) - n + 1)
            ]
        )
    out = np.zeros((len(rows), max([1] + [len(r) for r in rows])), np.int32)
    for p, row in enumerate(rows):
        out[p, : len(row)] = row
    return out


def _side_by_side(parts: list[np.ndarray]) -> np.ndarray:
    """Each phrase's n-grams of every kind in one row: [P, G1] and [P, G2] -> [P, G1 + G2]."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def ngram_bag(ngrams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The n-gram branch's input from hashed n-grams [B, ...] (0 = padding): each row's distinct
    buckets, ids [B, U] int64, and how often each occurs, counts [B, U] float32 (padding: 0, 0)."""
    flat = ngrams.reshape(len(ngrams), -1).astype(np.int64)
    rows, columns = np.nonzero(flat)
    base = int(flat.max(initial=0)) + 1
    keys, counts = np.unique(rows * base + flat[rows, columns], return_counts=True)
    row, ids = np.divmod(keys, base)
    per_row = np.bincount(row, minlength=len(flat))
    column = np.arange(len(keys)) - (np.cumsum(per_row) - per_row)[row]
    out_ids = np.zeros((len(flat), max(1, int(per_row.max(initial=0)))), np.int64)
    out_counts = np.zeros(out_ids.shape, np.float32)
    out_ids[row, column], out_counts[row, column] = ids, counts
    return out_ids, out_counts
