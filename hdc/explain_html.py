"""The inspection page: one self-contained HTML page per document (no scripts from anywhere, no
network), from the explanation hdc.explain builds, and an index page for several."""

from __future__ import annotations

import html

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
.t { border-radius: 2px; background: rgba(var(--heat), var(--d)); }
#path-sparse:checked ~ .doc .t { background: rgba(var(--heat), var(--s)); }
.toggle { position: absolute; opacity: 0; }
.levels { border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px 16px 12px; margin-bottom: 20px; font-size: 14px; }
.levels h2 { margin: 8px 0; }
.switch label { display: inline-block; padding: 3px 12px; border: 1px solid #9ca3af; cursor: pointer; font-size: 13px; }
.switch label:first-child { border-radius: 6px 0 0 6px; } .switch label:last-child { border-radius: 0 6px 6px 0; border-left: 0; }
#path-dense:checked ~ .levels label[for=path-dense], #path-sparse:checked ~ .levels label[for=path-sparse] { background: #1f2937; color: #fff; }
#path-dense:focus-visible ~ .levels label[for=path-dense], #path-sparse:focus-visible ~ .levels label[for=path-sparse] { outline: 2px solid #2563eb; }
.levels dl { display: grid; grid-template-columns: max-content 1fr; gap: 6px 14px; margin: 10px 0 0; }
.levels dt { font-weight: 700; }
.levels dd { margin: 0; }
.levels .means { color: #6b7280; font-size: 12px; }
.levels .sparse, #path-sparse:checked ~ .levels .dense { display: none; }
#path-sparse:checked ~ .levels .sparse { display: block; }
.sel { border: 2px solid; border-radius: 4px; padding: 0 1px; }
.badge { font-size: 10px; font-weight: 700; color: #fff; border-radius: 3px; padding: 0 3px; margin-left: 2px; vertical-align: super; line-height: 1; }
section h2 { font-size: 15px; margin: 24px 0 8px; }
.snippet { border-left: 4px solid #e5e7eb; padding: 6px 12px; margin: 8px 0; background: #fafafa; }
.snippet .ctx { color: #6b7280; }
.snippet .head { font-size: 12px; color: #4b5563; margin-bottom: 2px; }
.snippet mark { background: rgba(var(--heat), 0.45); }
.why { border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px 16px; margin-bottom: 20px; background: #fffbeb; }
.why h2 { margin: 8px 0; }
.why ol { margin: 4px 0 12px; padding-left: 22px; }
.why .meta { color: #6b7280; font-size: 12px; }
@media (max-width: 640px) { main { padding: 12px; } .sentence { grid-template-columns: 40px 1fr; gap: 6px; } .levels dl { grid-template-columns: 1fr; } }
table.index { border-collapse: collapse; width: 100%; font-size: 14px; }
table.index td, table.index th { border-bottom: 1px solid #e5e7eb; padding: 6px 8px; text-align: left; }
"""


GENERATOR = '<meta name="generator" content="hdc inspect">'  # how hdc knows a page is its own


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        + GENERATOR
        + f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
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
        parts.append('<span><span class="swatch"></span> a word\'s weight in the path the switch below shows</span>')
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
    span = lambda item: text[item["span"][0] : item["span"][1]]  # noqa: E731
    ranked = sorted(explanation["sentences"], key=lambda s: -s["evidence"])
    sentence_of = {p["index"]: p["sentence"] for p in explanation["phrases"]}
    picks = explanation["selected"]
    why = _why(
        explanation,
        [(f"s{s['index']}", span(s), s) for s in ranked],
        [(f"s{sentence_of[picks[i]['phrase']]}", span(picks[i]), picks[i]) for i in _by_rank(picks)],
        {
            label: [(f"s{row['index']}", span(row), row) for row in rows]
            for label, rows in explanation.get("label_evidence", {}).items()
        },
    )
    heat = WordHeat(explanation)
    return _page(name, head + _levels(explanation, text, heat) + why + _full_body(explanation, text, heat))


PLAIN_BELOW = 0.02  # a sentence with less evidence than this share of the top sentence's is not tinted
WHY_SENTENCES = 5  # the sentences the "why" panel ranks


def _why(
    explanation: dict,
    sentences: list[tuple[str, str, dict]],
    picks: list[tuple[str, str, dict]],
    by_label: dict[str, list[tuple[str, str, dict]]] | None = None,
) -> str:
    """The ranked answer to "why this label", at the top of the page: the sentences with the most
    evidence and the phrases the queries selected, best first, then each label's own sentences
    (`label_evidence`); each (anchor, text, its entry) a link to its place on the page."""
    label = ", ".join(explanation["labels"]) or "(no label)"

    def items(entries: list[tuple[str, str, dict]], meta) -> str:
        return "".join(
            f'<li><a href="#{anchor}">{html.escape(_clip(text))}</a> <span class="meta">{meta(entry)}</span></li>'
            for anchor, text, entry in entries[:WHY_SENTENCES]
        )

    ranked = items(sentences, lambda s: f"evidence {s['evidence']:.3f}")
    selected = items(picks, lambda s: f"query {s['query'] + 1}, rank {s['rank']}, weight {s['fusion']:.3f}")

    def drop(row: dict) -> str:
        return f"drop {row['drop']:+.3f}"

    labels = "".join(
        f"<h3>{html.escape(name)}</h3><ol>{items(rows, drop)}</ol>" for name, rows in (by_label or {}).items() if rows
    )
    if labels:
        labels = "<p>Each label's own sentences, by its n-grams (its logit's drop without the sentence):</p>" + labels
    return (
        f'<section class="why"><h2>Why “{html.escape(label)}”</h2>'
        f"<p>The sentences with the most evidence, best first:</p><ol>{ranked}</ol>"
        f"<p>The phrases the sparse path selected:</p><ol>{selected}</ol>{labels}</section>"
    )


def _by_rank(picks: list[dict]) -> list[int]:
    """Positions of the selected phrases, best rank first, query 1 before query 2 on a tie."""
    return sorted(range(len(picks)), key=lambda i: (picks[i]["rank"], picks[i]["query"]))


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class WordHeat:
    """Each word's weight in the document, through the dense path and through the sparse one,
    each scaled to its own maximum. A word's weight in its phrase times, for the dense path, its
    phrase's weight in the sentence and its sentence's weight in the document; for the sparse
    path, the fusion weights of the queries that selected its phrase, each counted by the share
    of the prediction that query carries. Subword pieces are merged into words ("apat|hetic" is
    one word), whose heat is the sum of its pieces'."""

    def __init__(self, explanation: dict):
        sentences, phrases = explanation["sentences"], explanation["phrases"]
        shares = explanation["path_shares"]["queries"]
        pieces: dict[tuple[int, int], list[float]] = {}
        for t in explanation["tokens"]:
            a, b = t["span"]
            if a == b:
                continue  # a lone word-start marker: no characters to paint
            phrase = phrases[t["phrase"]]
            dense = t["weight"] * phrase["weight"] * sentences[phrase["sentence"]]["weight"]
            sparse = t["weight"] * sum(q["fusion"] * shares[q["query"]] for q in phrase["queries"])
            heat = pieces.setdefault((a, b), [0.0, 0.0])  # bytes of one character share its span
            heat[0] += dense
            heat[1] += sparse
        # Touching pieces are one word. Inside a phrase its pieces are painted as one span; a word
        # that a phrase boundary cuts gets the same tint on both sides.
        words, word_of, last = [], {}, None
        for span in sorted(pieces):
            if last is None or last[1] != span[0]:
                words.append([0.0, 0.0])
            words[-1][0] += pieces[span][0]
            words[-1][1] += pieces[span][1]
            word_of[span], last = len(words) - 1, span
        self.spans: dict[int, list[tuple[int, int]]] = {}  # phrase -> its words' spans
        for t in sorted(explanation["tokens"], key=lambda t: t["span"]):
            span = tuple(t["span"])
            if span not in word_of:
                continue
            spans = self.spans.setdefault(t["phrase"], [])
            if spans and spans[-1][1] == span[0]:  # the same word, in the same phrase
                word_of[(spans[-1][0], span[1])] = word_of[span]
                spans[-1] = (spans[-1][0], span[1])
            elif not spans or spans[-1] != span:
                spans.append(span)
        peaks = [max((w[k] for w in words), default=0.0) or 1.0 for k in (0, 1)]
        self.heat = {span: (words[w][0] / peaks[0], words[w][1] / peaks[1]) for span, w in word_of.items()}

    def top(self, path: int, n: int) -> list[tuple[tuple[int, int], float]]:
        """The n hottest words as painted (pieces merged), with their heat in one path."""
        words = {span for spans in self.spans.values() for span in spans}
        return sorted(
            ((span, self.heat[span][path]) for span in words if self.heat[span][path] > 0), key=lambda x: -x[1]
        )[:n]


LEVEL_ITEMS = 3  # items the levels panel lists per level and path


def _levels(explanation: dict, text: str, heat: WordHeat) -> str:
    """The weights of each level, word to document, for one path at a time. Two radio buttons
    switch the panel and the text's heat between the dense and the sparse path, with CSS alone:
    no script, no hover."""
    sentences, phrases = explanation["sentences"], explanation["phrases"]
    shares = explanation["path_shares"]
    quote = lambda a, b: f"“{html.escape(_clip(text[a:b], 60))}”"  # noqa: E731

    def items(rows: list[str]) -> str:
        return "; ".join(rows) or "none"

    dense = {
        "document": f"dense path {shares['dense']:.0%} of the prediction",
        "sentence": items(
            [
                f'<a href="#s{x["index"]}">{quote(*x["span"])}</a> {x["weight"]:.3f}'
                for x in sorted(sentences, key=lambda x: -x["weight"])[:LEVEL_ITEMS]
            ]
        ),
        "phrase": items(
            [
                f"{quote(*p['span'])} {p['weight'] * sentences[p['sentence']]['weight']:.3f}"
                for p in sorted(phrases, key=lambda p: -p["weight"] * sentences[p["sentence"]]["weight"])[:LEVEL_ITEMS]
            ]
        ),
        "word": items([f"{quote(*span)} {h:.2f}" for span, h in heat.top(0, LEVEL_ITEMS)]),
    }
    picks = sorted(explanation["selected"], key=lambda x: (x["rank"], x["query"]))
    sparse_sentences: dict[int, float] = {}
    for x in picks:
        sentence = phrases[x["phrase"]]["sentence"]
        sparse_sentences[sentence] = sparse_sentences.get(sentence, 0.0) + x["fusion"] * shares["queries"][x["query"]]
    sparse = {
        "document": items([f"query {m + 1} {share:.0%}" for m, share in enumerate(shares["queries"])]),
        "sentence": items(
            [
                f'<a href="#s{i}">{quote(*sentences[i]["span"])}</a> {w:.3f}'
                for i, w in sorted(sparse_sentences.items(), key=lambda x: -x[1])[:LEVEL_ITEMS]
            ]
        ),
        "phrase": items(
            [
                f"{quote(*x['span'])} query {x['query'] + 1}, rank {x['rank']}, fusion {x['fusion']:.3f}"
                for x in picks[:LEVEL_ITEMS]
            ]
        ),
        "word": items([f"{quote(*span)} {h:.2f}" for span, h in heat.top(1, LEVEL_ITEMS)]),
    }
    means = {
        "document": "how the prediction splits between the dense path and each retrieval query",
        "sentence": "how much each sentence counts in the document",
        "phrase": "how much each phrase counts in the document: its weight in its sentence times the sentence's"
        " (dense), or the phrases the queries retrieved and their fusion weights (sparse)",
        "word": "how much each word counts in its phrase, carried up through the path",
    }
    rows = "".join(
        f'<dt>{level}</dt><dd><div class="means">{means[level]}</div>'
        f'<div class="dense">{dense[level]}</div><div class="sparse">{sparse[level]}</div></dd>'
        for level in ("document", "sentence", "phrase", "word")
    )
    return (
        '<input type="radio" name="path" id="path-dense" class="toggle" checked>'
        '<input type="radio" name="path" id="path-sparse" class="toggle">'
        '<section class="levels"><h2>Weights at each level</h2>'
        '<div class="switch"><label for="path-dense">dense path</label><label for="path-sparse">sparse path</label></div>'
        f"<dl>{rows}</dl></section>"
    )


def _full_body(explanation: dict, text: str, heat: WordHeat) -> str:
    sentences = explanation["sentences"]
    phrases = explanation["phrases"]
    top_sentence = max((s["evidence"] for s in sentences), default=1.0) or 1.0
    # A sentence with (next to) no evidence stays plain, so the eye goes where the label came from.
    plain = {s["index"] for s in sentences if s["evidence"] < PLAIN_BELOW * top_sentence}
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
            for ta, tb in [] if s["index"] in plain else heat.spans.get(p["index"], []):
                inner.append(html.escape(text[c:ta]))
                d, sp = (0.04 + 0.81 * h**0.5 if h > 0 else 0.0 for h in heat.heat[(ta, tb)])
                inner.append(f'<span class="t" style="--d:{d:.2f};--s:{sp:.2f}">{html.escape(text[ta:tb])}</span>')
                c = tb
            inner.append(html.escape(text[c:pb]))
            body = "".join(inner)
            for pick in sorted(picks.get(p["index"], []), key=lambda x: x["query"]):
                colour = QUERY_COLOURS[pick["query"] % len(QUERY_COLOURS)]
                body = (
                    f'<span class="sel" style="border-color:{colour}">{body}</span>'
                    f'<span class="badge" style="background:{colour}">q{pick["query"] + 1}·{pick["rank"]}</span>'
                )
            pieces.append(body)
            cursor = pb
        pieces.append(html.escape(text[cursor:b]))
        width = 100 * s["evidence"] / top_sentence
        out.append(
            f'<div class="sentence" id="s{s["index"]}"><div class="margin"><div class="mbar" style="width:{width:.1f}%"></div>'
            f'<div class="w">{s["evidence"]:.3f}</div></div>'
            f'<div class="text">{"".join(pieces)}</div></div>'
        )
    return f'<div class="doc">{"".join(out)}</div>'


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
    # The "why" panel of a streamed document: the same ranking as a whole one's, each entry a
    # link to its snippet below (the text itself is not on the page).
    why = _why(
        explanation,
        [(f"s{i}", s["context"]["text"], s) for i, s in enumerate(sentences)],
        [(f"p{i}", picks[i]["context"]["text"], picks[i]) for i in _by_rank(picks)],
    )
    parts = [
        why,
        "<p>This document was streamed: the page shows the phrases the sparse path selected and the "
        "sentences with the most evidence, each with context.</p>",
        "<section><h2>Top sentences</h2>",
    ]
    for i, s in enumerate(sentences):
        head = f"<b>sentence {s['index'] + 1:,}</b> · evidence {s['evidence']:.4f} · dense weight {s['weight']:.4f}"
        parts.append(_snippet(s, head, f"s{i}", "#0f766e"))
    parts.append("</section><section><h2>Selected phrases</h2>")
    for i, s in enumerate(picks):
        colour = QUERY_COLOURS[s["query"] % len(QUERY_COLOURS)]
        head = f"<b>query {s['query'] + 1}, rank {s['rank']}</b> · score {s['score']:.2f} · fusion weight {s['fusion']:.3f}"
        parts.append(_snippet(s, head, f"p{i}", colour))
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
