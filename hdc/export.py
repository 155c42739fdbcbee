"""`hdc export`: a trained model -> a self-contained ONNX bundle for the torch-free runtime.

    bundle/
      block.onnx     one block of phrases -> mergeable state + weights   (hdc.model.encode)
      head.onnx      merged state -> logits, fusion weights              (hdc.model.classify)
      tokenizer.json
      model.json     config, labels, multi-label flag, versions
      manifest.json  sha256 of every file

Between the two graphs the streaming driver (hdc/stream.py) merges blocks in numpy, exactly as
it does for the torch model. The export is built in a temporary folder, checked (onnx.checker,
then parity with torch on generated documents, one of them streamed over several blocks) and only
then renamed into place, so a failed or interrupted export leaves no half bundle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .checkpoint import TorchBackend, load_checkpoint
from .data import Document
from .errors import HdcError, UsageError
from .io import current_umask, swap_in, write_atomic
from .model import INPUTS, NGRAM_INPUTS, STATE, WEIGHTS, HierarchicalClassifier
from .predict import ModelInfo, Predictor, load_predictor
from .runtime import FORMAT

PARITY_TOLERANCE = {None: 1e-4, "int8": 0.15}  # max |p_torch - p_onnx| allowed before export fails
# The first opset with the Attention operator, which ONNX Runtime runs as one fused kernel; with
# an older one the exporter spells attention out in a dozen ops (2.4x slower, measured alone).
OPSET = 23
HEAD_STATE = ("dense_sum", "dense_acc", "top_scores", "top_states", "spare_scores")


def head_inputs(model: HierarchicalClassifier) -> tuple[str, ...]:
    return HEAD_STATE + (NGRAM_INPUTS if model.config.ngram_orders else ())


class BlockGraph(nn.Module):
    def __init__(self, model: HierarchicalClassifier):
        super().__init__()
        self.model = model

    def forward(self, tokens, phrase_sentence, sentence_phrases, selectable):
        state = self.model.encode(tokens, phrase_sentence, sentence_phrases, selectable)
        return tuple(state[name] for name in STATE + WEIGHTS)


class HeadGraph(nn.Module):
    def __init__(self, model: HierarchicalClassifier):
        super().__init__()
        self.model, self.names = model, head_inputs(model)

    def forward(self, dense_sum, dense_acc, top_scores, top_states, spare_scores, ngram_ids=None, ngram_counts=None):
        state = dict(
            dense_sum=dense_sum,
            dense_acc=dense_acc,
            top_scores=top_scores,
            top_states=top_states,
            spare_scores=spare_scores,
            ngram_ids=ngram_ids,
            ngram_counts=ngram_counts,
        )
        return self.model.classify({name: state[name] for name in self.names})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _export_graphs(model: HierarchicalClassifier, folder: Path, opset: int) -> None:
    c = model.config
    B, P, S, Q, T, M, K, D = 2, 11, 4, 3, c.phrase_tokens, c.queries, c.top_k, c.d_model
    # Sizes >= 2 everywhere: a traced size of 1 would be baked into the graph.
    tokens = torch.randint(1, c.vocab_size, (B, P, T))
    phrase_sentence = (torch.arange(P) // Q).expand(B, P).contiguous()
    sentence_phrases = torch.cat([torch.arange(P), torch.tensor([-1])]).view(S, Q).expand(B, S, Q).contiguous()
    block_args = [tokens, phrase_sentence, sentence_phrases, torch.ones(B, P, dtype=torch.bool)]
    batch, phrases = torch.export.Dim("batch", min=1), torch.export.Dim("phrases", min=1)
    sentences, slots = torch.export.Dim("sentences", min=1), torch.export.Dim("slots", min=1)
    block_shapes = {
        "tokens": {0: batch, 1: phrases},
        "phrase_sentence": {0: batch, 1: phrases},
        "sentence_phrases": {0: batch, 1: sentences, 2: slots},
        "selectable": {0: batch, 1: phrases},
    }
    head_args = [torch.rand(B) + 1, torch.randn(B, D), torch.randn(B, M, K), torch.randn(B, M, K, D), torch.randn(B, M)]
    head_shapes = {name: {0: batch} for name in HEAD_STATE}
    if c.ngram_orders:
        head_args += [torch.randint(1, c.ngram_buckets + 1, (B, 5)), torch.randint(0, 4, (B, 5)).float()]
        bag = torch.export.Dim("bag", min=1)
        head_shapes |= {name: {0: batch, 1: bag} for name in NGRAM_INPUTS}
    # The exporter logs a warning for each torchvision op it cannot register; hdc uses none.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        exporter_log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                BlockGraph(model),
                tuple(block_args),
                folder / "block.onnx",
                input_names=list(INPUTS),
                output_names=list(STATE + WEIGHTS),
                dynamic_shapes=block_shapes,
                dynamo=True,
                external_data=False,
                opset_version=opset,
                verbose=False,
            )
            model.ngram_gather = True
            torch.onnx.export(
                HeadGraph(model),
                tuple(head_args),
                folder / "head.onnx",
                input_names=list(head_inputs(model)),
                output_names=["logits", "fusion"],
                dynamic_shapes=head_shapes,
                dynamo=True,
                external_data=False,
                opset_version=opset,
                verbose=False,
            )
    finally:
        model.ngram_gather = False
        exporter_log.setLevel(level)


def _stamp(path: Path, info: ModelInfo, extra: dict[str, str]) -> None:
    """Labels, config and versions in metadata_props, then onnx.checker."""
    import onnx

    graph = onnx.load(path)
    props = {
        "hdc_version": __version__,
        "torch_version": torch.__version__,
        "labels": json.dumps(list(info.labels)),
        "multilabel": json.dumps(info.multilabel),
        "config": json.dumps(info.to_dict()["config"]),
    } | extra
    del graph.metadata_props[:]
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, path)
    onnx.checker.check_model(str(path), full_check=True)


def _quantize(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    # The weights only: left to itself, quantize_dynamic would also rewrite the opset-23 Attention
    # node as com.microsoft's QAttention, a different operator that then fails to load.
    quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"])
    quantized.replace(path)


def parity_documents(info: ModelInfo, seed: int = 0) -> list[Document]:
    """Generated documents of several lengths (in tokens: ~30, ~600, ~6000), from words of the
    model's own vocabulary, so every path is exercised: short batches and streamed blocks."""
    rng = random.Random(seed)
    # sorted: get_vocab() is a dict in hash order, which changes from one process to the next
    vocab = sorted(t for t in info.segmenter().tokenizer.get_vocab() if t.startswith("\u0120") and t[1:].isalpha())
    words = [t[1:] for t in vocab] or ["word"]

    def text(n_words: int) -> str:
        sentences, left = [], n_words
        while left > 0:
            n = min(left, rng.randint(4, 30))
            sentences.append(" ".join(rng.choice(words) for _ in range(n)).capitalize() + ".")
            left -= n
        return " ".join(sentences)

    return [Document("id", f"parity-{n}", text=text(n)) for n in (25, 40, 500, 5000)]


