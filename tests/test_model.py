import math
from dataclasses import replace

import torch

from hdc.config import ModelConfig
from hdc.model import LOG_TF, TIE_MARGIN, EncoderLayer, HierarchicalClassifier, masked_softmax, ngram_weights
from hdc.text import ngram_bag

CONFIG = ModelConfig(
    vocab_size=50,
    d_model=16,
    heads=2,
    phrase_tokens=4,
    sentence_tokens=8,
    queries=2,
    top_k=3,
    dropout=0.0,
    ngram_orders=(2, 3),
    ngram_buckets=64,
    ngram_word_buckets=0,  # word n-grams in the character rows: GOLDEN was drawn with a 65-row table
    ngram_dim=8,
)


def batch():
    """Two documents: 5 phrases in 3 sentences, and 2 phrases in 1 sentence (then padding)."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 50, (2, 5, 4), generator=g)
    tokens[0, 4, 2:] = 0  # a short phrase
    tokens[1, 2:] = 0  # padding phrases
    phrase_sentence = torch.tensor([[0, 0, 1, 2, 2], [0, 0, -1, -1, -1]])
    sentence_phrases = torch.tensor([[[0, 1], [2, -1], [3, 4]], [[0, 1], [-1, -1], [-1, -1]]])
    selectable = tokens.gt(0).any(-1)
    ngrams = torch.randint(1, 65, (2, 5, 6), generator=g) * (phrase_sentence >= 0)[..., None]
    ngrams[0, 4, 3:] = 0
    ngram_ids, ngram_counts = map(torch.from_numpy, ngram_bag(ngrams.numpy()))
    return dict(
        tokens=tokens,
        phrase_sentence=phrase_sentence,
        sentence_phrases=sentence_phrases,
        selectable=selectable,
        ngram_ids=ngram_ids,
        ngram_counts=ngram_counts,
    )


def model() -> HierarchicalClassifier:
    torch.manual_seed(0)
    return HierarchicalClassifier(CONFIG, num_classes=3).eval()


def test_masked_softmax_gives_zeros_for_all_padding_rows():
    scores = torch.tensor([[1.0, 2.0, 3.0], [5.0, -2.0, 0.5]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    weights = masked_softmax(scores, mask)
    assert torch.isfinite(weights).all()
    assert torch.equal(weights[1], torch.zeros(3))
    assert weights[0, 1] == 0
    assert torch.allclose(weights[0].sum(), torch.tensor(1.0))


def test_shapes_and_attention_sums():
    logits, att = model()(**batch(), return_attention=True)
    B, P, T, M = 2, 5, 4, CONFIG.queries
    assert logits.shape == (B, 3)
    assert att.word.shape == (B, P, T) and att.phrase.shape == (B, P) and att.sentence.shape == (B, 3)
    assert att.chunk_scores.shape == (B, M, P) and att.selected.shape == (B, M, 3) and att.fusion.shape == (B, M, 3)
    real = batch()["tokens"].gt(0).any(-1)
    # word weights sum to 1 inside every real phrase and are 0 on padding tokens
    assert torch.allclose(att.word.sum(-1)[real], torch.ones(int(real.sum())), atol=1e-5)
    assert att.word[~batch()["tokens"].gt(0)].abs().max() == 0
    # phrase weights sum to 1 inside each sentence
    assert torch.allclose(att.phrase[0, :2].sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(att.phrase[0, 2], torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(att.phrase[0, 3:].sum(), torch.tensor(1.0), atol=1e-5)
    assert att.phrase[1, 2:].abs().max() == 0
    # sentence weights sum to 1 per document; padding sentences get none
    assert torch.allclose(att.sentence.sum(-1), torch.ones(2), atol=1e-5)
    assert att.sentence[1, 1:].abs().max() == 0
    # fusion weights sum to 1 per query; the document with 2 phrases gives padding no weight
    assert torch.allclose(att.fusion.sum(-1), torch.ones(2, M), atol=1e-5)
    assert att.fusion[1, :, 2].abs().max() == 0
    assert (att.selected[1, :, :2] < 2).all()


def test_second_hop_queries_change_with_what_the_first_hop_found():
    """model.hop_queries: the second hop's phrase scores move when the first hop's selected phrases
    change, and its queries add their own rows to every per-query output."""
    torch.manual_seed(0)
    net = HierarchicalClassifier(replace(CONFIG, hop_queries=1), num_classes=3).eval()
    torch.nn.init.normal_(net.hop_context.weight)  # trained weights; zero at initialisation
    inputs = batch()
    logits, att = net(**inputs, return_attention=True)
    M = CONFIG.queries + 1
    assert logits.shape == (2, 3) and att.chunk_scores.shape == (2, M, 5) and att.fusion.shape == (2, M, 3)
    assert torch.allclose(att.fusion.sum(-1), torch.ones(2, M), atol=1e-5)
    first = att.selected[0, : CONFIG.queries].flatten()
    changed = inputs["tokens"].clone()
    changed[0, first[0]] = torch.randint(1, 50, changed[0, first[0]].shape, generator=torch.Generator().manual_seed(1))
    unchanged_phrases = [p for p in range(5) if p != first[0]]
    _, after = net(**(inputs | {"tokens": changed}), return_attention=True)
    hop_before, hop_after = att.chunk_scores[0, -1, unchanged_phrases], after.chunk_scores[0, -1, unchanged_phrases]
    assert not torch.allclose(hop_before, hop_after)  # same phrases, scored by a query that moved


def test_with_retrieved_layers_a_querys_fusion_moves_with_a_phrase_only_another_query_selected():
    """model.retrieved_layers: the selected phrases read each other before fusion, so changing a
    phrase that only query 0 selected moves query 1's fusion weights over its unchanged phrases;
    without the layers it does not."""
    inputs = batch()
    for layers, moves in ((0, False), (1, True)):
        torch.manual_seed(0)
        net = HierarchicalClassifier(replace(CONFIG, top_k=2, retrieved_layers=layers), num_classes=3).eval()
        torch.nn.init.normal_(net.rerank)  # trained weights; zero at initialisation
        _, att = net(**inputs, return_attention=True)
        only_first = [p for p in att.selected[0, 0].tolist() if p not in att.selected[0, 1].tolist()]
        assert only_first  # the test needs a phrase that query 0 alone selected
        changed = inputs["tokens"].clone()
        changed[0, only_first[0], :2] = torch.tensor([7, 9])
        _, after = net(**(inputs | {"tokens": changed}), return_attention=True)
        assert torch.equal(att.selected[0, 1], after.selected[0, 1])  # query 1 kept its phrases
        assert torch.allclose(att.fusion[0, 1], after.fusion[0, 1], atol=1e-6) != moves


def test_dense_path_pools_only_its_best_sentences():
    """model.dense_sentences=2: at inference, of document 0's 3 sentences, the dense statistics and
    weights count the 2 it scores highest; with 0, and in training, all 3."""
    inputs = batch()
    encode_inputs = [inputs[name] for name in ("tokens", "phrase_sentence", "sentence_phrases", "selectable")]
    for n, pooled in ((2, 2), (0, 3)):
        torch.manual_seed(0)
        net = HierarchicalClassifier(replace(CONFIG, dense_sentences=n), num_classes=3).eval()
        _, att = net(**inputs, return_attention=True)
        assert int((att.sentence[0] > 0).sum()) == pooled
        state = net.encode(*encode_inputs)
        best = state["sentence_scores"][0].topk(pooled).values
        assert torch.allclose(state["dense_sum"][0], torch.exp(best - best.max()).sum())
    torch.manual_seed(0)
    net = HierarchicalClassifier(replace(CONFIG, dense_sentences=2), num_classes=3)
    trained = net.train().encode(*encode_inputs)  # training pools every sentence (dropout is 0 here)
    every = trained["sentence_scores"][0].topk(3).values
    assert torch.allclose(trained["dense_sum"][0], torch.exp(every - every.max()).sum())


def test_cut_pooling_in_training_matches_inference_pooling():
    """cut=True (train.dense_cut_loss): training's "cut" statistics are inference's pooling of the
    2 best sentences, training's own still pool all 3, and the pair of logits differs only there."""
    inputs = batch()
    encode_inputs = [inputs[name] for name in ("tokens", "phrase_sentence", "sentence_phrases", "selectable")]
    torch.manual_seed(0)
    net = HierarchicalClassifier(replace(CONFIG, dense_sentences=2), num_classes=3)
    inferred = net.eval().encode(*encode_inputs)
    trained = net.train().encode(*encode_inputs, cut=True)  # dropout is 0 here
    for name in ("dense_max", "dense_sum", "dense_acc"):
        assert torch.allclose(trained["cut"][name], inferred[name])
    every = trained["sentence_scores"][0].topk(3).values
    assert torch.allclose(trained["dense_sum"][0], torch.exp(every - every.max()).sum())
    logits, cut_logits = net(**inputs, cut=True)
    assert not torch.allclose(logits[0], cut_logits[0])  # document 0 has 3 sentences: the poolings differ
    assert torch.allclose(logits[1], cut_logits[1])  # document 1 has 1: they agree


