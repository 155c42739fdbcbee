"""This checkout's speed against another commit's, measured side by side in one run.

    python bench/versus.py --baseline 14a5a21               # every task, 2 rounds
    python bench/versus.py --baseline HEAD~1 --tasks news,1m --rounds 3

The baseline commit is checked out into a temporary git worktree. Each task runs in a fresh
process per checkout, the two checkouts taking turns, `--rounds` times over; a figure is the
best of its rounds and the speedup is baseline seconds over this checkout's. Both run the same
weights (`--run`, a run directory from bench/news.py) with the same thread count, so only the
code differs. Tasks (torch, on the news split of `make demo`):

    news    hdc predict's library call over the 752 test documents
    64k     one 64K-token document (news test texts end to end), streamed
    1m      the same at 1M tokens
    train   `hdc train` with configs/news.yaml for one epoch, end to end (tokenizer included)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, today  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("news", "64k", "1m", "train")
LONG = {"64k": 1 << 16, "1m": 1 << 20}


def long_text(tokens: int) -> str:
    """News test texts end to end, repeated, to about `tokens` BPE tokens (~4.5 characters each)."""
    texts = [json.loads(line)["text"] for line in open(ROOT / "data/news/test.jsonl")]
    text = "\n\n".join(texts)
    return (text * (tokens * 5 // len(text) + 1))[: tokens * 5]


def worker(task: str, run: Path, threads: int) -> dict:
    """One task in this process, with whichever hdc is first on sys.path."""
    import hdc

    if task == "train":
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "hdc.cli", "train", "--config", str(ROOT / "configs/news.yaml")]
            command += ["--train", str(ROOT / "data/news/train.jsonl"), "--valid", str(ROOT / "data/news/valid.jsonl")]
            command += ["--out", out, "--set", "train.max_epochs=1", "--set", f"train.threads={threads}"]
            # run from the checkout: `python -m` puts the working directory first on sys.path
            checkout = Path(hdc.__file__).parent.parent
            subprocess.run(command, cwd=checkout, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return {"hdc": hdc.__file__, "seconds": time.perf_counter() - start}

    from hdc.data import Document, load_examples

    try:  # hdc.predictor from 2026-12-04 on; before, hdc.predict, with threads as the second argument
        from hdc.config import InferenceConfig
        from hdc.predictor import load_predictor

        predictor = load_predictor(run, InferenceConfig(threads=threads))
    except ImportError:
        from hdc.predict import load_predictor

        predictor = load_predictor(run, threads)
    if task == "news":
        documents = [Document("id", e.id, text=e.text) for e in load_examples(ROOT / "data/news/test.jsonl")]
    else:
        documents = [Document("id", task, text=long_text(LONG[task]))]
    start = time.perf_counter()
    outcomes = list(predictor.run(documents, progress=False))
    seconds = time.perf_counter() - start
    assert all(o.ok for o in outcomes)
    return {"hdc": hdc.__file__, "seconds": seconds, "tokens": sum(o.state.tokens for o in outcomes)}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def measure(checkout: Path, task: str, run: Path, threads: int) -> dict:
    env = os.environ | {"PYTHONPATH": str(checkout)}
    command = [sys.executable, __file__, "--worker", task, "--run", str(run), "--threads", str(threads)]
    result = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
    # the worker must have imported the checkout's hdc, not the installed one
    assert Path(result["hdc"]).resolve().is_relative_to(checkout.resolve()), (result["hdc"], checkout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a commit to compare with, e.g. HEAD~1")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", type=Path, default=ROOT / "bench/out/news/hdc")
    parser.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.run, args.threads)))
        return
    if not args.baseline:
        parser.error("--baseline is required")

    tasks = args.tasks.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        git("worktree", "add", "--detach", str(baseline), args.baseline)
        try:
            best: dict = {}
            for round_ in range(args.rounds):
                for task in tasks:
                    for name, checkout in (("baseline", baseline), ("current", ROOT)):
                        result = measure(checkout, task, args.run, args.threads)
                        print(f"round {round_ + 1} {task} {name}: {result['seconds']:.2f} s", file=sys.stderr)
                        if result["seconds"] < best.get((task, name), {}).get("seconds", float("inf")):
                            best[(task, name)] = result
        finally:
            git("worktree", "remove", "--force", str(baseline))

    rows = {}
    for task in tasks:
        old, new = best[(task, "baseline")], best[(task, "current")]
        row = {"baseline_s": round(old["seconds"], 2), "current_s": round(new["seconds"], 2)}
        if "tokens" in new:
            row |= {"baseline_tokens_per_s": round(old["tokens"] / old["seconds"])}
            row |= {"current_tokens_per_s": round(new["tokens"] / new["seconds"])}
        rows[task] = row | {"speedup": round(old["seconds"] / new["seconds"], 2)}
    meta = {"baseline": args.baseline, "current": git("rev-parse", "--short", "HEAD"), "threads": args.threads}
    meta |= {"rounds": args.rounds, "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}
    print(json.dumps(meta | {"date": today(), "machine": machine(), "tasks": rows}, indent=1))


if __name__ == "__main__":
    main()
