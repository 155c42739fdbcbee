"""hdc batch on Ray Data: 1 worker against 2, on the same corpus, in one run.

    python bench/scale.py [--model runs/news-bundle] [--copies 2]

The corpus is the news test split written out as one file per article (`--copies` times over),
in bench/out/scale/corpus-<copies>. Each run is `hdc batch` with single-threaded workers, started fresh;
the figure is the time Ray Data took to classify and write every shard (the summary's seconds),
and, beside it, the whole command's wall time, Ray's start-up included. The baseline is
`hdc predict` in one process with one thread, on the same files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, machine, today, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "scale"


def corpus(copies: int) -> Path:
    folder = OUT / f"corpus-{copies}"
    if folder.exists():  # written whole by an earlier run: its files are only ever these
        return folder
    folder.mkdir(parents=True)
    with open(ROOT / "data" / "news" / "test.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    for c in range(copies):
        for i, text in enumerate(texts):
            (folder / f"{c}-{i:05d}.txt").write_text(text, encoding="utf-8")
    return folder


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/news-bundle")
    parser.add_argument("--copies", type=int, default=2)
    args = parser.parse_args()
    docs = corpus(args.copies)
    files = len(list(docs.iterdir()))
    hdc = [sys.executable, "-m", "hdc.cli"]
    results = {"files": files}
    wall, _ = timed([*hdc, "predict", args.model, str(docs), "--threads", "1", "--output", str(OUT / "single.jsonl")])
    results["single_process_s"] = round(wall, 2)
    for workers in (1, 2):
        out = OUT / f"batch-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        wall, stdout = timed([*hdc, "batch", args.model, str(docs), "--output", str(out), "--workers", str(workers)])
        summary = json.loads(stdout)
        results[f"workers_{workers}"] = {"ray_s": summary["seconds"], "wall_s": round(wall, 2)}
        print(f"{workers} worker(s): {summary['seconds']} s in Ray, {wall:.1f} s in all", file=sys.stderr)
    results["speedup_2_workers"] = round(results["workers_1"]["ray_s"] / results["workers_2"]["ray_s"], 3)
    results["speedup_2_workers_wall"] = round(results["workers_1"]["wall_s"] / results["workers_2"]["wall_s"], 3)
    print(json.dumps(results, indent=1))
    meta = {"command": "python bench/scale.py " + " ".join(sys.argv[1:]), "commit": commit()}
    meta |= {"date": today(), "machine": machine()}
    update_results("throughput", {"distributed": results}, meta)


if __name__ == "__main__":
    main()
