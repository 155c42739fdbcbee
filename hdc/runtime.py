"""The torch-free runtime: an exported bundle run by ONNX Runtime behind the Backend interface.

Nothing here imports torch; tests run it with torch blocked. Session options are explicit: the
CPU execution provider, all graph optimisations, and the intra-op thread count (`--threads`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import HdcError
from .predict import ModelInfo, Predictor

FORMAT = 3  # the bundle layout that hdc.export writes and this runtime reads (3: the head takes the spare scores)


def session_options(threads: int = 0) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads  # 0: one per physical core
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return options


class OrtBackend:
    def __init__(self, folder: Path, threads: int = 0):
        options = session_options(threads)
        try:
            self.block = ort.InferenceSession(str(folder / "block.onnx"), options, providers=["CPUExecutionProvider"])
            self.head = ort.InferenceSession(str(folder / "head.onnx"), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise HdcError(
                f"{folder}: cannot load the ONNX graphs ({str(e).splitlines()[0]}); re-export the bundle"
            ) from None
        self.block_outputs = [o.name for o in self.block.get_outputs()]
        self.head_inputs = [i.name for i in self.head.get_inputs()]

    def encode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.block_outputs, self.block.run(self.block_outputs, inputs)))

    def classify(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, fusion = self.head.run(["logits", "fusion"], {name: state[name] for name in self.head_inputs})
        return logits, fusion


def verify_bundle(folder: Path) -> dict:
    """Check the manifest's sha256 of every file; a truncated or altered bundle fails here."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise HdcError(f"{folder}/manifest.json: unreadable or not an hdc manifest; re-export the bundle") from None
    if manifest.get("format") != FORMAT:
        raise HdcError(
            f"{folder}: bundle format {manifest.get('format')} is not {FORMAT}; re-export it with this hdc version"
        )
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise HdcError(f"{path}: missing from the bundle; re-export it")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise HdcError(
                f"{path}: sha256 {digest[:12]}… does not match the manifest ({expected[:12]}…); the bundle is corrupted or was altered"
            )
    return manifest


def load_bundle(folder: str | Path, threads: int = 0) -> Predictor:
    folder = Path(folder)
    verify_bundle(folder)
    try:
        description = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        description["tokenizer"] = (folder / "tokenizer.json").read_text(encoding="utf-8")
        info = ModelInfo.from_dict(description)
    except (OSError, ValueError, KeyError, HdcError) as e:
        raise HdcError(
            f"{folder}: cannot read the model description, or it is from an incompatible hdc version ({e}); re-export the bundle"
        ) from None
    return Predictor(OrtBackend(folder, threads), info, str(folder))
