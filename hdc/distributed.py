"""`hdc batch`: classify a corpus of files on Ray Data, one model per worker, output in parts.

    hdc batch runs/news-bundle corpus/ --output preds/ --workers 8          # a local Ray
    hdc batch runs/news-bundle corpus/ --output preds/ --address auto       # a running cluster

Why Ray Data: it installs from PyPI with no JVM, runs the same code on a laptop and a cluster,
keeps a pool of Python workers that each load the model once (an actor per worker), and
restarts a worker that dies and retries its task.

The inputs (files, and folders walked in sorted order) are cut into shards of `shard_files`
files, in order. A shard is the unit of work and of output: its records go to
`part-<shard>-<digest>.jsonl` in --output, written atomically (a temporary file renamed into
place), where the digest is that of the shard's paths. So a shard that Ray retries after a
worker died writes the same file again, never a second one: every input is in exactly one part,
once. A rerun of a stopped job with the same inputs skips the shards whose parts exist. The
records are those of `hdc predict` (hdc.api), in input order within a part; part names sort in
input order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .api import Classifier
from .config import InferenceConfig
from .data import walk_files
from .errors import UsageError
from .io import write_atomic

MANIFEST = "hdc-batch.json"  # names the job's inputs; a rerun must match it
SHARD_FILES = 256


def list_inputs(inputs: list[str]) -> list[str]:
    """The files named by `inputs`: files as given, folders walked (sorted), in order."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(str(p) for p, _ in walk_files(path))  # a bad entry gets its error record
        else:
            paths.append(item)
    return paths


def part_name(shard: int, paths: list[str]) -> str:
    digest = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"part-{shard:06d}-{digest}.jsonl"


def worker_cpus(settings: InferenceConfig) -> int:
    """The CPUs Ray reserves for one worker: its model's threads (0, the backend's choice, counts
    as one), so that Ray never places more workers on a machine than its cores can run."""
    return max(settings.threads, 1)


class ClassifyShards:
    """A Ray Data actor: loads the model once, then classifies shard after shard."""

    def __init__(self, model: str, settings: InferenceConfig, output: str):
        # Ray reserves the model's threads for a worker (worker_cpus), so no reader thread beside it.
        self.classifier = Classifier(model, replace(settings, read_ahead=False))
        self.output = Path(output)

    def __call__(self, batch: dict) -> dict:
        counts, errors = [], []
        for paths_json, name in zip(batch["paths"], batch["part"]):
            paths = json.loads(paths_json)
            records = self.classifier.predict_files(paths)
            write_atomic(self.output / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
            counts.append(len(records))
            errors.append(sum("error" in r for r in records))
        return {"part": batch["part"], "files": counts, "errors": errors}


def _check_output(output: Path, manifest: dict) -> None:
    if not output.exists():
        output.mkdir(parents=True)
        return
    if not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a folder")
    mine = output / MANIFEST
    if mine.exists():
        if json.loads(mine.read_text()) != manifest:
            raise UsageError(f"--output {output}: holds a batch job of other inputs or settings; use a new folder")
    elif any(output.iterdir()):
        raise UsageError(f"--output {output}: not empty and not an hdc batch folder; hdc never writes into it")


def batch(
    model: str,
    inputs: list[str],
    output: str | Path,
    workers: int = 2,
    settings: InferenceConfig = InferenceConfig(threads=1),
    shard_files: int = SHARD_FILES,
    address: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Classify every file of `inputs` on Ray Data with `workers` workers; returns a summary."""
    try:
        import ray
    except ImportError as e:
        raise UsageError(f"hdc batch needs Ray Data ({e}): pip install 'hdc[ray]'") from None
    output = Path(output)
    paths = list_inputs(inputs)
    if not paths:
        raise UsageError("no input files: name files or folders")
    shards = [paths[i : i + shard_files] for i in range(0, len(paths), shard_files)]
    manifest = {
        "model": str(model),
        "files": len(paths),
        "shard_files": shard_files,
        "first": paths[0],
        "last": paths[-1],
    }
    _check_output(output, manifest)
    write_atomic(output / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    names = [part_name(i, shard) for i, shard in enumerate(shards)]
    todo = [
        {"paths": json.dumps(shard), "part": name} for shard, name in zip(shards, names) if not (output / name).exists()
    ]
    log(f"{len(paths):,} files in {len(shards):,} shards; {len(shards) - len(todo):,} done before, {len(todo):,} to do")
    start = time.perf_counter()
    files = errors = 0
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(
                address=address,
                num_cpus=None if address else workers * worker_cpus(settings),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            dataset = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
                ClassifyShards,
                fn_constructor_args=(str(model), settings, str(output.resolve())),
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=worker_cpus(settings),
                # Ray Data (2.60) restarts an actor pool's dead worker and retries its task
                # without limit by default (max_restarts and max_task_retries -1, in
                # ray/data/_internal/execution/operators/actor_pool_map_operator.py).
            )
            for row in dataset.iter_rows():
                files += int(row["files"])
                errors += int(row["errors"])
                log(f"{row['part']}: {row['files']} files, {row['errors']} errors")
        finally:
            if started_here:
                ray.shutdown()
    seconds = time.perf_counter() - start
    present = sorted(p.name for p in output.glob("part-*.jsonl"))
    missing = sorted(set(names) - set(present))
    if missing:
        raise UsageError(f"{len(missing)} shards were not written, first {missing[0]}: rerun the same command")
    summary = {"files": len(paths), "shards": len(shards), "classified_now": files, "errors_now": errors}
    summary |= {"seconds": round(seconds, 2), "output": str(output), "workers": workers, "pid": os.getpid()}
    return summary