def test_unselectable_phrases_are_never_selected():
    inputs = batch()
    inputs["selectable"][0, :3] = False
    _, att = model()(**inputs, return_attention=True)
    assert (att.selected[0] >= 3).all() or (att.fusion[0][att.selected[0] < 3] == 0).all()


def test_output_is_continuous_where_the_top_k_flips():
    """When the K-th phrase ties with the best one left out, rounding decides which of the two is
    selected: both choices must give the same output, and a clear lead must keep its weight."""
    net, inputs = model(), batch()
    state = net.encode(*(inputs[name] for name in ("tokens", "phrase_sentence", "sentence_phrases", "selectable")))
    state |= {"ngram_ids": inputs["ngram_ids"], "ngram_counts": inputs["ngram_counts"]}
    kth = state["top_scores"][0, :, -1]  # [M] the K-th score of document 0, per query
    other = torch.randn(CONFIG.queries, CONFIG.d_model)  # the state of the phrase it ties with

    def classify(lead: float, swap: bool):
        spare, states = state["spare_scores"].clone(), state["top_states"].clone()
        spare[0] = kth - lead
        if swap:
            states[0, :, -1] = other
        return net.classify(state | {"spare_scores": spare, "top_states": states})

    logits, fusion = classify(0.0, swap=False)
    assert torch.equal(fusion[0, :, -1], torch.zeros(CONFIG.queries))
    assert torch.allclose(classify(0.0, swap=True)[0], logits, atol=1e-6)
    assert (classify(TIE_MARGIN / 2, swap=False)[1][0, :, -1] > 0).all()  # half the margin: some weight
    assert not torch.allclose(classify(1.0, swap=True)[0][0], classify(1.0, swap=False)[0][0], atol=1e-6)


