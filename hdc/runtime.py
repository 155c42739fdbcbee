"""The torch-free runtime: an exported bundle run by ONNX Runtime behind the Backend interface.

Nothing here imports torch; tests run it with torch blocked. Session options are explicit: the
CPU execution provider, all graph optimisations, the intra-op thread count (`--threads`), and
intra-op workers that sleep rather than spin between runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import HdcError
from .io import sha256
from .schema import FORMAT, HEAD_OUTPUTS, BundleLayout, ModelInfo


def session_options(threads: int = 0) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads  # 0: one per physical core
    options.inter_op_num_threads = 1
    # Idle intra-op workers sleep instead of spinning. A run here is short and is followed by
    # Python work (tokenizing the next batch, merging block states) on the calling thread, during
    # which a spinning worker holds one of the few cores; on a 2-core machine shared with other
    # jobs, 2-thread news throughput was 1.5x higher without spinning (issue 32).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


class OrtBackend:
    # Its intra-op workers sleep between runs, and a run leaves the GIL, so a reader thread
    # overlaps it: news at 2 threads 3.8 -> 3.4 s, at 1 thread 5.2 -> 3.7 s (bench/RESULTS.md).
    reads_ahead = True

    def __init__(self, folder: Path, threads: int = 0):
        options, bundle = session_options(threads), BundleLayout(folder)
        try:
            self.block = ort.InferenceSession(str(bundle.block), options, providers=["CPUExecutionProvider"])
            self.head = ort.InferenceSession(str(bundle.head), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise HdcError(
                f"{folder}: cannot load the ONNX graphs ({str(e).splitlines()[0]}); re-export the bundle"
            ) from None
        self.block_outputs = [o.name for o in self.block.get_outputs()]
        self.head_inputs = [i.name for i in self.head.get_inputs()]

    def encode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.block_outputs, self.block.run(self.block_outputs, inputs)))

    def classify(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, fusion = self.head.run(list(HEAD_OUTPUTS), {name: state[name] for name in self.head_inputs})
        return logits, fusion


def verify_bundle(folder: Path) -> dict:
    """Check the sha256 of every file the runtime loads against the manifest: a truncated or
    altered bundle fails here, and so does one whose manifest leaves a file out."""
    bundle = BundleLayout(folder)
    try:
        manifest = json.loads(bundle.manifest.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise HdcError(f"{bundle.manifest}: unreadable or not an hdc manifest; re-export the bundle") from None
    if manifest.get("format") != FORMAT:
        raise HdcError(
            f"{folder}: bundle format {manifest.get('format')} is not {FORMAT}; re-export it with this hdc version"
        )
    for name in bundle.FILES:
        path = folder / name
        if name not in files:
            raise HdcError(f"{path}: not listed in {bundle.MANIFEST}, so it cannot be verified; re-export the bundle")
        if not path.is_file():
            raise HdcError(f"{path}: missing from the bundle; re-export it")
        digest = sha256(path)
        if digest != files[name]:
            raise HdcError(
                f"{path}: sha256 {digest[:12]}… does not match the manifest ({str(files[name])[:12]}…); "
                "the bundle is corrupted or was altered"
            )
    return manifest


def load_bundle(folder: Path, threads: int = 0) -> tuple[OrtBackend, ModelInfo]:
    """The bundle's graphs in ONNX Runtime, and its ModelInfo, once every file is verified."""
    verify_bundle(folder)
    bundle = BundleLayout(folder)
    try:
        description = json.loads(bundle.description.read_text(encoding="utf-8"))
        description["tokenizer"] = bundle.tokenizer.read_text(encoding="utf-8")
        info = ModelInfo.from_dict(description)
        info.segmenter()  # an unreadable tokenizer fails here, naming the bundle
    except (OSError, ValueError, KeyError, TypeError, HdcError) as e:
        raise HdcError(
            f"{folder}: cannot read the model description, or it is from an incompatible hdc version ({e}); "
            "re-export the bundle"
        ) from None
    return OrtBackend(folder, threads), info
