"""Training batches: the encoded documents, length-bucketed batches capped by padded tokens,
collation, and the augmentations applied to a training batch (sentence and token dropout)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config
from ..schema import NGRAM_INPUTS
from ..stream import collate
from ..text import Segments, ngram_bag


class EncodedDocuments(Dataset):
    """Documents already cut into phrases, with their targets: class index or multi-hot row."""

    def __init__(self, segments: list[Segments], targets: np.ndarray):
        self.segments, self.targets = segments, targets

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int | tuple[int, ...]) -> tuple[Segments, np.ndarray]:
        """One document, or (a tuple of indices) documents of one label joined end to end."""
        if isinstance(i, int):
            return self.segments[i], self.targets[i]
        return join([self.segments[j] for j in i]), self.targets[i[0]]


def join(parts: list[Segments]) -> Segments:
    """Documents one after the other, as one: sentence indices and character spans shifted."""
    sentence_base = np.cumsum([0] + [s.num_sentences for s in parts[:-1]])
    char_base = np.cumsum([0] + [int(s.sentence_spans[-1, 1]) + 2 if s.num_sentences else 0 for s in parts[:-1]])
    ngrams = None
    if parts[0].ngrams is not None:
        G = max(s.ngrams.shape[1] for s in parts)
        ngrams = np.concatenate([np.pad(s.ngrams, ((0, 0), (0, G - s.ngrams.shape[1]))) for s in parts])
    return Segments(
        tokens=np.concatenate([s.tokens for s in parts]),
        phrase_sentence=np.concatenate([s.phrase_sentence + b for s, b in zip(parts, sentence_base)]).astype(np.int32),
        sentence_spans=np.concatenate([s.sentence_spans + c for s, c in zip(parts, char_base)]),
        phrase_spans=np.concatenate([s.phrase_spans + c for s, c in zip(parts, char_base)]),
        token_spans=None,
        ngrams=ngrams,
    )


def collate_examples(items: list[tuple[Segments, np.ndarray]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The model's block inputs plus, with the n-gram branch, each phrase's n-grams [B, P, G]:
    per phrase, so that sentence dropout removes them with their sentence (see `bag_ngrams`)."""
    documents = [s for s, _ in items]
    inputs = collate(documents)
    if documents[0].ngrams is not None:
        P, G = inputs["tokens"].shape[1], max(d.ngrams.shape[1] for d in documents)
        inputs["ngrams"] = ngrams = np.zeros((len(documents), P, G), np.int64)
        for b, d in enumerate(documents):
            ngrams[b, : d.num_phrases, : d.ngrams.shape[1]] = d.ngrams
    return {k: torch.from_numpy(v) for k, v in inputs.items()}, torch.from_numpy(np.stack([t for _, t in items]))