def test_encoder_layer_in_two_steps_equals_the_whole_layer():
    """last_position and rows (the word level's last layer) must give what the whole layer gives,
    and the read-out weights must be the attention of the last position, padding keys included."""
    torch.manual_seed(0)
    layer = EncoderLayer(16, heads=2, ff_mult=2, dropout=0.0).eval()
    x, mask = torch.randn(3, 5, 16), torch.tensor([[1, 1, 0, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]]).bool()
    q, k, v = layer.qkv(layer.norm1(x)).view(3, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    explicit = masked_softmax(q @ k.transpose(-1, -2) / 8**0.5, mask[:, None, None, :])  # [N, H, L, L]
    mixed = (explicit @ v).transpose(1, 2).reshape(3, 5, 16)
    expected = x + layer.out(mixed)
    expected = expected + layer.ff(layer.norm2(expected))
    assert torch.allclose(layer(x, mask), expected, atol=1e-5)

    last, weights, normalised = layer.last_position(x, mask)  # [N, D], [N, H, L]
    assert torch.allclose(last, expected[:, -1], atol=1e-5)
    assert torch.allclose(weights, explicit[:, :, -1], atol=1e-6)
    assert torch.equal(weights[1, :, :4], torch.zeros(2, 4))
    rows = torch.tensor([2, 0, 2])  # any order, repeats allowed
    assert torch.allclose(layer.rows(x, mask, normalised, rows), expected[rows, :-1], atol=1e-5)


def test_token_states_are_those_of_the_whole_last_layer():
    """The sparse path reads token states from the selected phrases only, each run once: the
    state must be what running the last layer on every phrase gives, short and long documents."""
    torch.manual_seed(0)
    net = model()
    for P in (3, 40):  # fewer phrases than M * K, and many more
        B, T = 2, CONFIG.phrase_tokens
        tokens = torch.randint(1, 50, (B, P, T))
        tokens[0, 0, 2:] = 0  # a short phrase
        tokens[1, P // 2 :] = 0  # the second document is half as long: padding phrases
        real = tokens.gt(0).any(-1)  # [B, P]
        phrase_sentence = torch.arange(P).expand(B, P).masked_fill(~real, -1)  # a sentence per phrase
        state = net.encode(tokens, phrase_sentence, phrase_sentence[:, :, None], real)
        x = net.embed_proj(net.embed(tokens)) + net.position[:T]
        x = torch.cat([x, net.cls.expand(B, P, 1, -1)], dim=2).flatten(0, 1)
        mask = torch.cat([tokens > 0, torch.ones(B, P, 1, dtype=torch.bool)], dim=2).flatten(0, 1)
        every = net.word_norm(net.layers[-1](x, mask))[:, :T].view(B, P, T, -1)  # [B, P, T, D]
        top = state["top_phrases"]  # [B, M, k]
        chosen = every[torch.arange(B)[:, None, None], top]  # [B, M, k, T, D]
        keys, values = net.token_kv(chosen).chunk(2, dim=-1)
        inside = masked_softmax(
            torch.einsum("bmktd,md->bmkt", keys, net.token_query) / CONFIG.d_model**0.5,
            (tokens > 0)[torch.arange(B)[:, None, None], top],
        )
        expected = torch.einsum("bmkt,bmktd->bmkd", inside, values)
        assert torch.allclose(state["top_states"], expected, atol=1e-5)


def test_ngram_weights_are_l2_normalised_tf_idf():
    ids = torch.tensor([[1, 2, 3, 0]])
    counts = torch.tensor([[1.0, 4.0, 2.0, 0.0]])
    idf = torch.tensor([0.0, 1.0, 2.0, 0.5])
    sublinear = [1.0, 2 * (1 + math.log(4)), 0.5 * (1 + math.log(2)), 0]
    for tf, expected in (("sublinear", sublinear), ("binary", [1, 2, 0.5, 0])):
        expected = torch.tensor([expected])
        assert torch.allclose(ngram_weights(ids, counts, idf, LOG_TF[tf]), expected / expected.norm()), tf


def test_ngram_linear_classifier_adds_its_scores_to_the_logits():
    """model.ngram_linear: logits = the head's + sum_u weight_u * table[id_u] + bias; a zero table
    (as in training, before hdc.train fits it) changes nothing."""
    torch.manual_seed(0)
    plain = HierarchicalClassifier(CONFIG, num_classes=3).eval()
    torch.manual_seed(0)
    linear = HierarchicalClassifier(replace(CONFIG, ngram_linear=True), num_classes=3).eval()
    inputs = batch()
    assert torch.equal(linear(**inputs), plain(**inputs))
    table, bias = torch.randn(CONFIG.ngram_rows, 3), torch.randn(3)
    linear.ngram_linear.copy_(table)
    linear.ngram_linear_bias.copy_(bias)
    weights = ngram_weights(inputs["ngram_ids"], inputs["ngram_counts"], plain.ngram_idf)
    scores = torch.stack([w @ table[i] for w, i in zip(weights, inputs["ngram_ids"])]) + bias
    assert torch.allclose(linear(**inputs), plain(**inputs) + scores, atol=1e-5)


def test_ngram_linear_classifier_weighs_its_inputs_with_its_own_tf():
    """ngram_linear_log_tf = 0: the classifier sees binary TF while the branch keeps sublinear."""
    torch.manual_seed(0)
    plain = HierarchicalClassifier(CONFIG, num_classes=3).eval()
    torch.manual_seed(0)
    linear = HierarchicalClassifier(replace(CONFIG, ngram_linear=True), num_classes=3).eval()
    inputs = batch()
    assert inputs["ngram_counts"].max() > 1  # else both TFs agree and the test proves nothing
    table = torch.randn(CONFIG.ngram_rows, 3)
    linear.set(ngram_linear=table, ngram_linear_log_tf=LOG_TF["binary"])
    binary = ngram_weights(inputs["ngram_ids"], inputs["ngram_counts"], plain.ngram_idf, LOG_TF["binary"])
    scores = torch.stack([w @ table[i] for w, i in zip(binary, inputs["ngram_ids"])])
    assert torch.allclose(linear(**inputs), plain(**inputs) + scores, atol=1e-5)


def test_ngram_linear_classifier_weighs_word_ngrams_by_its_word_weight():
    """With word n-grams in rows of their own, the classifier's input is TF-IDF with the word
    rows times ngram_linear_word_weight, then L2-normalised; the branch's input is untouched."""
    config = replace(CONFIG, ngram_linear=True, ngram_word_buckets=32)
    assert config.ngram_rows == 97 and config.ngram_words_from == 65
    torch.manual_seed(0)
    model = HierarchicalClassifier(config, num_classes=3).eval()
    inputs = batch()
    ids = inputs["ngram_ids"]
    inputs["ngram_ids"] = ids = torch.where(ids > 32, ids + 32, ids)  # 33-64 -> the word rows 65-96
    words, chars = ids >= 65, (ids > 0) & (ids < 65)
    assert words.any(1).all() and chars.any(1).all()  # else no weighing of one kind against the other shows
    network = model(**inputs)
    table = torch.randn(config.ngram_rows, 3)
    model.set(ngram_linear=table, ngram_linear_word_weight=4.0)
    tf_idf = (1 + torch.log(inputs["ngram_counts"].clamp_min(1))) * (ids > 0)  # IDF 1, sublinear TF
    tf_idf = tf_idf * torch.where(words, 4.0, 1.0)
    weights = tf_idf / tf_idf.norm(dim=-1, keepdim=True)
    scores = torch.stack([w @ table[i] for w, i in zip(weights, ids)])
    assert torch.allclose(model(**inputs), network + scores, atol=1e-5)


def test_golden_logits():
    """Fixed seed, fixed input: the numbers must not drift unless the model is changed on purpose."""
    logits = model()(**batch())
    expected = torch.tensor(GOLDEN)
    assert torch.allclose(logits, expected, atol=1e-4), logits.tolist()


GOLDEN = [[-0.02073, -0.26739, -0.46518], [0.4173, -0.16001, -0.55673]]


def test_set_parts_are_named_and_neutral_by_default():
    import pytest

    m = model()
    logits = m(**batch())
    m.set(deep_scale=1.0, temperature=1.0)
    assert torch.equal(m(**batch()), logits)  # the neutral values leave the outputs as they were
    m.set(temperature=2.0)
    assert torch.allclose(m(**batch()), logits / 2)
    with pytest.raises(KeyError, match="not one of the set parts"):
        m.set(head=0.0)
