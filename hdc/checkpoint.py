"""Checkpoints: loading them safely, and running the torch model behind the Backend interface."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import HdcError
from .model import HierarchicalClassifier
from .predict import ModelInfo

PAYLOAD = "hdc"  # the key under which a Lightning checkpoint carries config, labels and tokenizer


def load_checkpoint(path: str | Path) -> tuple[HierarchicalClassifier, ModelInfo]:
    """The model and its ModelInfo from a checkpoint file."""
    return model_from_checkpoint(read_checkpoint(path), path)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's dictionary, loaded with weights_only=True: a checkpoint holds tensors
    and plain data, never code."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise HdcError(
            f"{path}: not a readable checkpoint ({str(e).splitlines()[0]}); it may be truncated or corrupted"
        ) from None
    if not isinstance(checkpoint, dict) or PAYLOAD not in checkpoint:
        raise HdcError(f"{path}: not an hdc checkpoint (no {PAYLOAD!r} entry); train one with `hdc train`")
    return checkpoint


def model_from_checkpoint(checkpoint: dict, path: str | Path) -> tuple[HierarchicalClassifier, ModelInfo]:
    """The model and its ModelInfo from a checkpoint's dictionary (read_checkpoint) read from `path`."""
    try:
        info = ModelInfo.from_dict(checkpoint[PAYLOAD])
    except (KeyError, TypeError, HdcError) as e:
        version = checkpoint[PAYLOAD].get("version", "unknown") if isinstance(checkpoint[PAYLOAD], dict) else "unknown"
        raise HdcError(
            f"{path}: written by an incompatible hdc version ({version}): {e}; retrain with this version"
        ) from None
    model = HierarchicalClassifier(info.config.model, len(info.labels))
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise HdcError(
            f"{path}: its weights do not fit this hdc version ({info.version}): {str(e).splitlines()[0]}"
        ) from None
    return model.eval(), info


class TorchBackend:
    """The torch model as a stream.Backend: numpy in, numpy out."""

    def __init__(self, model: HierarchicalClassifier, threads: int = 0):
        self.model = model.eval()
        if threads:
            torch.set_num_threads(threads)

    @torch.inference_mode()
    def encode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state = self.model.encode(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in state.items()}

    @torch.inference_mode()
    def classify(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, fusion = self.model.classify({k: torch.from_numpy(v) for k, v in state.items()})
        return logits.numpy(), fusion.numpy()
