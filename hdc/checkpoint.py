"""Checkpoints: loading them safely, and running the torch model behind the Backend interface.

A checkpoint is Lightning's: a dictionary whose "state_dict" holds the LightningModule's
weights, the model's under the prefix `WEIGHTS` (hdc.train.module keeps the model as its
`model` attribute), and whose "hdc" entry holds the ModelInfo.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import HdcError
from .model import HierarchicalClassifier
from .schema import ModelInfo

PAYLOAD = "hdc"  # the key under which a checkpoint carries config, labels and tokenizer
WEIGHTS = "model."  # the prefix of the model's weights in the checkpoint's state_dict


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dictionary, loaded with weights_only=True: a checkpoint holds tensors
    and plain data, never code."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):  # a pickled class or function: code a load would run
            raise HdcError(
                f"{path}: holds Python objects, which an hdc checkpoint never does, so it was not loaded (hdc "
                "runs no code from a model file); use a checkpoint written by `hdc train`"
            ) from None
        raise HdcError(f"{path}: not a readable checkpoint (not a torch file); it may be corrupted") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError, IndexError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HdcError(f"{path}: not a readable checkpoint ({reason}); it may be truncated or corrupted") from None
    if not isinstance(checkpoint, dict) or PAYLOAD not in checkpoint:
        raise HdcError(f"{path}: not an hdc checkpoint (no {PAYLOAD!r} entry); train one with `hdc train`")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise HdcError(f"{path}: an hdc checkpoint without weights (no 'state_dict'); it may be damaged, so retrain")
    return checkpoint


def model_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix(WEIGHTS): v for k, v in checkpoint["state_dict"].items() if k.startswith(WEIGHTS)}


def store_weights(checkpoint: dict, model: HierarchicalClassifier) -> None:
    """Put the model's weights into the checkpoint's dictionary (a fit after training)."""
    checkpoint["state_dict"].update({WEIGHTS + k: v for k, v in model.state_dict().items()})


def model_from_checkpoint(
    checkpoint: dict, path: str | Path, top_k: int | None = None, export: bool = False
) -> tuple[HierarchicalClassifier, ModelInfo]:
    """The model and its ModelInfo from a checkpoint's dictionary (read_checkpoint) read from
    `path`. top_k: phrases selected per query, if not the model's (an inference setting: no
    weight depends on it). export: built for ONNX export (HierarchicalClassifier)."""
    payload = checkpoint[PAYLOAD]
    try:
        info = ModelInfo.from_dict(payload)
        info.segmenter()  # an unreadable tokenizer fails here, naming the file
    except (KeyError, TypeError, AttributeError, HdcError) as e:
        version = payload.get("version", "unknown") if isinstance(payload, dict) else "unknown"
        raise HdcError(
            f"{path}: written by an incompatible hdc version ({version}), or damaged: {e}; retrain with this version"
        ) from None
    if top_k:
        info = info.with_model(top_k=top_k)
    model = HierarchicalClassifier(info.config.model, len(info.labels), export=export)
    weights, own = model.upgrade(model_weights(checkpoint)), model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''} ({len(names)})"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise HdcError(
            f"{path}: its weights do not fit the model its config describes ({detail}); it was written by another "
            f"hdc version ({info.version}) or altered, so retrain it with this version"
        )
    model.load_state_dict(weights)
    return model.eval(), info


def load_checkpoint(path: str | Path, threads: int = 0) -> tuple[TorchBackend, ModelInfo]:
    """The checkpoint's model behind a TorchBackend, and its ModelInfo."""
    model, info = model_from_checkpoint(read_checkpoint(path), path)
    return TorchBackend(model, threads), info


class TorchBackend:
    """The torch model as a stream.Backend: numpy in, numpy out."""

    def __init__(self, model: HierarchicalClassifier, threads: int = 0):
        self.model = model.eval()
        if threads:
            torch.set_num_threads(threads)

    @property
    def reads_ahead(self) -> bool:
        """Only with a core to spare: torch's OpenMP workers spin between ops, so with every
        core theirs a reader thread slowed news from 3.7 to 4.0 s; at 1 thread of 2 it sped it
        from 5.3 to 3.9 s (bench/RESULTS.md)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return torch.get_num_threads() < cores

    @torch.inference_mode()
    def encode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state = self.model.encode(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in state.items()}

    @torch.inference_mode()
    def classify(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, fusion = self.model.classify({k: torch.from_numpy(v) for k, v in state.items()})
        return logits.numpy(), fusion.numpy()
