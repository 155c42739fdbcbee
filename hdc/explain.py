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

import html
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .data import BadInput, Document, iter_documents
from .errors import HdcError
from .io import write_atomic
from .predict import Outcome, Predictor, load_predictor
from .stream import NEG, VALID

CONTEXT_CHARS = 160  # characters of context around a phrase or sentence in a summary


def _label_block(outcome: Outcome, labels, multilabel: bool, threshold: float) -> dict:
    p = outcome.probabilities
    chosen = [labels[i] for i in np.flatnonzero(p >= threshold)] if multilabel else [labels[int(p.argmax())]]
    return {"labels": chosen, "probabilities": {label: round(float(v), 6) for label, v in zip(labels, p)}}


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


def explain(outcome: Outcome, predictor: Predictor, threshold: float = 0.5) -> dict:
    """The JSON-ready explanation of one classified document."""
    labels, multilabel = predictor.labels, predictor.info.multilabel
    state = outcome.state
    result = {outcome.item.key: outcome.item.name} | _label_block(outcome, labels, multilabel, threshold)
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


def summary_text(explanation: dict, text: str | None, top: int) -> str:
    """A short plain-text summary: the label, the top sentences and the selected phrases.
    `text` is the document for a full explanation; a summary carries its own snippets."""
    name = explanation.get("path") or explanation.get("id")
    probabilities = sorted(explanation["probabilities"].items(), key=lambda kv: -kv[1])
    lines = [
        f"{name}: {', '.join(explanation['labels']) or '(no label)'}  ("
        + ", ".join(f"{label} {p:.3f}" for label, p in probabilities[:3])
        + ")"
    ]
    lines.append(f"top sentences (of {explanation['sentences_total']}):")
    for s in sorted(explanation["sentences"], key=lambda s: -s["evidence"])[:top]:
        lines.append(f"  {s['evidence']:.3f}  {_clip(_span_text(s, text))}")
    lines.append("selected phrases:")
    for s in sorted(explanation["selected"], key=lambda s: (s["query"], s["rank"]))[: top * 2]:
        lines.append(
            f"  q{s['query'] + 1} #{s['rank']}  score {s['score']:+.2f}  weight {s['fusion']:.3f}  {_clip(_span_text(s, text))}"
        )
    return "\n".join(lines)


