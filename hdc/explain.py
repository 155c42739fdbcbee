"""`hdc inspect`: why a document got its label, level by level, mapped back to the text.

For a document that fits in one block, every level is kept: each token's word weight, each
phrase's weight in its sentence, each sentence's weight in the document, and for each retrieval
query every phrase's score and rank, with the selected phrases and their fusion weights. A
streamed (long) document keeps only its selected phrases and its best sentences, each shown with
some context, so a million-token document gives a small report.

Sentences are ranked by their evidence (`ranked_sentences`): their weight in each path of the
document level, dense and sparse, with each path counted by how much the prediction needs it.
The dense weight alone ranks by the dense path only, which over millions of sentences spreads
thin while the sparse path does not.

No torch here: inspection works from a checkpoint or from a bundle alike.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .config import InferenceConfig
from .data import BadInput, Document, iter_documents
from .errors import HdcError
from .explain_html import GENERATOR, render_html, render_index
from .io import check_overwrite, make_parent, write_atomic
from .predictor import Outcome, Predictor, load_predictor
from .schema import NEG, VALID, chosen_labels
from .text import ngram_bag

CONTEXT_CHARS = 160  # characters of context around a phrase or sentence in a summary


def _label_block(outcome: Outcome, labels, multilabel: bool, threshold: float) -> dict:
    p = outcome.probabilities
    return {
        "labels": chosen_labels(p, labels, multilabel, threshold),
        "probabilities": {label: round(float(v), 6) for label, v in zip(labels, p)},
    }


def _selected(outcome: Outcome) -> list[dict]:
    state = outcome.state
    rows = []
    for m in range(state.top_phrases.shape[0]):
        for r in range(state.top_phrases.shape[1]):
            if state.top_phrases[m, r] < 0:
                continue
            rows.append(
                {
                    "query": m,
                    "rank": r + 1,
                    "phrase": int(state.top_phrases[m, r]),
                    "span": [int(x) for x in state.top_spans[m, r]],
                    "score": float(state.top_scores[m, r]),
                    "fusion": float(outcome.fusion[m, r]),
                }
            )
    return rows


def path_shares(outcome: Outcome, predictor: Predictor) -> np.ndarray:
    """[1 + M] how much the prediction rests on the dense path and on each retrieval query: the
    drop in the predicted class's probability when that part alone is removed from the document
    state (the dense sum zeroed; the query's selection masked), normalised to sum to 1. Parts
    whose removal does not lower it get 0; if none does, all share equally. One batch of 2 + M
    runs of the head, which is small, whatever the document's length."""
    inputs = outcome.state.head_inputs()
    M = inputs["top_scores"].shape[1]
    variants = []
    for part in range(1 + M):
        variant = {name: value.copy() for name, value in inputs.items()}
        if part == 0:
            variant["dense_acc"][:] = 0
        else:
            variant["top_scores"][:, part - 1] = NEG
        variants.append(variant)
    probabilities, _ = predictor.classify_heads([inputs, *variants])
    label = int(probabilities[0].argmax())
    drops = np.maximum(probabilities[0, label] - probabilities[1:, label], 0)
    return drops / drops.sum() if drops.sum() > 0 else np.full(1 + M, 1 / (1 + M))


def ranked_sentences(outcome: Outcome, shares: np.ndarray) -> list[dict]:
    """Sentences by evidence, best first; each with its index, span, dense weight and evidence.

    evidence = shares[0] * dense weight + sum over queries m of shares[1 + m] * (the fusion
    weights of the phrases query m selected in the sentence), with `path_shares`. Over all
    sentences the evidence sums to 1. A whole document ranks every sentence. A streamed one ranks
    the best sentences by dense weight and those of the selected phrases: any other has no
    sparse part and less dense weight than each kept one, so the first `keep_sentences` of the
    ranking are the document's."""
    state = outcome.state
    rows: dict[int, dict] = {}

    def add(s: int, a: int, b: int, score: float) -> None:
        rows.setdefault(s, {"index": s, "span": [int(a), int(b)], "weight": state.sentence_weight(float(score))})

    if outcome.segments is not None:
        for s, (a, b) in enumerate(outcome.segments.sentence_spans):
            add(s, a, b, outcome.weights["sentence_scores"][s])
    for score, s, a, b in state.best_sentences:
        add(s, a, b, score)
    sparse: dict[int, float] = {}
    for m, r in zip(*np.nonzero(state.top_phrases >= 0)):
        s, a, b = (int(x) for x in state.top_sentences[m, r])
        add(s, a, b, state.top_sentence_scores[m, r])
        sparse[s] = sparse.get(s, 0.0) + float(shares[1 + m] * outcome.fusion[m, r])
    for s, row in rows.items():
        row["evidence"] = float(shares[0]) * row["weight"] + sparse.get(s, 0.0)
    return sorted(rows.values(), key=lambda row: (-row["evidence"], row["index"]))


def label_evidence(outcome: Outcome, predictor: Predictor, labels: list[int], top: int) -> dict[str, list[dict]]:
    """For each of `labels` (indices), the `top` sentences its logit leans on most through the
    n-grams: the drop in the label's logit when one sentence's n-grams leave the document's bag,
    all else kept. One head run per sentence (batched), so it is exact for the n-gram branch and
    the linear classifier whatever they learnt; the deep paths' evidence is `ranked_sentences`'.
    Each predicted label of a multi-label document gets its own, which one ranking cannot give.
    Whole documents only: a streamed one keeps no sentence's n-grams."""
    segments, inputs = outcome.segments, outcome.state.head_inputs()
    if segments is None or segments.ngrams is None or "ngram_ids" not in inputs or not labels:
        return {}
    ids, counts = inputs["ngram_ids"][0], inputs["ngram_counts"][0]
    order = np.argsort(ids, kind="stable")
    bounds = np.searchsorted(segments.phrase_sentence, np.arange(segments.num_sentences + 1))
    variants, sentences = [], []
    for s in range(segments.num_sentences):
        if bounds[s] == bounds[s + 1]:
            continue
        sentence_ids, sentence_counts = ngram_bag(segments.ngrams[bounds[s] : bounds[s + 1]].reshape(1, -1))
        real = sentence_ids[0] > 0
        where = order[np.searchsorted(ids, sentence_ids[0, real], sorter=order)]
        left = counts.copy()
        left[where] -= sentence_counts[0, real]
        variants.append(inputs | {"ngram_counts": left[None]})
        sentences.append(s)
    if not variants:
        return {}
    logits, _ = predictor.run_heads([inputs, *variants])
    drops = logits[0] - logits[1:]  # [S', C]
    evidence = {}
    for label in labels:
        best = np.argsort(-drops[:, label], kind="stable")[:top]
        evidence[predictor.labels[label]] = [
            {
                "index": sentences[i],
                "span": [int(x) for x in segments.sentence_spans[sentences[i]]],
                "drop": float(drops[i, label]),
            }
            for i in best
            if drops[i, label] > 0
        ]
    return evidence


def explain(outcome: Outcome, predictor: Predictor) -> dict:
    """The JSON-ready explanation of one classified document."""
    labels, multilabel = predictor.labels, predictor.info.multilabel
    state = outcome.state
    result = {outcome.item.key: outcome.item.name} | _label_block(
        outcome, labels, multilabel, predictor.settings.threshold
    )
    result |= {"tokens_total": state.tokens, "phrases_total": state.phrases, "sentences_total": state.sentences}
    shares = path_shares(outcome, predictor)
    result["path_shares"] = {"dense": float(shares[0]), "queries": [float(x) for x in shares[1:]]}
    selected = _selected(outcome)
    sentences = ranked_sentences(outcome, shares)
    if outcome.segments is None:  # streamed: a summary
        result["mode"] = "summary"
        result["selected"] = selected
        result["sentences"] = sentences[: max(state.keep_sentences, 1)]
        items = result["selected"] + result["sentences"]
        contexts = _contexts(outcome.item, [tuple(item["span"]) for item in items])
        for item in items:
            item["context"] = contexts[tuple(item["span"])]
        return result

    segments, weights = outcome.segments, outcome.weights
    scores = weights["phrase_scores"]  # [M, P]
    ranks = np.empty_like(scores, dtype=np.int64)
    for m in range(len(scores)):
        ranks[m, np.argsort(-scores[m], kind="stable")] = np.arange(1, scores.shape[1] + 1)
    chosen = {(s["query"], s["phrase"]): s for s in selected}
    phrases = []
    for p in range(segments.num_phrases):
        queries = []
        for m in range(len(scores)):
            real = bool(scores[m, p] > VALID)  # repeats of an earlier phrase are not ranked
            pick = chosen.get((m, p))
            queries.append(
                {
                    "query": m,
                    "score": float(scores[m, p]) if real else None,
                    "rank": int(ranks[m, p]) if real else None,
                    "selected_rank": pick["rank"] if pick else None,
                    "fusion": pick["fusion"] if pick else 0.0,
                }
            )
        phrases.append(
            {
                "index": p,
                "sentence": int(segments.phrase_sentence[p]),
                "span": [int(x) for x in segments.phrase_spans[p]],
                "weight": float(weights["phrase_weights"][p]),
                "selected": any((m, p) in chosen for m in range(len(scores))),
                "queries": queries,
            }
        )
    real = segments.tokens > 0
    tokens = [
        {"span": [int(a), int(b)], "weight": float(w), "phrase": int(p)}
        for p, (a, b), w in zip(np.nonzero(real)[0], segments.token_spans[real], weights["word_weights"][real])
    ]
    result["mode"] = "full"
    result["sentences"] = sorted(sentences, key=lambda row: row["index"])
    chosen = [predictor.labels.index(label) for label in result["labels"]]
    result["label_evidence"] = label_evidence(outcome, predictor, chosen, predictor.settings.top_sentences)
    result["phrases"] = phrases
    result["tokens"] = tokens
    result["selected"] = selected
    return result


def _contexts(item: Document, spans: list[tuple[int, int]]) -> dict[tuple[int, int], dict]:
    """Each span's text with CONTEXT_CHARS of context either side, read from the document in
    one more pass over its chunks: only these windows are held in memory."""
    windows = {span: [] for span in spans}
    offset = 0
    for chunk in item.chunks():
        end = offset + len(chunk)
        for (a, b), pieces in windows.items():
            lo, hi = max(a - CONTEXT_CHARS, offset), min(b + CONTEXT_CHARS, end)
            if lo < hi:
                pieces.append((lo, chunk[lo - offset : hi - offset]))
        offset = end
    contexts = {}
    for (a, b), pieces in windows.items():
        start = pieces[0][0] if pieces else a
        window = "".join(piece for _, piece in pieces)
        contexts[(a, b)] = {
            "before": window[: a - start],
            "text": window[a - start : b - start],
            "after": window[b - start :],
        }
    return contexts


def _span_text(item: dict, text: str | None) -> str:
    return item["context"]["text"] if text is None else text[item["span"][0] : item["span"][1]]


def summary_text(explanation: dict, text: str | None, top: int, phrases: int) -> str:
    """A short plain-text summary: the label, the `top` sentences with the most evidence, and the
    first `phrases` selected phrases of each query. `text` is the document for a full
    explanation; a summary carries its own snippets."""
    name = explanation.get("path") or explanation.get("id")
    probabilities = sorted(explanation["probabilities"].items(), key=lambda kv: -kv[1])
    lines = [
        f"{name}: {', '.join(explanation['labels']) or '(no label)'}  ("
        + ", ".join(f"{label} {p:.3f}" for label, p in probabilities[:3])
        + ")"
    ]
    ranked = sorted(explanation["sentences"], key=lambda s: -s["evidence"])
    lines.append(f"top sentences (of {explanation['sentences_total']}):")
    for s in ranked[:top]:
        lines.append(f"  {s['evidence']:.3f}  {_clip(_span_text(s, text))}")
    if len(ranked) > top:
        lines.append(f"  … {explanation['sentences_total'] - top} more (--top)")
    for label, rows in explanation.get("label_evidence", {}).items():
        lines.append(f"why {label}, by its n-grams (the logit's drop without the sentence):")
        lines += [f"  {row['drop']:+.3f}  {_clip(_span_text(row, text))}" for row in rows[:top]]
    lines.append("selected phrases, per query:")
    for query in sorted({s["query"] for s in explanation["selected"]}):
        picks = sorted((s for s in explanation["selected"] if s["query"] == query), key=lambda s: s["rank"])
        for s in picks[:phrases]:
            lines.append(
                f"  q{query + 1} #{s['rank']}  score {s['score']:+.2f}  weight {s['fusion']:.3f}  "
                + _clip(_span_text(s, text))
            )
        if len(picks) > phrases:
            lines.append(f"  q{query + 1} … {len(picks) - phrases} more (--phrases)")
    return "\n".join(lines)


def _clip(text: str, n: int = 100) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return json.dumps(text if len(text) <= n else text[: n - 1] + "…", ensure_ascii=False)


# ---------------------------------------------------------------------------------------------


def _slug(name: str, index: int) -> str:
    return f"{index:04d}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[:60] or "document")


def _ours(head: bytes) -> bool:
    """A page or a JSON report that `hdc inspect` wrote, which it may replace."""
    return GENERATOR.encode() in head or (b'"probabilities"' in head and b'"labels"' in head)


def _write(path: Path, data: str, flag: str) -> None:
    check_overwrite(path, _ours, flag)
    write_atomic(path, data)
    print(f"inspect: wrote {path}", file=sys.stderr)


def inspect(
    model: str | Path,
    inputs: list[str],
    json_path: str | Path | None = None,
    html_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    settings: InferenceConfig = InferenceConfig(),
) -> tuple[list[str], int]:
    """Explain each input. With one input, --json/--html write its report; with --out-dir, every
    input gets DIR/NNNN-name.json and .html plus DIR/index.html. Returns the text summaries
    (printed when no file is asked for) and the number of inputs that failed."""
    for path, flag in ((json_path, "--json"), (html_path, "--html")):
        if path is not None:  # before the model runs: a bad path fails at once
            check_overwrite(make_parent(path, flag), _ours, flag)
    if out_dir is not None:
        index = make_parent(Path(out_dir) / "index.html", "--out-dir")
        check_overwrite(index, _ours, "--out-dir")
        out_dir = index.parent
    predictor = load_predictor(model, settings)
    items: Iterable[Document | BadInput] = iter_documents(inputs)
    if out_dir is None and (json_path or html_path):
        items = list(items)
        if len(items) != 1:
            raise HdcError(f"--json/--html take one document, got {len(items)}; use --out-dir for several")
    summaries, errors, rows = [], 0, []
    outcomes = predictor.run(items, weights=True, keep_sentences=max(settings.top_sentences, 10))
    for index, outcome in enumerate(outcomes):
        name = outcome.item.name
        if not outcome.ok:
            errors += 1
            rows.append({"name": name, "error": outcome.error})
            summaries.append(f"{name}: error: {outcome.error}")
            continue
        explanation = explain(outcome, predictor)
        text = outcome.item.read() if explanation["mode"] == "full" else None
        summaries.append(summary_text(explanation, text, settings.top_sentences, settings.top_phrases))
        if out_dir is not None:
            stem = out_dir / _slug(name, index)
            _write(stem.with_suffix(".json"), json.dumps(explanation, ensure_ascii=False), "--out-dir")
            _write(stem.with_suffix(".html"), render_html(explanation, text), "--out-dir")
            best = max(explanation["probabilities"].values())
            rows.append(
                {
                    "name": name,
                    "page": stem.with_suffix(".html").name,
                    "labels": explanation["labels"],
                    "probability": best,
                }
            )
        if json_path:
            _write(Path(json_path), json.dumps(explanation, ensure_ascii=False, indent=1), "--json")
        if html_path:
            _write(Path(html_path), render_html(explanation, text), "--html")
    if out_dir is not None:
        _write(out_dir / "index.html", render_index(rows), "--out-dir")
    return summaries, errors
