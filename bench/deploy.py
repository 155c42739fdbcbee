"""ONNX benchmark: parity, throughput and int8 of the exported bundle against eager torch.
(Named deploy.py: a bench/onnx.py on sys.path would shadow the onnx package.)

    python bench/deploy.py                 # needs bench/out/news/hdc (bench/news.py) and
                                         # bench/out/needle/hdc (bench/needle.py train)
    python bench/deploy.py --install-size  # also builds a runtime-only venv to measure its size
    python bench/deploy.py --news-only     # news alone; the needle figures in results.json stay

Everything is measured in this one process, torch and ONNX Runtime on the same documents with
the same thread count, so the speed figures are ratios taken side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, commit, machine, today, update_results  # noqa: E402
from needle_data import Generator, filler_pool  # noqa: E402

from hdc.data import Document, load_examples  # noqa: E402
from hdc.export import export  # noqa: E402
from hdc.metrics import scores  # noqa: E402
from hdc.predictor import load_predictor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "onnx"


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


class TimedBackend:
    """A backend that adds up the seconds spent in the model: what is left of a run's time is
    the pipeline (reading, tokenizing, segmenting, batching), the same for torch and ORT."""

    def __init__(self, backend):
        self.backend, self.seconds = backend, 0.0

    @property
    def reads_ahead(self) -> bool:
        return self.backend.reads_ahead

    def encode(self, inputs):
        start = time.perf_counter()
        out = self.backend.encode(inputs)
        self.seconds += time.perf_counter() - start
        return out

    def classify(self, state):
        start = time.perf_counter()
        out = self.backend.classify(state)
        self.seconds += time.perf_counter() - start
        return out


def run(predictor, documents, block_tokens=65536):
    """Probabilities, end-to-end tokens/s, and the model's own seconds per token."""
    backend, predictor.backend = predictor.backend, TimedBackend(predictor.backend)
    start = time.perf_counter()
    try:
        predictor.settings = replace(predictor.settings, block_tokens=block_tokens)
        outcomes = list(predictor.run(documents, progress=False))
    finally:
        model_s, predictor.backend = predictor.backend.seconds, backend
    seconds = time.perf_counter() - start
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    tokens = sum(o.state.tokens for o in outcomes)
    return np.stack([o.probabilities for o in outcomes]), tokens / seconds, model_s / tokens


def set_threads(predictors, threads: int) -> None:
    torch.set_num_threads(threads)
    for p in predictors:
        if hasattr(p.backend, "block"):  # rebuild ORT sessions with this many threads
            from hdc.runtime import OrtBackend

            p.backend = OrtBackend(Path(p.source), threads)