def _clip(text: str, n: int = 100) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return json.dumps(text if len(text) <= n else text[: n - 1] + "…", ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# HTML: one self-contained page, no scripts from anywhere, no network

QUERY_COLOURS = ("#2563eb", "#9333ea", "#059669", "#dc2626", "#d97706", "#0891b2", "#db2777", "#4b5563")

CSS = """
:root { --heat: 255, 138, 0; }
* { box-sizing: border-box; }
body { font: 16px/1.75 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2937; margin: 0; background: #f8fafc; }
main { max-width: 960px; margin: 0 auto; padding: 24px 28px 64px; background: #fff; min-height: 100vh; box-shadow: 0 0 0 1px #e5e7eb; }
header h1 { font-size: 18px; margin: 0 0 4px; word-break: break-all; }
header .meta { color: #6b7280; font-size: 13px; margin-bottom: 12px; }
.probs { display: grid; grid-template-columns: max-content 1fr max-content; gap: 3px 10px; align-items: center; font-size: 14px; margin-bottom: 16px; }
.probs .bar { height: 10px; background: #e5e7eb; border-radius: 5px; overflow: hidden; }
.probs .bar span { display: block; height: 100%; background: #2563eb; }
.probs .chosen { font-weight: 700; }
.legend { display: flex; flex-wrap: wrap; gap: 18px; font-size: 13px; color: #4b5563; padding: 10px 12px; background: #f3f4f6; border-radius: 8px; margin-bottom: 20px; }
.legend .swatch { display: inline-block; width: 90px; height: 12px; vertical-align: middle; border-radius: 3px; background: linear-gradient(90deg, rgba(var(--heat), 0.04), rgba(var(--heat), 0.85)); }
.legend .mbar { display: inline-block; width: 36px; height: 10px; background: #0f766e; border-radius: 2px; vertical-align: middle; }
.legend .outline { display: inline-block; padding: 0 4px; border: 2px solid; border-radius: 4px; line-height: 1.3; }
.sentence { display: grid; grid-template-columns: 64px 1fr; gap: 12px; padding: 2px 0; }
.margin { position: relative; padding-top: 9px; }
.margin .mbar { height: 8px; background: #0f766e; border-radius: 2px; min-width: 1px; }
.margin .w { font-size: 10px; color: #6b7280; line-height: 1; margin-top: 2px; }
.text { white-space: pre-wrap; }
.t { border-radius: 2px; }
.sel { border: 2px solid; border-radius: 4px; padding: 0 1px; }
.badge { font-size: 10px; font-weight: 700; color: #fff; border-radius: 3px; padding: 0 3px; margin-left: 2px; vertical-align: super; line-height: 1; }
section h2 { font-size: 15px; margin: 24px 0 8px; }
.snippet { border-left: 4px solid #e5e7eb; padding: 6px 12px; margin: 8px 0; background: #fafafa; }
.snippet .ctx { color: #6b7280; }
.snippet .head { font-size: 12px; color: #4b5563; margin-bottom: 2px; }
.snippet mark { background: rgba(var(--heat), 0.45); }
table.index { border-collapse: collapse; width: 100%; font-size: 14px; }
table.index td, table.index th { border-bottom: 1px solid #e5e7eb; padding: 6px 8px; text-align: left; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _header(explanation: dict) -> str:
    name = explanation.get("path") or explanation.get("id")
    rows = []
    for label, p in sorted(explanation["probabilities"].items(), key=lambda kv: -kv[1]):
        cls = ' class="chosen"' if label in explanation["labels"] else ""
        rows.append(
            f'<span{cls}>{html.escape(label)}</span><span class="bar"><span style="width:{100 * p:.1f}%"></span></span><span>{p:.3f}</span>'
        )
    meta = (
        f"label: <b>{html.escape(', '.join(explanation['labels']) or '(none)')}</b> · "
        f"{explanation['tokens_total']:,} tokens · {explanation['sentences_total']:,} sentences · "
        f"{explanation['phrases_total']:,} phrases"
    )
    return f'<header><h1>{html.escape(str(name))}</h1><div class="meta">{meta}</div><div class="probs">{"".join(rows)}</div></header>'


def _legend(queries: int, full: bool) -> str:
    parts = []
    if full:
        parts.append('<span><span class="swatch"></span> word weight × phrase weight × sentence weight</span>')
    parts.append('<span><span class="mbar"></span> sentence evidence: its share of the document, both paths</span>')
    for m in range(queries):
        colour = QUERY_COLOURS[m % len(QUERY_COLOURS)]
        parts.append(
            f'<span><span class="outline" style="border-color:{colour}">phrase</span>'
            f'<span class="badge" style="background:{colour}">q{m + 1}·rank</span> selected by query {m + 1}</span>'
        )
    return f'<div class="legend">{"".join(parts)}</div>'


def render_html(explanation: dict, text: str | None) -> str:
    queries = max([s["query"] + 1 for s in explanation["selected"]] or [1])
    name = str(explanation.get("path") or explanation.get("id"))
    head = _header(explanation) + _legend(queries, explanation["mode"] == "full")
    if explanation["mode"] == "summary" or text is None:
        return _page(name, head + _summary_body(explanation))
    return _page(name, head + _full_body(explanation, text))


def _full_body(explanation: dict, text: str) -> str:
    sentences = explanation["sentences"]
    phrases = explanation["phrases"]
    top_sentence = max((s["evidence"] for s in sentences), default=1.0) or 1.0
    # The heat of a token is its share of the whole hierarchy, scaled to the document's maximum.
    heat: dict[tuple[int, int], float] = {}
    for t in explanation["tokens"]:
        a, b = t["span"]
        if a == b:
            continue  # a lone word-start marker: no characters to paint
        phrase = phrases[t["phrase"]]
        value = t["weight"] * phrase["weight"] * sentences[phrase["sentence"]]["weight"]
        heat[(a, b)] = heat.get((a, b), 0.0) + value  # bytes of one character share its span
    peak = max(heat.values(), default=1.0) or 1.0
    tokens_by_phrase: dict[int, list[tuple[int, int]]] = {}
    for t in explanation["tokens"]:
        span = tuple(t["span"])
        if span in heat and span not in tokens_by_phrase.get(t["phrase"], []):
            tokens_by_phrase.setdefault(t["phrase"], []).append(span)
    picks: dict[int, list[dict]] = {}
    for s in explanation["selected"]:
        picks.setdefault(s["phrase"], []).append(s)

    out = []
    by_sentence: dict[int, list[dict]] = {}
    for p in phrases:
        by_sentence.setdefault(p["sentence"], []).append(p)
    for s in sentences:
        a, b = s["span"]
        pieces, cursor = [], a
        for p in by_sentence.get(s["index"], []):
            pa, pb = p["span"]
            pieces.append(html.escape(text[cursor:pa]))
            inner, c = [], pa
            for ta, tb in tokens_by_phrase.get(p["index"], []):
                inner.append(html.escape(text[c:ta]))
                alpha = 0.04 + 0.81 * (heat[(ta, tb)] / peak) ** 0.5
                inner.append(
                    f'<span class="t" style="background:rgba(var(--heat),{alpha:.2f})" '
                    f'title="{heat[(ta, tb)]:.2e}">{html.escape(text[ta:tb])}</span>'
                )
                c = tb
            inner.append(html.escape(text[c:pb]))
            body = "".join(inner)
            for pick in sorted(picks.get(p["index"], []), key=lambda x: x["query"]):
                colour = QUERY_COLOURS[pick["query"] % len(QUERY_COLOURS)]
                body = (
                    f'<span class="sel" style="border-color:{colour}" title="query {pick["query"] + 1}, rank '
                    f'{pick["rank"]}, score {pick["score"]:.2f}, fusion weight {pick["fusion"]:.3f}">{body}</span>'
                    f'<span class="badge" style="background:{colour}">q{pick["query"] + 1}·{pick["rank"]}</span>'
                )
            pieces.append(body)
            cursor = pb
        pieces.append(html.escape(text[cursor:b]))
        width = 100 * s["evidence"] / top_sentence
        out.append(
            f'<div class="sentence" id="s{s["index"]}"><div class="margin" title="evidence {s["evidence"]:.4f}, '
            f'dense weight {s["weight"]:.4f}"><div class="mbar" style="width:{width:.1f}%"></div>'
            f'<div class="w">{s["evidence"]:.3f}</div></div>'
            f'<div class="text">{"".join(pieces)}</div></div>'
        )
    return "".join(out)


def _snippet(item: dict, head: str, anchor: str, colour: str = "#e5e7eb") -> str:
    context = item.get("context") or {"before": "", "text": "", "after": ""}
    return (
        f'<div class="snippet" id="{anchor}" style="border-left-color:{colour}"><div class="head">{head} · '
        f'characters {item["span"][0]:,}–{item["span"][1]:,}</div><span class="ctx">…{html.escape(context["before"])}</span>'
        f'<mark>{html.escape(context["text"])}</mark><span class="ctx">{html.escape(context["after"])}…</span></div>'
    )


def _summary_body(explanation: dict) -> str:
    picks = sorted(explanation["selected"], key=lambda s: (s["query"], s["rank"]))
    sentences = sorted(explanation["sentences"], key=lambda s: -s["evidence"])
    links = " ".join(f'<a href="#p{i}">q{s["query"] + 1}·{s["rank"]}</a>' for i, s in enumerate(picks))
    parts = [
        f"<p>This document was streamed: the page shows the phrases the sparse path selected and the "
        f"sentences with the most evidence, each with context. Jump to: {links}</p>",
        "<section><h2>Selected phrases</h2>",
    ]
    for i, s in enumerate(picks):
        colour = QUERY_COLOURS[s["query"] % len(QUERY_COLOURS)]
        head = f"<b>query {s['query'] + 1}, rank {s['rank']}</b> · score {s['score']:.2f} · fusion weight {s['fusion']:.3f}"
        parts.append(_snippet(s, head, f"p{i}", colour))
    parts.append("</section><section><h2>Top sentences</h2>")
    for i, s in enumerate(sentences):
        head = f"<b>sentence {s['index'] + 1:,}</b> · evidence {s['evidence']:.4f} · dense weight {s['weight']:.4f}"
        parts.append(_snippet(s, head, f"s{i}", "#0f766e"))
    parts.append("</section>")
    return "".join(parts)


def render_index(rows: list[dict]) -> str:
    lines = ['<table class="index"><tr><th>document</th><th>label</th><th>probability</th></tr>']
    for row in rows:
        if "error" in row:
            lines.append(
                f'<tr><td>{html.escape(row["name"])}</td><td colspan="2">error: {html.escape(row["error"])}</td></tr>'
            )
            continue
        lines.append(
            f'<tr><td><a href="{html.escape(row["page"])}">{html.escape(row["name"])}</a></td>'
            f"<td>{html.escape(', '.join(row['labels']))}</td><td>{row['probability']:.3f}</td></tr>"
        )
    lines.append("</table>")
    return _page("hdc inspect", "<header><h1>hdc inspect</h1></header>" + "".join(lines))


# ---------------------------------------------------------------------------------------------


def _slug(name: str, index: int) -> str:
    return f"{index:04d}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[:60] or "document")


def inspect(
    model: str | Path,
    inputs: list[str],
    json_path: str | Path | None = None,
    html_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    top: int = 5,
    threshold: float = 0.5,
    block_tokens: int = 65536,
    threads: int = 0,
) -> tuple[list[str], int]:
    """Explain each input. With one input, --json/--html write its report; with --out-dir, every
    input gets DIR/NNNN-name.json and .html plus DIR/index.html. Returns the text summaries
    (printed when no file is asked for) and the number of inputs that failed."""
    predictor = load_predictor(model, threads)
    items: Iterable[Document | BadInput] = iter_documents(inputs)
    if out_dir is None and (json_path or html_path):
        items = list(items)
        if len(items) != 1:
            raise HdcError(f"--json/--html take one document, got {len(items)}; use --out-dir for several")
    summaries, errors, rows = [], 0, []
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    outcomes = predictor.run(items, block_tokens=block_tokens, weights=True, keep_sentences=max(top, 10))
    for index, outcome in enumerate(outcomes):
        name = outcome.item.name
        if not outcome.ok:
            errors += 1
            rows.append({"name": name, "error": outcome.error})
            summaries.append(f"{name}: error: {outcome.error}")
            continue
        explanation = explain(outcome, predictor, threshold)
        text = outcome.item.read() if explanation["mode"] == "full" else None
        summaries.append(summary_text(explanation, text, top))
        if out_dir is not None:
            stem = Path(out_dir) / _slug(name, index)
            write_atomic(stem.with_suffix(".json"), json.dumps(explanation, ensure_ascii=False))
            write_atomic(stem.with_suffix(".html"), render_html(explanation, text))
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
            write_atomic(json_path, json.dumps(explanation, ensure_ascii=False, indent=1))
        if html_path:
            write_atomic(html_path, render_html(explanation, text))
    if out_dir is not None:
        write_atomic(Path(out_dir) / "index.html", render_index(rows))
    return summaries, errors
