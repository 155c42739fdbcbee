"""The hierarchical document classifier, in data-flow order: word -> phrase -> sentence -> document.

    tokens ──▶ word level: an encoder inside each phrase, with a CLS slot at its end (its last
               layer runs in full only on the phrases the sparse path selects)
           ──▶ phrase level: attention pooling of the phrases of each sentence
           ──▶ document level, two paths:
                 dense:  attention pooling over the N sentences it scores highest
                         (model.dense_sentences; 0: all, kept as online-softmax statistics)
                 sparse: HSA; K phrases per learned query, chosen by their CLS landmarks,
                         then token attention inside each chosen phrase (with
                         model.retrieved_layers, the chosen phrases then read each other)
           ──▶ head: a bypassing residual, doc = dense + MLP(norm(dense + sparse)), then logits
    ngrams ──▶ optional n-gram branch: the document's hashed char n-gram counts, weighted by
               TF-IDF and L2-normalised (as a TF-IDF SVM sees them), times an embedding table,
               concatenated to the document vector before the logits; optionally also times a
               linear classifier's table, fitted after training, whose scores add to the logits

`encode` reads one block of phrases and returns a state whose parts merge exactly across blocks
(hdc/stream.py): a running top-K per query, online-softmax sums. `classify` turns a (merged)
state and the document's n-gram counts (hdc.text.ngram_bag, summed over blocks) into logits.
`forward` is both at once, for training and short documents.

Shape legend:
    B documents    P phrases    T tokens per phrase    S sentences    D width    H heads
    M retrieval queries    K selected phrases per query    R phrases run in full    C classes
    U distinct n-gram buckets of a document    E n-gram width    N sentences the dense path pools
    G n-gram table rows (ModelConfig.ngram_rows)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .schema import NEG

# Below this lead over the best phrase left out, the K-th selected phrase's fusion weight fades to
# zero (inference only): the output stays continuous where the top-K flips, so two runtimes whose
# scores differ by rounding (~1e-6) agree even on a near-tie. On the news validation split, 1.3%
# of the K-th phrases lead the next one by less than this (the median lead is 6e-3).
TIE_MARGIN = 1e-4


# An n-gram's term frequency is 1 + log_tf * ln(count): "sublinear" TF or "binary" (1 if present).
# With raw counts a few frequent n-grams swamp the rest (a TF-IDF SVM on news validation, 0.88
# macro-F1 with raw counts, 0.94 sublinear).
LOG_TF = {"sublinear": 1.0, "binary": 0.0}


def ngram_weights(
    ids: Tensor,
    counts: Tensor,
    idf: Tensor,
    log_tf: float | Tensor = 1.0,
    word_weight: float | Tensor = 1.0,
    words_from: int = 0,
) -> Tensor:
    """[B, U] the weight of each n-gram bucket of a bag: TF (see LOG_TF) times IDF, L2-normalised
    per document, as a TF-IDF SVM weighs its features. With words_from (ModelConfig.ngram_words_from),
    the word n-grams' buckets, from that row on, weigh word_weight times as much before the norm."""
    present = (counts > 0).float()
    tf_idf = (1 + log_tf * torch.log(counts.clamp_min(1))) * present * idf[ids]
    if words_from:
        tf_idf = tf_idf * (1 + (word_weight - 1) * (ids >= words_from).float())
    return tf_idf / tf_idf.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax over the entries where `mask` is True. A row with no True entry gives zeros."""
    weights = torch.softmax(scores.masked_fill(~mask, NEG), dim)
    return weights * mask


def dense_statistics(scores: Tensor, states: Tensor) -> dict[str, Tensor]:
    """Online-softmax statistics of attention pooling over sentence scores [B, S] (NEG: none)
    and states [B, S, D]: what blocks merge exactly, and classify turns into the dense vector."""
    top = scores.max(-1).values  # [B]
    e = torch.exp(scores - top[:, None]) * (scores > NEG / 2)
    return {"dense_max": top, "dense_sum": e.sum(-1), "dense_acc": torch.einsum("bs,bsd->bd", e, states)}


@dataclass
class Attention:
    """The weights of every level, for one-shot forward(..., return_attention=True)."""

    word: Tensor  # [B, P, T] CLS -> token weight inside each phrase; sums to 1 per phrase
    phrase: Tensor  # [B, P] weight of each phrase inside its sentence; sums to 1 per sentence
    sentence: Tensor  # [B, S] dense weight of each sentence; sums to 1 per document
    chunk_scores: Tensor  # [B, M, P] retrieval score of every phrase, per query
    selected: Tensor  # [B, M, k] indices of the selected phrases, best first
    fusion: Tensor  # [B, M, k] weight of each selected phrase in its query's output


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer. Its attention is one fused call (scaled_dot_product_attention,
    exported as ONNX Attention from opset 23).

    `forward` runs every position. The word level's last layer runs in two steps instead, since
    only two things are read out of it: the CLS slot of every phrase, and the token states of the
    few phrases the sparse path selects. `last_position` gives the CLS slot; `rows` then runs the
    whole layer for the selected sequences only."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float, export: bool = False):
        super().__init__()
        self.heads, self.export = heads, export
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [N, L, D], mask [N, L] (True: a real position; every row needs one)."""
        q, k, v = self._heads(self.qkv(self.norm1(x)), 3)
        return self._finish(x, q, k, v, mask)

    def last_position(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The output at the last position [N, D], that position's attention over all positions
        [N, H, L] (heads kept apart), and the normalised input [N, L, D], which `rows` needs.

        No key or value is projected. A score is q . (W_k h + b_k), and q . b_k is the same at
        every position, so softmax sees only (W_k^T q) . h; the weighted sum of the values is
        W_v (sum of w h) + b_v, since the weights sum to 1. That is 2 H D multiplications a
        position instead of the 2 D^2 of projecting its key and value."""
        N, L, D = x.shape
        H = self.heads
        h = self.norm1(x)
        w_q, w_k, w_v = self.qkv.weight.view(3, H, D // H, D).unbind(0)  # [H, D / H, D] each
        b_q, _, b_v = self.qkv.bias.view(3, H, D // H).unbind(0)  # [H, D / H] each
        q = torch.einsum("nd,hed->nhe", h[:, -1], w_q) + b_q  # [N, H, D / H]
        query = torch.einsum("nhe,hed->nhd", q, w_k) / math.sqrt(D // H)  # [N, H, D]
        weights = masked_softmax(query @ h.transpose(1, 2), mask[:, None, :])  # [N, H, L]
        mixed = torch.einsum("nhd,hed->nhe", weights @ h, w_v) + b_v  # [N, H, D / H]
        x = x[:, -1] + self.drop(self.out(mixed.reshape(N, D)))
        return x + self.drop(self.ff(self.norm2(x))), weights, h

    def rows(self, x: Tensor, mask: Tensor, normalised: Tensor, rows: Tensor) -> Tensor:
        """The output [R, L - 1, D] of the sequences `rows` [R] of x at every position but the last
        (which last_position gave), from last_position's normalised input."""
        if self.export:  # one Gather of the R rows, then a slice of them; x[rows, :-1] exports as
            # a copy of all N sequences minus their last position, then a GatherND of R of them
            q, k, v = self._heads(self.qkv(normalised.index_select(0, rows)), 3)
            return self._finish(x.index_select(0, rows)[:, :-1], q[:, :, :-1], k, v, mask.index_select(0, rows))
        q, k, v = self._heads(self.qkv(normalised[rows]), 3)
        return self._finish(x[rows, :-1], q[:, :, :-1], k, v, mask[rows])

    def _heads(self, projected: Tensor, parts: int) -> tuple[Tensor, ...]:
        """[N, L, parts * D] -> parts tensors [N, H, L, D / H]."""
        N, L, width = projected.shape
        return projected.view(N, L, parts, self.heads, width // parts // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def _finish(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Attention of the queries q [N, H, Lq, D / H] (the positions of x [N, Lq, D]) over all
        positions, then the residuals and the feed-forward."""
        N, Lq, D = x.shape
        # ONNX Runtime's Attention takes a mask per query row, hence the expand (a view in torch).
        # No row is all padding (the word level's CLS slot is real, and the retrieved phrases keep
        # their first): no NaN.
        attn_mask = mask[:, None, None, :].expand(N, 1, Lq, mask.shape[1])
        mixed = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.drop(self.out(mixed.transpose(1, 2).reshape(N, Lq, D)))
        return x + self.drop(self.ff(self.norm2(x)))


class AttentionPool(nn.Module):
    """Scores items with one learned query: score = <norm(x), q> / sqrt(D)."""

    def __init__(self, d: int):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.query = nn.Parameter(torch.randn(d) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x) @ self.query / math.sqrt(x.shape[-1])


class HierarchicalClassifier(nn.Module):
    """export=True builds the model for ONNX export (hdc.export): the n-gram branch gathers its
    table rows and sums them instead of calling embedding_bag, which exports as a loop that int8
    quantization cannot handle."""

    def __init__(self, config: ModelConfig, num_classes: int, export: bool = False):
        super().__init__()
        self.config = c = config
        self.export = export
        D, T = c.d_model, c.phrase_tokens
        embed_dim = c.embed_dim or D
        # The training curriculum fades the dense path in (set); saved, so a model
        # stopped early is used as it was trained.
        self.register_buffer("dense_scale", torch.ones(()))
        # Chosen on validation after training (set): the weight of the network's logits beside
        # the fitted n-gram classifier's (0 where the network does not help), and the temperature
        # that makes the probabilities calibrated. Checkpoints from before they existed load with
        # 1 for both (upgrade), which leaves their outputs as they were.
        self.register_buffer("deep_scale", torch.ones(()))
        self.register_buffer("temperature", torch.ones(()))

        # word level
        self.embed = nn.Embedding(c.vocab_size, embed_dim, padding_idx=0)
        self.embed_proj = nn.Linear(embed_dim, D) if embed_dim != D else nn.Identity()
        self.position = nn.Parameter(torch.randn(T, D) * 0.02)
        self.cls = nn.Parameter(torch.randn(D) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(D, c.heads, c.ff_mult, c.dropout, export) for _ in range(c.layers))
        self.word_norm = nn.LayerNorm(D)
        self.drop = nn.Dropout(c.dropout)

        # phrase and sentence levels (dense path)
        self.phrase_pool = AttentionPool(D)
        self.sentence_pool = AttentionPool(D)

        # sparse path (HSA)
        self.landmark = nn.Linear(D, D)
        self.retrieval = nn.Parameter(torch.randn(c.queries, D) * 0.02)  # [M, D]
        M = c.all_queries  # every query below: the first hop's, then the second's
        if c.hop_queries:  # the second hop's queries: learned, plus what the first hop found
            self.hop_retrieval = nn.Parameter(torch.randn(c.hop_queries, D) * 0.02)
            self.hop_context = nn.Linear(c.queries * D, c.hop_queries * D)
            nn.init.zeros_(self.hop_context.weight)  # starts as a plain second set of queries
        self.token_kv = nn.Linear(D, 2 * D)
        self.token_query = nn.Parameter(torch.randn(M, D) * 0.02)  # [M, D]
        # Fusion re-ranks the K selected phrases by their content too; zero at first, so fusion
        # starts as a softmax of the retrieval scores.
        self.rerank = nn.Parameter(torch.zeros(M, D))  # [M, D]
        self.retrieved = nn.ModuleList(
            EncoderLayer(D, c.heads, c.ff_mult, c.dropout, export) for _ in range(c.retrieved_layers)
        )
        self.sparse_out = nn.Linear(M * D, D)

        # document level and head
        self.bypass_norm = nn.LayerNorm(D)
        self.bypass = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
        self.head_norm = nn.LayerNorm(D)
        if c.ngrams:
            # Sparse gradients: a batch touches a few thousand of the table's rows (hdc.train
            # steps this table with SGD). Row 0 is padding.
            self.ngram_embed = nn.EmbeddingBag(c.ngram_rows, c.ngram_dim, mode="sum", sparse=True)
            nn.init.normal_(self.ngram_embed.weight, std=0.02)
            # Fixed IDF weight of each bucket, from the training split (set); padding gets 0.
            idf = torch.ones(c.ngram_rows)
            idf[0] = 0.0
            self.register_buffer("ngram_idf", idf)
            if c.ngram_linear:
                # A linear classifier on the same bag, fitted to convergence once training is
                # done (set), with its own TF (chosen on validation); its scores add to the
                # logits. Zero until then, so training never sees it.
                self.register_buffer("ngram_linear", torch.zeros(c.ngram_rows, num_classes))
                self.register_buffer("ngram_linear_bias", torch.zeros(num_classes))
                self.register_buffer("ngram_linear_log_tf", torch.tensor(LOG_TF[c.ngram_tf]))
                self.register_buffer("ngram_linear_word_weight", torch.ones(()))
        head_in = D + (c.ngram_dim if c.ngrams else 0)
        self.head = nn.Linear(head_in, num_classes)

    # ----------------------------------------------------------------------------------------
    # the parts that are set rather than trained

    # dense_scale: how much of the dense path enters the document vector (a curriculum fades it in);
    # deep_scale, temperature: the network's weight beside the n-gram classifier, and the logits'
    # temperature, chosen on validation; ngram_idf: [G] IDF weights of the training
    # split; ngram_linear, ngram_linear_bias: [G, C] and [C], the fitted classifier,
    # ngram_linear_log_tf the TF of its inputs (LOG_TF), and ngram_linear_word_weight what the
    # word n-grams weigh in them against the character ones (ngram_weights).
    SET = (
        "dense_scale",
        "deep_scale",
        "temperature",
        "ngram_idf",
        "ngram_linear",
        "ngram_linear_bias",
        "ngram_linear_log_tf",
        "ngram_linear_word_weight",
    )

    @torch.no_grad()
    def set(self, **values: float | Tensor) -> None:
        """Set some of the buffers in SET, e.g. model.set(deep_scale=0.0, temperature=1.3)."""
        for name, value in values.items():
            if name not in self.SET:
                raise KeyError(f"{name} is not one of the set parts: {', '.join(self.SET)}")
            getattr(self, name).copy_(torch.as_tensor(value))

    def upgrade(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """A checkpoint's weights with the buffers added since it was written, at the value that
        leaves the model as it was (the linear classifier was fitted on the branch's TF)."""
        added = {name: torch.ones(()) for name in ("deep_scale", "temperature")}
        if self.config.ngram_linear:
            added["ngram_linear_log_tf"] = torch.tensor(LOG_TF[self.config.ngram_tf])
            added["ngram_linear_word_weight"] = torch.ones(())
        return added | weights

    # ----------------------------------------------------------------------------------------
    # encode: one block of phrases -> mergeable state (+ weights for inspection)

    def encode(
        self,
        tokens: Tensor,
        phrase_sentence: Tensor,
        sentence_phrases: Tensor,
        selectable: Tensor,
        select_k: int | None = None,
        cut: bool = False,
    ) -> dict[str, Tensor]:
        """tokens [B, P, T] (0 = padding); phrase_sentence [B, P], the sentence of each phrase (-1:
        padding); sentence_phrases [B, S, Q], the phrases of each sentence (-1: padding);
        selectable [B, P], the phrases the sparse path may pick. select_k: phrases selected per
        query, if not model.top_k (training selects fewer: train.select_k). cut: in training, also
        the dense statistics of the model.dense_sentences best sentences alone, as "cut"."""
        c = self.config
        B, P, T = tokens.shape
        S, Q = sentence_phrases.shape[1:]
        D = c.d_model

        # --- word level: tokens -> phrase vectors (CLS slots) and word weights; the token
        # states are computed below, for the selected phrases only
        token_mask = tokens > 0  # [B, P, T]
        x = self.embed_proj(self.embed(tokens)) + self.position[:T]  # [B, P, T, D]
        x = torch.cat([x, self.cls.expand(B, P, 1, D)], dim=2).view(B * P, T + 1, D)
        mask = torch.cat([token_mask, token_mask.new_ones(B, P, 1)], dim=2).view(B * P, T + 1)
        x = self.drop(x)
        for layer in self.layers[:-1]:
            x = layer(x, mask)
        last = self.layers[-1]  # finished below for the selected phrases only (EncoderLayer)
        cls, attention, normalised = last.last_position(x, mask)
        phrase = self.word_norm(cls).view(B, P, D)
        cls_to_tokens = attention[:, :, :T].mean(1).view(B, P, T) * token_mask  # heads averaged
        word_weights = cls_to_tokens / cls_to_tokens.sum(-1, keepdim=True).clamp_min(1e-12)

        # --- phrase level: phrases -> sentences, pooled inside each sentence. Gathering each
        # sentence's (at most Q) phrases keeps this linear in the block's length.
        sentence_mask = sentence_phrases[:, :, 0] >= 0  # [B, S]
        slots = sentence_phrases.clamp_min(0).view(B, S * Q)
        scores = torch.gather(self.phrase_pool(phrase), 1, slots).view(B, S, Q)
        pool = masked_softmax(scores, sentence_phrases >= 0)  # [B, S, Q]
        members = torch.gather(phrase, 1, slots[:, :, None].expand(B, S * Q, D)).view(B, S, Q, D)
        sentences = torch.einsum("bsq,bsqd->bsd", pool, members)  # [B, S, D]
        # each phrase's weight inside its sentence, read back from its slot
        in_sentence = phrase_sentence.clamp_min(0)
        first = torch.gather(sentence_phrases[:, :, 0], 1, in_sentence)  # [B, P]
        slot = in_sentence * Q + torch.arange(P, device=tokens.device) - first
        phrase_weights = torch.gather(pool.view(B, S * Q), 1, slot.clamp(0, S * Q - 1)) * (phrase_sentence >= 0)

        # --- document level, dense: online-softmax statistics of sentence pooling
        sentence_scores = self.sentence_pool(sentences).masked_fill(~sentence_mask, NEG)  # [B, S]
        state = {}
        # Inference pools only the N best sentences (the stream keeps the N best of all blocks).
        # Training pools every one: a needle outside the N would get no gradient to rise by (on
        # the suite's verdict task, validation stayed at 0.43 trained that way, against 1.00).
        # cut=True pools both ways in training (train.dense_cut_loss puts a loss on each).
        pooled = sentence_scores, sentences  # [B, S], [B, S, D]
        if c.dense_sentences and (cut or not self.training):
            N = min(c.dense_sentences, S)
            top_scores, best = sentence_scores.topk(N, dim=-1)  # [B, N]
            top_states = torch.gather(sentences, 1, best[:, :, None].expand(B, N, D))  # [B, N, D]
            state = {"dense_top_scores": top_scores, "dense_top_states": top_states}
            if self.training:
                state["cut"] = dense_statistics(top_scores, top_states)
            else:
                pooled = top_scores, top_states
        state |= dense_statistics(*pooled)

        # --- document level, sparse: top-K phrases per query, then attention inside each
        landmarks = self.landmark(phrase)  # [B, P, D]

        def score(queries: Tensor) -> Tensor:  # [B, M, D] -> [B, M, P], NEG where not selectable
            scores = torch.einsum("bpd,bmd->bmp", landmarks, queries) / math.sqrt(D)
            return scores.masked_fill(~selectable[:, None, :], NEG)

        phrase_scores = score(self.retrieval.expand(B, -1, -1))  # [B, M, P]
        k = min(select_k or c.top_k, P)
        finish = (x, mask, normalised, token_mask)
        found = self._retrieve(phrase_scores, k, self.token_query[: c.queries], *finish)
        if c.hop_queries:  # the second hop asks with what the first one found
            weights = torch.softmax(found["top_scores"], -1)[..., None]  # [B, M, k, 1]
            context = (weights * found["top_states"]).sum(2).flatten(1)  # [B, M * D]
            queries = self.hop_retrieval + self.hop_context(context).view(B, c.hop_queries, D)
            hop_scores = score(queries)
            hop = self._retrieve(hop_scores, k, self.token_query[c.queries :], *finish)
            found = {name: torch.cat([found[name], hop[name]], 1) for name in found}
            phrase_scores = torch.cat([phrase_scores, hop_scores], 1)
        state |= found

        return state | {
            "word_weights": word_weights,
            "phrase_weights": phrase_weights,
            "sentence_scores": sentence_scores,
            "phrase_scores": phrase_scores,
        }

    def _retrieve(
        self,
        phrase_scores: Tensor,
        k: int,
        token_query: Tensor,
        x: Tensor,
        mask: Tensor,
        normalised: Tensor,
        token_mask: Tensor,
    ) -> dict[str, Tensor]:
        """The top-k phrases of each query's phrase_scores [B, M, P], and token attention inside
        each (token_query [M, D]); x, mask, normalised: the last word layer's inputs (encode)."""
        B, P, T = token_mask.shape
        M, D = phrase_scores.shape[1], self.config.d_model
        top_scores, top_phrases = phrase_scores.topk(k, dim=-1)  # [B, M, k]
        # the best score left out, NEG if none: see TIE_MARGIN
        spare_scores = phrase_scores.scatter(-1, top_phrases, NEG).amax(-1)  # [B, M]
        # The token states of the selected phrases. The last word layer runs in full only on
        # R = min(M * k, P) phrases of each document, the selected ones first (a phrase that
        # several queries select runs once): a short document costs no more than running the
        # layer everywhere, and a long one a fraction of it.
        R = min(M * k, P)
        document = torch.arange(B, device=x.device)[:, None]  # [B, 1]
        selected = top_phrases.flatten(1)  # [B, M * k]
        picked = torch.zeros(B, P, device=x.device).scatter(1, selected, 1.0)
        rows = picked.topk(R, dim=-1).indices  # [B, R] every selected phrase, then others up to R
        row_of = torch.zeros(B, P, dtype=torch.long, device=x.device)  # [B, P] where each row ran
        row_of = row_of.scatter(1, rows, torch.arange(R, device=x.device).expand(B, R))
        ran = self.word_norm(
            self.layers[-1].rows(x, mask, normalised, (rows + document * P).flatten())
        )  # [B * R, T, D]
        chosen = ran.index_select(0, (torch.gather(row_of, 1, selected) + document * R).flatten()).view(B, M, k, T, D)
        chosen_mask = token_mask.view(B * P, T).index_select(0, (selected + document * P).flatten()).view(B, M, k, T)
        keys, values = self.token_kv(chosen).chunk(2, dim=-1)  # [B, M, k, T, D] each
        inside = torch.einsum("bmktd,md->bmkt", keys, token_query) / math.sqrt(D)
        inside = masked_softmax(inside, chosen_mask)  # [B, M, k, T]
        return {
            "top_scores": top_scores,
            "top_phrases": top_phrases,
            "top_states": torch.einsum("bmkt,bmktd->bmkd", inside, values),  # [B, M, k, D]
            "spare_scores": spare_scores,
        }

    # ----------------------------------------------------------------------------------------
    # classify: merged state -> logits

    def classify(self, state: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits [B, C] and fusion weights [B, M, K] from a (merged) block state (spare_scores
        [B, M]: the best score left out of each top-K), plus, when the n-gram branch is on,
        ngram_ids [B, U] (0 = padding) and ngram_counts [B, U]."""
        c = self.config
        dense = state["dense_acc"] / state["dense_sum"].clamp_min(1e-30)[:, None]  # [B, D]
        dense = dense * self.dense_scale if c.dense else torch.zeros_like(dense)

        # Fusion weights: retrieval score plus a content score of each selected phrase. The
        # retrieval score's margin over the best filler shrinks as documents grow (the K-th
        # best of a million phrases scores higher than of a hundred); the content score does
        # not depend on what else the document holds, so a needle among the K keeps its weight.
        top_scores, top_states = state["top_scores"], state["top_states"]  # [B, M, K], [B, M, K, D]
        filled = top_scores > NEG / 2  # [B, M, K] False where a query selected fewer than K
        if self.retrieved:  # the selected phrases read each other (model.retrieved_layers)
            B, M, K, D = top_states.shape
            selected = filled.view(B, M * K) | (torch.arange(M * K, device=filled.device) == 0)  # no all-padding row
            top_states = top_states.reshape(B, M * K, D)
            for layer in self.retrieved:
                top_states = layer(top_states, selected)
            top_states = top_states.view(B, M, K, D)
        rerank = torch.einsum("bmkd,md->bmk", top_states, self.rerank)
        fusion = masked_softmax(top_scores + rerank, filled)
        if not self.training:  # fade the K-th phrase out as its lead over the spare vanishes
            lead = top_scores[..., -1:] - state["spare_scores"][..., None]  # [B, M, 1]
            fade = torch.cat([torch.ones_like(fusion[..., :-1]), (lead / TIE_MARGIN).clamp(0, 1)], -1)
            fusion = fusion * fade / (fusion * fade).sum(-1, keepdim=True).clamp_min(1e-30)
        sparse = self.sparse_out((fusion[..., None] * top_states).sum(2).flatten(1))  # [B, D]
        if not c.sparse:
            sparse = torch.zeros_like(sparse)

        document = dense + self.bypass(self.bypass_norm(dense + sparse))  # [B, D]
        features = self.head_norm(document)
        if c.ngrams:
            ids = state["ngram_ids"]  # [B, U]
            counts = state["ngram_counts"]
            weights = ngram_weights(ids, counts, self.ngram_idf, LOG_TF[c.ngram_tf])  # [B, U]
            if self.export:  # exported as Gather, whose table int8 quantization stores as int8
                rows = nn.functional.embedding(ids, self.ngram_embed.weight)  # [B, U, E]
                ngrams = torch.einsum("bu,bue->be", weights, rows)
            else:
                ngrams = self.ngram_embed(ids, per_sample_weights=weights)  # [B, E]
            features = torch.cat([features, ngrams], dim=-1)
        logits = self.head(self.drop(features)) * self.deep_scale  # [B, C]
        if c.ngram_linear:  # which the config allows only with the n-gram branch
            linear_weights = ngram_weights(
                ids, counts, self.ngram_idf, self.ngram_linear_log_tf, self.ngram_linear_word_weight, c.ngram_words_from
            )  # [B, U]
            rows = nn.functional.embedding(ids, self.ngram_linear)  # [B, U, C]
            logits = logits + torch.einsum("bu,buc->bc", linear_weights, rows) + self.ngram_linear_bias
        return logits / self.temperature, fusion

    # ----------------------------------------------------------------------------------------

    def forward(
        self,
        tokens: Tensor,
        phrase_sentence: Tensor,
        sentence_phrases: Tensor,
        selectable: Tensor,
        ngram_ids: Tensor | None = None,
        ngram_counts: Tensor | None = None,
        return_attention: bool = False,
        select_k: int | None = None,
        cut: bool = False,
    ):
        """Logits [B, C] (and Attention, with return_attention). cut: in training, the logits with
        the dense path pooling only its model.dense_sentences best sentences as well, as a pair."""
        state = self.encode(tokens, phrase_sentence, sentence_phrases, selectable, select_k, cut)
        ngrams = {"ngram_ids": ngram_ids, "ngram_counts": ngram_counts}
        logits, fusion = self.classify(state | ngrams)
        if cut:
            return logits, self.classify(state | ngrams | state.get("cut", {}))[0]
        if not return_attention:
            return logits
        read = sentence_phrases[:, :, 0] >= 0  # [B, S] the sentences the dense path pools
        if "dense_top_scores" in state:  # model.dense_sentences: only its best ones
            read = read & (state["sentence_scores"] >= state["dense_top_scores"][:, -1:])
        sentence = masked_softmax(state["sentence_scores"], read)
        return logits, Attention(
            word=state["word_weights"],
            phrase=state["phrase_weights"],
            sentence=sentence,
            chunk_scores=state["phrase_scores"],
            selected=state["top_phrases"],
            fusion=fusion,
        )