def bag_ngrams(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-phrase n-grams -> the documents' n-gram bags, the model's input (hdc.text.ngram_bag)."""
    if "ngrams" not in inputs:
        return inputs
    rest = {k: v for k, v in inputs.items() if k != "ngrams"}
    return rest | dict(zip(NGRAM_INPUTS, map(torch.from_numpy, ngram_bag(inputs["ngrams"].numpy()))))


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of documents of similar length, capped by padded tokens (B x P x T) rather than by
    document count. The order depends only on (seed, epoch), so a resumed run sees the same
    batches as an uninterrupted one. The epoch is read from `epoch()` (the trainer's), because
    Lightning only calls set_epoch on samplers, not on batch samplers. Under DDP each rank takes
    every world-th batch.

    Length curriculum: in epoch e < curriculum_epochs, batches are drawn only from documents of
    at most max_tokens / 2^(curriculum_epochs - e) tokens, as many batches as a full epoch has.
    Sparse retrieval is learned on short documents, where the needle is usually among the
    top-K, and then carried to long ones (a from-scratch model on long documents stayed at chance).

    Lengthening (join_tokens > 0, after the curriculum): each epoch's documents are grouped by
    `kinds` (one value per label, or label set) and joined, in shuffled order, into items of up
    to join_tokens tokens; an item is then a tuple of document indices (EncodedDocuments joins).
    """

    def __init__(
        self,
        phrases: list[int],
        tokens: list[int],
        phrase_tokens: int,
        step_tokens: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        curriculum_epochs: int = 0,
        max_tokens: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        join_tokens: int = 0,
        kinds: list | None = None,
    ):
        self.phrases, self.tokens = np.asarray(phrases), np.asarray(tokens)
        self.T, self.cap = phrase_tokens, step_tokens
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.curriculum_epochs, self.max_tokens = curriculum_epochs, max_tokens
        self.epoch = epoch
        self.join_tokens, self.kinds = join_tokens, kinds
        # Every epoch has the same number of batches: Lightning counts them once, and runs
        # validation when that count is reached.
        everything = np.arange(len(self.phrases))
        self.length = len(self._pack(everything, np.random.default_rng(seed)))

    def _pack(self, order: np.ndarray | list, rng: np.random.Generator) -> list[list]:
        """Batches of the items in `order`: document indices, or tuples of them (joined)."""
        items = [tuple(int(j) for j in item) if isinstance(item, tuple) else int(item) for item in order]
        sizes = np.array(
            [self.phrases[list(item)].sum() if isinstance(item, tuple) else self.phrases[item] for item in items]
        )
        # Sort inside pools of ~64 batches: little padding, and batches still vary between epochs.
        per_batch = max(1, self.cap // (self.T * max(1, int(self.phrases.mean()))))
        pool = 64 * per_batch
        batches: list[list] = []
        for start in range(0, len(items), pool):
            chunk = np.arange(start, min(start + pool, len(items)))
            chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
            batch: list[int] = []  # positions in `items`
            for i in chunk:
                longest = max(sizes[i], sizes[batch[-1]] if batch else 0)
                if batch and (len(batch) + 1) * longest * self.T > self.cap:
                    batches.append([items[j] for j in batch])
                    batch = []
                batch.append(i)
            if batch:
                batches.append([items[j] for j in batch])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _batches(self) -> list[list[int]]:
        epoch = self.epoch()
        rng = np.random.default_rng([self.seed, epoch])
        pool = np.arange(len(self.phrases))
        if self.shuffle and epoch < self.curriculum_epochs:
            limit = self.max_tokens >> (self.curriculum_epochs - epoch)
            short = np.flatnonzero(self.tokens <= limit)
            pool = short if len(short) else pool
        batches: list[list] = []
        while len(batches) < self.length:  # shuffled passes over the pool, cut to the epoch's length
            order = rng.permutation(pool) if self.shuffle else pool
            if self.shuffle and self.join_tokens and epoch >= self.curriculum_epochs:
                order = self._joined(order)
            batches += self._pack(order, rng)
        batches = batches[: self.length]
        if self.world > 1:
            usable = len(batches) - len(batches) % self.world or len(batches)
            batches = (batches * self.world)[:usable] if len(batches) < self.world else batches[:usable]
            batches = batches[self.rank :: self.world]
        return batches

    def _joined(self, order: np.ndarray) -> list[tuple[int, ...]]:
        """The documents in `order`, joined with the next ones of their kind up to join_tokens."""
        items: list[tuple[int, ...]] = []
        groups: dict[object, list[int]] = {}  # kind -> the open group
        for i in order:
            group = groups.setdefault(self.kinds[i], [])
            if group and self.tokens[group].sum() + self.tokens[i] > self.join_tokens:
                items.append(tuple(group))
                group.clear()
            group.append(int(i))
        return items + [tuple(group) for group in groups.values() if group]

    def __iter__(self):
        # A generator: the batches are drawn at the first next(), once Lightning has restored
        # the fit loop's progress, not when the iterator object is created.
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


def steps_per_epoch(phrases: list[int], phrase_tokens: int, step_tokens: int) -> int:
    """How many batches BucketBatchSampler makes of documents of these phrase counts."""
    return BucketBatchSampler(phrases, [0] * len(phrases), phrase_tokens, step_tokens, shuffle=False, seed=0).length


def data_epoch(trainer: L.Trainer | None) -> int:
    """The epoch about to be trained. After a resume from a checkpoint written at an epoch's end,
    trainer.current_epoch still names the finished epoch until the next one has started; the
    fit loop's count of processed epochs (what Lightning gives samplers) is already right."""
    return trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0


class DocumentData(L.LightningDataModule):
    def __init__(self, train: EncodedDocuments, valid: EncodedDocuments, config: Config):
        super().__init__()
        self.train_set, self.valid_set, self.config = train, valid, config

    def _loader(self, dataset: EncodedDocuments, shuffle: bool) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if shuffle and self.trainer else (0, 1)
        sampler = BucketBatchSampler(
            [s.num_phrases for s in dataset.segments],
            [s.num_tokens for s in dataset.segments],
            self.config.model.phrase_tokens,
            self.config.train.step_tokens,
            shuffle=shuffle,
            seed=self.config.train.seed,
            rank=rank,
            world=world,
            curriculum_epochs=self.config.train.curriculum_epochs,
            max_tokens=self.config.data.max_tokens,
            epoch=lambda: data_epoch(self.trainer),
            join_tokens=self.config.train.join_tokens,
            kinds=[t.tobytes() for t in dataset.targets],
        )
        # Its own generator: creating an iterator draws a seed, and must not move the global RNG
        # that dropout uses (else a resumed run would drift from an uninterrupted one).
        generator = torch.Generator().manual_seed(self.config.train.seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_examples, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Every rank scores the whole validation set, so all agree on the best epoch.
        return self._loader(self.valid_set, shuffle=False)


def drop_sentences(inputs: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Remove each sentence with probability p (each document keeps at least one), so the model
    cannot lean on a few sentences such as bylines and boilerplate."""
    sentence_phrases = inputs["sentence_phrases"]
    present = sentence_phrases[:, :, 0] >= 0  # [B, S]
    dropped = (torch.rand(present.shape) < p) & present
    everything = dropped.sum(-1) == present.sum(-1)
    dropped[torch.arange(len(dropped)), present.float().argmax(-1)] &= ~everything
    phrase_sentence = inputs["phrase_sentence"]
    dropped_phrase = torch.gather(dropped, 1, phrase_sentence.clamp_min(0)) & (phrase_sentence >= 0)
    kept = {
        "tokens": inputs["tokens"].masked_fill(dropped_phrase[..., None], 0),
        "phrase_sentence": phrase_sentence.masked_fill(dropped_phrase, -1),
        "sentence_phrases": sentence_phrases.masked_fill(dropped[..., None], -1),
        "selectable": inputs["selectable"] & ~dropped_phrase,
    }
    if "ngrams" in inputs:
        kept["ngrams"] = inputs["ngrams"].masked_fill(dropped_phrase[..., None], 0)
    return kept


def drop_tokens(inputs: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Blank each token with probability p (it becomes padding)."""
    return inputs | {"tokens": inputs["tokens"].masked_fill(torch.rand(inputs["tokens"].shape) < p, 0)}


def swap_tokens(inputs: dict[str, torch.Tensor], table: torch.Tensor, p: float) -> dict[str, torch.Tensor]:
    """Replace each token, with probability p, by one of its neighbours in `table` [V, k] (drawn
    uniformly): a document said in other words that the corpus uses alike."""
    tokens = inputs["tokens"]
    swap = (torch.rand(tokens.shape) < p) & (tokens > 0)
    choice = torch.randint(table.shape[1], tokens.shape)
    return inputs | {"tokens": torch.where(swap, table[tokens, choice], tokens)}