def news_documents(path: Path):
    examples = load_examples(path)
    return [Document("id", e.id, text=e.text) for e in examples], examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--news-run", type=Path, default=ROOT / "bench/out/news/hdc")
    parser.add_argument("--needle-run", type=Path, default=ROOT / "bench/out/needle/hdc")
    parser.add_argument("--install-size", action="store_true")
    parser.add_argument("--news-only", action="store_true", help="skip the needle model; keep its recorded figures")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    bundles = {}
    models = (("news", args.news_run),) if args.news_only else (("news", args.news_run), ("needle", args.needle_run))
    if args.news_only:  # the recorded needle bundle stays beside the new news ones
        recorded = json.loads(RESULTS.read_text()).get("onnx", {}).get("bundle", {}) if RESULTS.exists() else {}
        results["bundle"] = {k: v for k, v in recorded.items() if k.startswith("needle")}
    for name, run_dir in models:
        for quantize in (None, "int8"):
            if name == "needle" and quantize:
                continue
            out = OUT / f"{name}-{quantize or 'fp32'}"
            start = time.perf_counter()
            manifest = export(run_dir, out, quantize=quantize)
            bundles[(name, quantize)] = out
            results.setdefault("bundle", {})[f"{name}-{quantize or 'fp32'}"] = {
                "size_mb": round(folder_mb(out), 2),
                "export_s": round(time.perf_counter() - start, 1),
                "export_parity_max_abs_diff": manifest["parity_max_abs_diff"],
            }

    # --- news: parity, throughput at 1 and 2 threads, int8 accuracy
    documents, examples = news_documents(ROOT / "data/news/test.jsonl")
    labels = None
    torch_p = load_predictor(args.news_run)
    fp32 = load_predictor(bundles[("news", None)])
    int8 = load_predictor(bundles[("news", "int8")])
    labels = list(torch_p.labels)
    y = np.asarray([labels.index(e.label) for e in examples])
    news = {}
    for threads in (1, 2):
        set_threads([torch_p, fp32, int8], threads)
        p_torch, tps_torch, model_torch = run(torch_p, documents)
        p_fp32, tps_fp32, model_fp32 = run(fp32, documents)
        p_int8, tps_int8, model_int8 = run(int8, documents)
        news[f"threads_{threads}"] = {
            "torch_tokens_per_s": round(tps_torch),
            "onnx_tokens_per_s": round(tps_fp32),
            "int8_tokens_per_s": round(tps_int8),
            "onnx_speedup": round(tps_fp32 / tps_torch, 2),
            "int8_speedup": round(tps_int8 / tps_torch, 2),
            # Where the time goes: the model's share of each run (the rest is the pipeline that
            # torch and ORT share: reading, tokenizing, batching), and the model alone's speedup.
            "torch_model_share": round(model_torch * tps_torch, 2),
            "onnx_model_share": round(model_fp32 * tps_fp32, 2),
            "int8_model_share": round(model_int8 * tps_int8, 2),
            "onnx_model_speedup": round(model_torch / model_fp32, 2),
            "int8_model_speedup": round(model_torch / model_int8, 2),
        }
        print(f"news threads={threads}: {news[f'threads_{threads}']}", file=sys.stderr, flush=True)
    news["parity_max_abs_diff"] = float(np.abs(p_torch - p_fp32).max())
    news["labels_identical"] = bool((p_torch.argmax(1) == p_fp32.argmax(1)).all())
    for name, p in (("torch", p_torch), ("onnx", p_fp32), ("int8", p_int8)):
        s = scores(y, p.argmax(1), labels, False)
        news[f"{name}_macro_f1"], news[f"{name}_accuracy"] = s["macro_f1"], s["accuracy"]
    news["int8_macro_f1_drop_points"] = round(100 * (news["onnx_macro_f1"] - news["int8_macro_f1"]), 2)
    results["news"] = news

    # --- needle documents of 4K, 64K and 1M tokens, streamed in blocks
    if not args.news_only:
        results["needle"] = needle_figures(args.needle_run, bundles[("needle", None)])

    if args.install_size:
        results["install"] = install_sizes()
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    command = "python bench/deploy.py " + " ".join(sys.argv[1:])
    update_results(
        "onnx", results, {"command": command.strip(), "commit": commit(), "date": today(), "machine": machine()}
    )
    print(json.dumps(results, indent=1))


def needle_figures(run_dir: Path, bundle: Path) -> dict:
    """Parity and throughput of torch against ORT on needle documents of 4K, 64K and 1M tokens."""
    generator = Generator(filler_pool(ROOT / "data/news/test.jsonl"), seed=5)
    torch_n, onnx_n = load_predictor(run_dir), load_predictor(bundle)
    needle = {}
    for tokens, count in ((4096, 20), (65536, 5), (1 << 20, 2)):
        docs = [
            Document("id", f"{tokens}-{i}", source=lambda i=i, n=tokens: generator.stream(i, n)[0])
            for i in range(count)
        ]
        row = {}
        for threads in (1, 2):
            set_threads([torch_n, onnx_n], threads)
            p_torch, tps_torch, model_torch = run(torch_n, docs, block_tokens=16384)
            p_onnx, tps_onnx, model_onnx = run(onnx_n, docs, block_tokens=16384)
            row[f"threads_{threads}"] = {
                "torch_tokens_per_s": round(tps_torch),
                "onnx_tokens_per_s": round(tps_onnx),
                "onnx_speedup": round(tps_onnx / tps_torch, 2),
                "torch_model_share": round(model_torch * tps_torch, 2),
                "onnx_model_share": round(model_onnx * tps_onnx, 2),
                "onnx_model_speedup": round(model_torch / model_onnx, 2),
            }
        row["parity_max_abs_diff"] = float(np.abs(p_torch - p_onnx).max())
        row["labels_identical"] = bool((p_torch.argmax(1) == p_onnx.argmax(1)).all())
        needle[str(tokens)] = row
        print(f"needle {tokens}: {row}", file=sys.stderr, flush=True)
    return needle


def install_sizes() -> dict:
    """Size of a runtime-only venv (pip install . : no torch, no lightning) against .venv."""
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "runtime"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin/pip"), "install", "--quiet", "-r", str(ROOT / "export/requirements.txt"), str(ROOT)],
            check=True,
        )
        runtime = folder_mb(venv)
        check = subprocess.run([str(venv / "bin/python"), "-c", "import torch"], capture_output=True)
    training = folder_mb(ROOT / ".venv")
    return {
        "runtime_venv_mb": round(runtime),
        "training_venv_mb": round(training),
        "ratio": round(runtime / training, 3),
        "runtime_has_torch": check.returncode == 0,
    }


if __name__ == "__main__":
    main()
