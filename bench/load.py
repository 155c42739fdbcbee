"""Load benchmark: batch prediction at scale, one long document, and concurrent HTTP requests.

    python bench/load.py                    # needs a trained news run (bench/news.py)
    python bench/load.py --files 20000      # a smaller run

- `hdc predict` over 10K, 30K and N (default 100,000) small files, and over one 1M-token
  document: throughput and peak RSS, each in its own process; memory must stay flat as the
  count grows.
- `hdc serve` on 127.0.0.1 with a bounded number of concurrent clients: requests/s, p50/p99
  latency and the number of failed requests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_mb, today, update_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "load"


def sentences() -> list[str]:
    from hdc.text import split_sentences

    pool = []
    for line in open(ROOT / "data/news/test.jsonl", encoding="utf-8"):
        text = json.loads(line)["text"]
        pool += [" ".join(text[a:b].split()) for a, b in split_sentences(text)[0]]
    return pool


def make_files(folder: Path, count: int, pool: list[str]) -> None:
    """count small documents (1-4 sentences), in subfolders of 1,000."""
    rng = random.Random(count)
    for i in range(count):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:06d}.txt").write_text(
            " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4))), encoding="utf-8"
        )


def worker(args: list[str], result: Path) -> None:
    """Run one hdc command in this process; record its seconds and this process's peak RSS."""
    from hdc.cli import cli

    start = time.perf_counter()
    try:
        cli.main(args, prog_name="hdc", standalone_mode=False)
    except SystemExit:
        pass
    result.write_text(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def measure(args: list[str]) -> dict:
    result = OUT / "worker.json"
    subprocess.run([sys.executable, __file__, "worker", str(result), "--", *map(str, args)], check=True)
    return json.loads(result.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(bundle: Path, pool: list[str], clients: int, requests: int) -> dict:
    """`clients` threads, each sending `requests` POST /classify (1 to 4 sentences), against a
    server on 127.0.0.1. Bounded in count, and every request has a 60 s timeout."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hdc.cli", "serve", str(bundle), "--port", str(port), "--threads", "2"],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        latencies, failures = [], []

        def client(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(requests):
                body = json.dumps({"text": " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4)))})
                start = time.perf_counter()
                try:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    connection.request("POST", "/classify", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    payload = json.loads(response.read())
                    connection.close()
                    if response.status != 200 or "label" not in payload:
                        failures.append(response.status)
                except OSError as e:
                    failures.append(repr(e))
                latencies.append(time.perf_counter() - start)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": len(failures),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[4:], Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "bench/out/news/hdc")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    bundle = OUT / "bundle"
    if not (bundle / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "hdc.cli", "export", str(args.model), str(bundle)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    pool = sentences()
    results: dict = {"predict_files": {}}

    for count in sorted({10_000, 30_000, args.files}):
        if count > args.files:
            continue
        folder = OUT / f"files-{count}"
        if not folder.exists():
            make_files(folder, count, pool)
        output = OUT / f"predictions-{count}.jsonl"
        m = measure(["predict", bundle, folder, "--output", output, "--threads", "2"])
        lines = sum(1 for _ in open(output))
        results["predict_files"][str(count)] = {"documents": lines, "docs_per_s": round(lines / m["seconds"], 1), **m}
        print(f"{count} files: {results['predict_files'][str(count)]}", file=sys.stderr, flush=True)

    long_doc = OUT / "long.txt"
    if not long_doc.exists():
        rng = random.Random(1)
        with open(long_doc, "w", encoding="utf-8") as f:
            words = 0
            while words < 850_000:  # about 1M tokens
                sentence = rng.choice(pool)
                f.write(sentence + " ")
                words += len(sentence.split())
    m = measure(["predict", bundle, long_doc, "--output", OUT / "long.jsonl", "--threads", "2"])
    tokens = int(
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from hdc.predictor import load_predictor; p = load_predictor('{bundle}');"
                f"print(p.segmenter.segment(open('{long_doc}').read()).num_tokens)",
            ],
            capture_output=True,
            text=True,
        ).stdout
    )
    results["predict_long"] = {"tokens": tokens, "tokens_per_s": round(tokens / m["seconds"]), **m}
    print(f"1M-token document: {results['predict_long']}", file=sys.stderr, flush=True)

    results["serve"] = load_test(bundle, pool, args.clients, args.requests)
    print(f"serve: {results['serve']}", file=sys.stderr, flush=True)
    update_results(
        "reliability",
        results,
        {"command": "python bench/load.py " + " ".join(sys.argv[1:]), "date": today(), "machine": machine()},
    )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
