"""hdc's prediction throughput as a share of its own tokenizer's, on the same texts, in one run.

    python bench/throughput.py news   --model runs/news         # the 752 news test documents
    python bench/throughput.py needle --model bench/out/needle/hdc   # one 1M-token document, streamed
    python bench/throughput.py news --model runs/news --profile  # and cProfile's top rows

The tokenizer figure is the model's own `tokenizers` tokenizer, encode_batch on the same texts'
paragraphs (what any pipeline must pay at least); hdc's is `hdc.load(model, threads=2).predict(texts)`,
everything included: cutting into sentences and phrases, n-grams, the model, the records. Each is
the best of --repeats runs, after one warm-up run. Results go to bench/results.json under
throughput.<task>.share_of_tokenizer.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, today, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NEWS_TEST = ROOT / "data" / "news" / "test.jsonl"
NEEDLE_TOKENS = 1 << 20


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: imports, allocations, the tokenizer's caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _texts(task: str, tokenizer) -> list[str]:
    if task == "news":
        return [json.loads(line)["text"] for line in open(NEWS_TEST, encoding="utf-8")]
    # One long document: news test texts repeated until the tokenizer counts NEEDLE_TOKENS.
    news = [json.loads(line)["text"] for line in open(NEWS_TEST, encoding="utf-8")]
    parts, tokens = [], 0
    while tokens < NEEDLE_TOKENS:
        for text in news:
            parts.append(text)
            tokens += len(tokenizer.encode(text).ids)
            if tokens >= NEEDLE_TOKENS:
                break
    return ["\n\n".join(parts)]


def measure(task: str, model: str, repeats: int, threads: int, profile: bool) -> dict:
    import torch
    from tokenizers import Tokenizer

    import hdc

    torch.set_num_threads(threads)
    classifier = hdc.load(model, threads=threads)
    tokenizer = Tokenizer.from_str(classifier.predictor.info.tokenizer)
    texts = _texts(task, tokenizer)
    # The tokenizer at its best: its batch encode runs one thread per text, and one string of a
    # million tokens is far slower to encode than its paragraphs (298K against 1.17M tokens/s).
    paragraphs = [p for text in texts for p in text.split("\n\n")]
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(paragraphs))
    tokenizer_s = _best(lambda: tokenizer.encode_batch(paragraphs), repeats)
    hdc_s = _best(lambda: classifier.predict(texts), repeats)
    result = {
        "documents": len(texts),
        "tokens": tokens,
        "tokenizer_tokens_per_s": round(tokens / tokenizer_s),
        "hdc_tokens_per_s": round(tokens / hdc_s),
        "share_of_tokenizer": round(tokenizer_s / hdc_s, 3),
        "threads": threads,
        "model": model,
    }
    print(
        f"{task}: {tokens:,} tokens; tokenizer {tokens / tokenizer_s:,.0f} tokens/s, hdc {tokens / hdc_s:,.0f} "
        f"tokens/s: {tokenizer_s / hdc_s:.1%} of the tokenizer",
        file=sys.stderr,
    )
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(classifier.predict, texts)
        report = io.StringIO()
        pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(12)
        print(report.getvalue(), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("news", "needle"))
    parser.add_argument("--model", required=True, help="a run directory, bundle or checkpoint")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top rows of one more run")
    args = parser.parse_args()
    result = measure(args.task, args.model, args.repeats, args.threads, args.profile)
    meta = {"command": "python bench/throughput.py " + " ".join(sys.argv[1:]), "date": today(), "machine": machine()}
    update_results("throughput", {args.task: result}, meta, [args.task])


if __name__ == "__main__":
    main()