def parity(reference: Predictor, candidate: Predictor, documents: list[Document], block_tokens: int) -> float:
    """Max |probability difference| over the documents; block_tokens small enough that the
    longest document is streamed over several blocks."""
    worst = 0.0
    runs = [
        p.run(documents, batch_tokens=4096, block_tokens=block_tokens, progress=False) for p in (reference, candidate)
    ]
    for a, b in zip(*runs):
        if not (a.ok and b.ok):
            raise HdcError(f"parity check failed on {a.item.name}: {a.error or b.error}")
        worst = max(worst, float(np.abs(a.probabilities - b.probabilities).max()))
    return worst


def check_bundle_target(out: Path) -> None:
    """OUT may be absent, an empty folder, or a bundle that hdc exported (only the files its
    manifest lists): export replaces nothing else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is a file; export writes a bundle folder, so choose another OUT_DIR")
    names = {p.name for p in out.iterdir()}
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        ours = set(manifest["files"]) | {"manifest.json"}
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    foreign = sorted(names - ours)
    if foreign:
        raise UsageError(
            f"{out}: exists and is not a bundle hdc exported (it holds {foreign[0]!r}); export replaces only "
            "its own bundles, so choose another OUT_DIR"
        )


def export(
    model_path: str | Path,
    out: str | Path,
    quantize: str | None = None,
    opset: int | None = None,
    top_k: int | None = None,
) -> dict:
    """Export MODEL (run directory or checkpoint) to the bundle folder OUT. Returns the manifest.
    top_k: phrases the bundle selects per query, if not the model's (model.top_k)."""
    model_path, out = Path(model_path), Path(out)
    checkpoint = model_path / "checkpoints" / "best.ckpt" if model_path.is_dir() else model_path
    if not checkpoint.exists():
        raise UsageError(f"{model_path}: no checkpoint to export (expected a run directory or a .ckpt file)")
    check_bundle_target(out)
    model, info = load_checkpoint(checkpoint)
    if top_k:
        # An inference setting: no weight depends on how many phrases are selected.
        config = replace(info.config, model=replace(info.config.model, top_k=top_k))
        model.config, info = config.model, replace(info, config=config)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        work.chmod(0o777 & ~current_umask())  # mkdtemp creates 0700
        print(f"export: tracing {checkpoint}", file=sys.stderr)
        _export_graphs(model, work, opset or OPSET)
        if quantize == "int8":
            _quantize(work / "block.onnx")
            _quantize(work / "head.onnx")  # it holds the n-gram table
        (work / "tokenizer.json").write_text(info.tokenizer, encoding="utf-8")
        tokenizer_sha = _sha256(work / "tokenizer.json")
        for name in ("block.onnx", "head.onnx"):
            _stamp(work / name, info, {"tokenizer_sha256": tokenizer_sha, "quantize": quantize or "none"})
        description = info.to_dict() | {"format": FORMAT, "quantize": quantize, "torch_version": torch.__version__}
        del description["tokenizer"]
        (work / "model.json").write_text(json.dumps(description, indent=1), encoding="utf-8")
        files = sorted(p.name for p in work.iterdir())
        manifest = {
            "format": FORMAT,
            "hdc_version": __version__,
            "files": {name: _sha256(work / name) for name in files},
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")

        print("export: checking parity with torch", file=sys.stderr)
        reference = Predictor(TorchBackend(model), info, str(checkpoint))
        difference = parity(reference, load_predictor(work), parity_documents(info), block_tokens=1024)
        tolerance = PARITY_TOLERANCE[quantize]
        if difference > tolerance:
            raise HdcError(
                f"export failed: ONNX and torch disagree (max probability difference {difference:.2e} > {tolerance:.0e})"
            )
        manifest["parity_max_abs_diff"] = difference
        write_atomic(work / "manifest.json", json.dumps(manifest, indent=1))

        swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest
