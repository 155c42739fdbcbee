"""Load benchmark: batch prediction at scale, one long document, and concurrent HTTP requests.

    python bench/load.py                    # needs a trained news run (bench/news.py)
    python bench/load.py --files 20000      # a smaller run

- `hdc predict` over 10K, 30K and N (default 100,000) small files, and over one 1M-token
  document: throughput and peak RSS, each in its own process; memory must stay flat as the
  count grows.
- `hdc serve` on 127.0.0.1: 200 concurrent clients sending 1,000 requests (requests/s, p50/p99
  latency, failures); then 1,000 slow clients that trickle a request a byte at a time, while
  one ordinary client keeps classifying (the server's peak RSS and thread count, and the
  ordinary client's failures and p99).

    python bench/load.py --serve-only --bundle runs/news/bundle
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import resource
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


def start_server(bundle: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hdc.cli", "serve", str(bundle), "--port", str(port), "--threads", "2"],
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, port
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def classify(port: int, text: str) -> tuple[float, str | None]:
    """One POST /classify on a new connection: its seconds, and what went wrong (None: nothing)."""
    start = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/classify", json.dumps({"text": text}), {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read())
        connection.close()
        failure = None if response.status == 200 and "label" in payload else str(response.status)
    except OSError as e:
        failure = repr(e)
    return time.perf_counter() - start, failure


def summary(latencies: list[float], failures: list[str], seconds: float) -> dict:
    latencies = sorted(latencies)
    return {
        "requests": len(latencies),
        "failed": len(failures),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
    }


def load_test(bundle: Path, pool: list[str], clients: int, requests: int) -> dict:
    """`clients` threads at once, sending `requests` POST /classify (1 to 4 sentences) in all."""
    server, port = start_server(bundle)
    latencies, failures = [], []
    try:

        def client(seed: int, count: int) -> None:
            rng = random.Random(seed)
            for _ in range(count):
                seconds, failure = classify(port, " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4))))
                latencies.append(seconds)
                if failure:
                    failures.append(failure)

        counts = [requests // clients + (i < requests % clients) for i in range(clients)]
        threads = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(counts)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"clients": clients, **summary(latencies, failures, seconds), "failures": sorted(set(failures))[:5]}


def process_status(pid: int) -> tuple[float, int]:
    """The resident memory (MB) and thread count of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def slow_clients(bundle: Path, pool: list[str], count: int, seconds: float) -> dict:
    """`count` connections that send a request one byte every 2 s for `seconds`, while one
    ordinary client classifies in a loop; the server's RSS and threads are sampled throughout."""
    server, port = start_server(bundle)
    rss_idle, threads_idle = process_status(server.pid)
    samples, latencies, failures, stop = [], [], [], threading.Event()

    def ordinary() -> None:
        rng = random.Random(0)
        while not stop.is_set():
            latency, failure = classify(port, rng.choice(pool))
            latencies.append(latency)
            if failure:
                failures.append(failure)

    def sample() -> None:
        while not stop.is_set():
            samples.append(process_status(server.pid))
            time.sleep(0.25)

    helpers = [threading.Thread(target=ordinary), threading.Thread(target=sample)]
    for t in helpers:
        t.start()
    sockets, opened, cut = [], 0, 0
    request = b"POST /classify HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    try:
        for _ in range(count):
            try:
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                opened += 1
            except OSError:
                pass
        start, sent = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for s in sockets:
                try:
                    s.send(request[sent : sent + 1])
                except OSError:
                    cut += 1
            sent += 1
            time.sleep(2)
    finally:
        stop.set()
        for t in helpers:
            t.join()
        alive = 0
        for s in sockets:
            try:
                s.send(b"x")
                alive += 1
            except OSError:
                pass
            s.close()
        server.terminate()
        server.wait(timeout=30)
    return {
        "slow_clients": count,
        "connections_opened": opened,
        "seconds": seconds,
        "still_open_at_the_end": alive,
        "server_rss_idle_mb": round(rss_idle, 1),
        "server_rss_peak_mb": round(max(r for r, _ in samples), 1),
        "server_threads_idle": threads_idle,
        "server_threads_peak": max(t for _, t in samples),
        "ordinary_client": summary(latencies, failures, seconds),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[4:], Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "bench/out/news/hdc")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--bundle", type=Path, help="a news bundle; default: --model exported to bench/out/load")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000, help="in all")
    parser.add_argument("--slow-clients", type=int, default=1000)
    parser.add_argument("--slow-seconds", type=float, default=40.0)
    parser.add_argument("--serve-only", action="store_true", help="only the server's load and slow clients")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    # 1,000 connections each side of loopback: more file descriptors than the usual soft limit
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bundle = args.bundle or OUT / "bundle"
    if not (bundle / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "hdc.cli", "export", str(args.model), str(bundle)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    pool = sentences()
    meta = {"command": "python bench/load.py " + " ".join(sys.argv[1:]), "date": today(), "machine": machine()}
    results: dict = {}
    results["serve"] = load_test(bundle, pool, args.clients, args.requests)
    print(f"serve: {results['serve']}", file=sys.stderr, flush=True)
    results["serve_slow_clients"] = slow_clients(bundle, pool, args.slow_clients, args.slow_seconds)
    print(f"slow clients: {results['serve_slow_clients']}", file=sys.stderr, flush=True)
    if args.serve_only:
        update_results("reliability", results, meta)
        print(json.dumps(results, indent=1))
        return

    results["predict_files"] = {}
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

    update_results("reliability", results, meta)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
