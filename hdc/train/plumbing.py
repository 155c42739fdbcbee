"""Lightning plumbing: checkpoints written atomically (and last.ckpt after every epoch), a CSV
log that a resumed run appends to, progress on stderr, and claiming the run directory."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..checkpoint import read_checkpoint
from ..errors import HdcError, UsageError
from ..io import Lock, atomic_open
from ..schema import RunLayout
from .module import MONITOR, SELECT


class LastCheckpoint(ModelCheckpoint):
    """last.ckpt after every epoch, which --resume continues from. (ModelCheckpoint's save_last
    writes it only in an epoch that also saves the best checkpoint: a resumed run would repeat
    every epoch since the best.)"""

    def __init__(self, folder: Path):
        super().__init__(dirpath=folder, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    @property
    def state_key(self) -> str:  # apart from the best checkpoint's state, which has another monitor
        return "LastCheckpoint"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename: a kill mid-write leaves
    the previous checkpoint intact, never half a file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with atomic_open(path, "wb") as f:
                torch.save(checkpoint, f)
        except (OSError, RuntimeError) as e:  # torch reports a failed write as a RuntimeError
            free = shutil.disk_usage(Path(path).parent).free
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise HdcError(
                f"cannot write checkpoint {path} ({reason}); {free / 2**20:,.0f} MB free on its disk. "
                "Free some space, then continue with --resume"
            ) from None


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; on --resume we append to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class ProgressLog(Callback):
    """Progress on stderr: a live line on a terminal, plain lines every few seconds otherwise."""

    def __init__(self, every: float = 10.0):
        self.tty = sys.stderr.isatty()
        self.every = every

    def on_train_epoch_start(self, trainer, module) -> None:
        self.start = self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_rank != 0:
            return
        now = time.perf_counter()
        if now - self.last < (0.5 if self.tty else self.every):
            return
        self.last = now
        loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
        line = (
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: batch {batch_idx + 1}/"
            f"{trainer.num_training_batches} loss {loss:.4f} ({now - self.start:.0f} s)"
        )
        print(line, end="\r" if self.tty else "\n", file=sys.stderr, flush=True)

    def on_validation_end(self, trainer, module) -> None:  # after the module has logged
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        self._epoch_line(trainer)

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.global_rank == 0 and trainer.limit_val_batches == 0:  # no validation to wait for
            self._epoch_line(trainer)

    def _epoch_line(self, trainer) -> None:
        m = trainer.callback_metrics
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: " + " ".join(
            f"{name} {float(m[name]):.4f}" for name in ("train_loss", "val_loss", "val_accuracy", MONITOR) if name in m
        )
        print(
            ("\r\033[K" if self.tty else "") + line + f" ({time.perf_counter() - self.start:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def best_epoch(metrics_csv: Path) -> dict:
    """The selected epoch (counted from 1) and its macro-F1, read back from the log; None for
    both when nothing was validated."""
    rows = []
    if metrics_csv.exists():
        with open(metrics_csv, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get(SELECT)]
    best = max(rows, key=lambda r: float(r[SELECT])) if rows else None
    return {
        "best_epoch": int(best["epoch"]) + 1 if best else None,
        "best_" + MONITOR: float(best[MONITOR]) if best else None,
    }


def quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*exists and is not empty.*",
        ".*LeafSpec.*",
        ".*isinstance.*treespec.*",
        ".*smaller than the logging interval.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def launched_rank() -> int:
    """This process's rank when a launcher (torchrun, srun) started one per device; else 0."""
    for variable in ("RANK", "SLURM_PROCID"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def claim_run(out: Path, resume: bool) -> Lock | None:
    """Check that --out is absent, empty or a run directory, create it, and lock it (on the first
    process of a multi-process launch), so that two runs never write one directory."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; name a folder for the run")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in RunLayout.ENTRIES) if out.exists() else []
    if foreign and not resume:
        raise UsageError(
            f"--out {out}: holds {foreign[0]!r}, which hdc did not write; choose a new or empty folder for the run"
        )
    out.mkdir(parents=True, exist_ok=True)
    return Lock(RunLayout(out).lock, f"--out {out}") if launched_rank() == 0 else None


def resumed_epoch(last: Path) -> int:
    """The epoch that last.ckpt finished (counted from 0), or a one-line error if it is broken."""
    try:
        checkpoint = read_checkpoint(last)
        return int(checkpoint["epoch"])
    except (KeyError, TypeError, ValueError):
        raise HdcError(f"--resume: {last} has no epoch count; it was not written by hdc train") from None
    except HdcError as e:
        raise HdcError(f"--resume: {e}; a run cannot continue from it, so start a new one") from None


def drop_rows_after(metrics_csv: Path, epoch: int) -> None:
    """Keep the log's rows of epochs up to `epoch`: the rest are logged again when resumed."""
    if not metrics_csv.exists():
        return
    with open(metrics_csv, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) > column and r[column] and int(float(r[column])) <= epoch]
    if len(kept) < len(rows):
        with atomic_open(metrics_csv, "w") as f:
            csv.writer(f, lineterminator="\n").writerows(kept)
