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
.t { border-radius: 2px; }
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
@media (max-width: 640px) { main { padding: 12px; } .sentence { grid-template-columns: 40px 1fr; gap: 6px; } }
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
    return _page(name, head + _why(explanation, text) + _full_body(explanation, text))


PLAIN_BELOW = 0.02  # a sentence with less evidence than this share of the top sentence's is not tinted
WHY_SENTENCES = 5  # the sentences the "why" panel ranks


def _why(explanation: dict, text: str) -> str:
    """The ranked answer to "why this label", at the top of the page: the sentences with the most
    evidence and the phrases each query selected, each a link to its place in the text."""
    label = ", ".join(explanation["labels"]) or "(no label)"
    ranked = sorted(explanation["sentences"], key=lambda s: -s["evidence"])[:WHY_SENTENCES]
    items = [
        f'<li><a href="#s{s["index"]}">{html.escape(_clip(text[s["span"][0] : s["span"][1]]))}</a>'
        f' <span class="meta">evidence {s["evidence"]:.3f}</span></li>'
        for s in ranked
    ]
    sentence_of = {p["index"]: p["sentence"] for p in explanation.get("phrases", [])}
    picks = []
    for s in sorted(explanation["selected"], key=lambda s: (s["rank"], s["query"]))[:WHY_SENTENCES]:
        anchor = f"#s{sentence_of[s['phrase']]}" if s["phrase"] in sentence_of else ""
        picks.append(
            f'<li><a href="{anchor}">{html.escape(_clip(text[s["span"][0] : s["span"][1]]))}</a>'
            f' <span class="meta">query {s["query"] + 1}, rank {s["rank"]}, weight {s["fusion"]:.3f}</span></li>'
        )
    return (
        f'<section class="why"><h2>Why “{html.escape(label)}”</h2>'
        f"<p>The sentences with the most evidence, best first:</p><ol>{''.join(items)}</ol>"
        f"<p>The phrases the sparse path selected:</p><ol>{''.join(picks)}</ol></section>"
    )


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


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
    # The heat is shown per word, not per subword ("apat|hetic"): touching tokens are one word,
    # whose heat is the sum of its pieces'. Inside a phrase its pieces are painted as one span; a
    # word that a phrase boundary cuts gets the same tint on both sides.
    word_heat, word_of, last = [], {}, None
    for span in sorted(heat):
        if last is None or last[1] != span[0]:
            word_heat.append(0.0)
        word_heat[-1] += heat[span]
        word_of[span], last = len(word_heat) - 1, span
    tokens_by_phrase: dict[int, list[tuple[int, int]]] = {}
    for t in sorted(explanation["tokens"], key=lambda t: t["span"]):
        span = tuple(t["span"])
        if span not in word_of:
            continue
        pieces = tokens_by_phrase.setdefault(t["phrase"], [])
        if pieces and pieces[-1][1] == span[0]:  # the same word, in the same phrase
            word_of[(pieces[-1][0], span[1])] = word_of[span]
            pieces[-1] = (pieces[-1][0], span[1])
        elif not pieces or pieces[-1] != span:
            pieces.append(span)
    heat = {span: word_heat[word] for span, word in word_of.items()}
    peak = max(heat.values(), default=1.0) or 1.0
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
            for ta, tb in [] if s["index"] in plain else tokens_by_phrase.get(p["index"], []):
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
