"""Render the figures of bench/results.json as the tables of bench/RESULTS.md.

    python bench/report.py > /tmp/tables.md

RESULTS.md holds these tables with the commentary around them; each table here names the command,
date and machine that produced its figures (from results.json's `_meta`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
SIZES = {"4096": "4K", "65536": "64K", "1048576": "1M", "4194304": "4M", "33554432": "32M"}


def meta(results: dict, *keys: str) -> str:
    """The runs behind `keys`: a key's own _meta entry and those of its parts ("needle.4096" also
    finds "needle.4096.hdc")."""
    seen = []
    for key in keys:
        for name, m in results.get("_meta", {}).items():
            if (name == key or name.startswith(key + ".")) and m not in seen:
                seen.append(m)
    return "\n".join(f"`{m['command']}` — {m['date']}, {m['machine']}" for m in seen)


def news(results: dict) -> list[str]:
    lines = ["### News (`bench/news.py`)", "", meta(results, *[f"news.{m}" for m in results.get("news", {})]), ""]
    lines += [
        "| method | test accuracy | test macro-F1 | stripped accuracy | stripped macro-F1 | train s | predict docs/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, r in results.get("news", {}).items():
        s = results.get("news_stripped", {}).get(method, {})
        lines.append(
            f"| {method} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {s.get('accuracy', float('nan')):.3f} | "
            f"{s.get('macro_f1', float('nan')):.3f} | {r['train_s']:.0f} | {r['predict_docs_per_s']:.0f} |"
        )
    return lines


def needle(results: dict) -> list[str]:
    data = dict(sorted(results.get("needle", {}).items(), key=lambda item: int(item[0])))  # by length
    lines = ["### Needle (`bench/needle.py`)", "", meta(results, *[f"needle.{k}" for k in data]), ""]
    lines += [
        "| length | method | docs | accuracy | min recall (class) | s/doc | tokens/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tokens, methods in data.items():
        for method, r in methods.items():
            recall = r.get("needle_recall")
            worst = f"{min(recall.values()):.3f} ({min(recall, key=recall.get)})" if recall else "—"
            lines.append(
                f"| {SIZES.get(tokens, tokens)} | {method} | {r['docs']} | {r['accuracy']:.3f} | {worst} | "
                f"{r['seconds_per_doc']:.3f} | {r['tokens_per_s']:,.0f} | {r['peak_rss_mb']:.0f} |"
            )
    return lines


def main() -> None:
    results = json.loads(RESULTS.read_text())
    out = news(results) + [""] + needle(results)
    for section in ("onnx", "inspect", "reliability"):
        if section in results:
            out += [
                "",
                f"### {section}",
                "",
                meta(results, *[f"{section}.{k}" for k in results[section]]),
                "",
                "```json",
                json.dumps(results[section], indent=1),
                "```",
            ]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
