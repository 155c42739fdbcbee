"""Do the inspection weights point at what the model uses? A deletion test on the news test split.

    python bench/faithfulness.py          # needs bench/out/news/hdc (bench/news.py)

For every test document: classify it, then delete the n sentences that inspection ranks highest
and classify again, and compare the drop in the predicted class's probability with deleting n
random sentences (the same n, the same document). Three rankings are tested: the dense sentence
weights, the sentences holding the sparse path's selected phrases (by fusion weight), and the
evidence that inspection ranks by (both paths, `hdc.explain.ranked_sentences`).
Documents with fewer than n + 1 sentences are skipped. The needle side of faithfulness (is the
needle selected, is it the top sentence) is measured by bench/needle.py.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, today, update_results  # noqa: E402

from hdc.data import Document, load_examples  # noqa: E402
from hdc.explain import path_shares, ranked_sentences  # noqa: E402
from hdc.predictor import load_predictor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def without(text: str, spans: list[tuple[int, int]]) -> str:
    out, cursor = [], 0
    for a, b in sorted(spans):
        out.append(text[cursor:a])
        cursor = b
    out.append(text[cursor:])
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "bench/out/news/hdc")
    parser.add_argument("--data", type=Path, default=ROOT / "data/news/test.jsonl")
    args = parser.parse_args()
    predictor = load_predictor(args.model)
    examples = load_examples(args.data)
    documents = [Document("id", e.id, text=e.text) for e in examples]
    rng = random.Random(0)
    drops: dict[str, list[float]] = {}
    flips: dict[str, list[bool]] = {}
    for outcome in predictor.run(documents, weights=True, progress=False):
        segments, weights, state = outcome.segments, outcome.weights, outcome.state
        text = outcome.item.text
        label = int(outcome.probabilities.argmax())
        p0 = float(outcome.probabilities[label])
        spans = [tuple(int(x) for x in s) for s in segments.sentence_spans]
        by_weight = list(np.argsort(-weights["sentence_scores"], kind="stable"))
        # sentences of the selected phrases, best fusion weight first
        fused = {}
        for m in range(state.top_phrases.shape[0]):
            for r, p in enumerate(state.top_phrases[m]):
                if p >= 0:
                    s = int(segments.phrase_sentence[p])
                    fused[s] = fused.get(s, 0.0) + float(outcome.fusion[m, r])
        by_selection = sorted(fused, key=lambda s: -fused[s])
        by_evidence = [row["index"] for row in ranked_sentences(outcome, path_shares(outcome, predictor))]
        for n in (1, 3):
            if len(spans) <= n:
                continue
            variants = {
                f"top{n}_sentence_weight": [spans[i] for i in by_weight[:n]],
                f"top{n}_selected": [spans[i] for i in by_selection[:n]],
                f"top{n}_evidence": [spans[i] for i in by_evidence[:n]],
                f"random{n}": rng.sample(spans, n),
            }
            texts = {name: without(text, cut) for name, cut in variants.items()}
            again = predictor.run([Document("id", name, text=t) for name, t in texts.items()], progress=False)
            for name, result in zip(texts, again):
                if result.ok:
                    drops.setdefault(name, []).append(p0 - float(result.probabilities[label]))
                    flips.setdefault(name, []).append(int(result.probabilities.argmax()) != label)
    results = {
        name: {
            "documents": len(values),
            "mean_probability_drop": round(float(np.mean(values)), 4),
            "label_flip_rate": round(float(np.mean(flips[name])), 4),
        }
        for name, values in sorted(drops.items())
    }
    print(json.dumps(results, indent=1))
    update_results(
        "inspect",
        {"news_deletion": results},
        {"command": "python bench/faithfulness.py", "date": today(), "machine": machine()},
    )


if __name__ == "__main__":
    main()
