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

import json
import logging
import random
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from . import __version__
from .checkpoint import TorchBackend, model_from_checkpoint, read_checkpoint
from .config import InferenceConfig
from .data import Document, iter_documents
from .errors import HdcError, UsageError
from .io import current_umask, sha256, swap_in, write_atomic
from .model import HierarchicalClassifier
from .predictor import Predictor, load_predictor
from .schema import (
    FORMAT,
    HEAD_OUTPUTS,
    HEAD_STATE,
    INPUTS,
    NGRAM_INPUTS,
    BundleLayout,
    ModelInfo,
    block_outputs,
    checkpoint_file,
    chosen_labels,
    head_inputs,
)

PARITY_TOLERANCE = {None: 1e-4, "int8": 0.15}  # max |p_torch - p_onnx| allowed before export fails
# The first opset with the Attention operator, which ONNX Runtime runs as one fused kernel; with
# an older one the exporter spells attention out in a dozen ops (2.4x slower, measured alone).
OPSET = 23


class BlockGraph(nn.Module):
    def __init__(self, model: HierarchicalClassifier):
        super().__init__()
        self.model = model

    def forward(self, tokens, phrase_sentence, sentence_phrases, selectable):
        state = self.model.encode(tokens, phrase_sentence, sentence_phrases, selectable)
        return tuple(state[name] for name in block_outputs(self.model.config.dense_sentences > 0))


class HeadGraph(nn.Module):
    def __init__(self, model: HierarchicalClassifier):
        super().__init__()
        self.model, self.names = model, head_inputs(model.config.ngrams)

    def forward(self, dense_sum, dense_acc, top_scores, top_states, spare_scores, ngram_ids=None, ngram_counts=None):
        inputs = (dense_sum, dense_acc, top_scores, top_states, spare_scores, ngram_ids, ngram_counts)
        return self.model.classify(dict(zip(self.names, inputs)))  # HEAD_STATE + NGRAM_INPUTS, in order


def _export_graphs(model: HierarchicalClassifier, bundle: BundleLayout, opset: int) -> None:
    c = model.config
    B, P, S, Q, T, M, K, D = 2, 11, 4, 3, c.phrase_tokens, c.all_queries, c.top_k, c.d_model
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
    if c.ngrams:
        head_args += [torch.randint(1, c.ngram_rows, (B, 5)), torch.randint(0, 4, (B, 5)).float()]
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
                bundle.block,
                input_names=list(INPUTS),
                output_names=list(block_outputs(c.dense_sentences > 0)),
                dynamic_shapes=block_shapes,
                dynamo=True,
                external_data=False,
                opset_version=opset,
                verbose=False,
            )
            torch.onnx.export(
                HeadGraph(model),
                tuple(head_args),
                bundle.head,
                input_names=list(head_inputs(c.ngrams)),
                output_names=list(HEAD_OUTPUTS),
                dynamic_shapes=head_shapes,
                dynamo=True,
                external_data=False,
                opset_version=opset,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)


def _stamp(path: Path, info: ModelInfo, extra: dict[str, str]) -> None:
    """Labels, config and versions in metadata_props, then onnx.checker. What the exporter
    records of each node's origin (stack traces with this machine's paths, FX node names) is
    dropped: the same checkpoint then gives the same bytes, wherever it is exported."""
    graph = onnx.load(path)
    for holder in (*graph.graph.node, *graph.graph.value_info, *graph.graph.input, *graph.graph.output):
        del holder.metadata_props[:]
        holder.doc_string = ""
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
    quantized = path.with_suffix(".int8.onnx")
    # The quantizer advises "pre-processing" (shape inference for activation quantization) on the
    # root logger, once per graph; only the weights are quantized here, so the advice is noise.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # The weights only: left to itself, quantize_dynamic would also rewrite the opset-23
        # Attention node as com.microsoft's QAttention, a different operator that then fails to load.
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather"])
    finally:
        root.setLevel(level)
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


def parity(reference: Predictor, candidate: Predictor, documents: list[Document]) -> float:
    """Max |probability difference| over the documents. Set the predictors' block_tokens small
    enough that the longest document is streamed over several blocks."""
    worst = 0.0
    runs = [p.run(documents, progress=False) for p in (reference, candidate)]
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
        manifest = json.loads(BundleLayout(out).manifest.read_text(encoding="utf-8"))
        ours = set(manifest["files"]) | {BundleLayout.MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    foreign = sorted(names - ours)
    if foreign:
        raise UsageError(
            f"{out}: exists and is not a bundle hdc exported (it holds {foreign[0]!r}); export replaces only "
            "its own bundles, so choose another OUT_DIR"
        )


# --quantize auto keeps int8 where at least this share of the --check documents keep their label:
# accuracy on them then moves by at most 1 - AUTO_AGREEMENT, half a point, whatever their labels.
AUTO_AGREEMENT = 0.995


def export(
    model_path: str | Path,
    out: str | Path,
    quantize: str | None = None,
    opset: int | None = None,
    top_k: int | None = None,
    check: list[str] | None = None,
) -> dict:
    """Export MODEL (run directory or checkpoint) to the bundle folder OUT. Returns the manifest.
    quantize: None, "int8", or "auto": int8 only where it keeps the label of AUTO_AGREEMENT of the
    documents named by `check` (files, folders or .jsonl, as `hdc predict` reads them).
    top_k: phrases the bundle selects per query, if not the model's (model.top_k)."""
    out = Path(out)
    if quantize == "auto" and not check:
        raise UsageError(
            "--quantize auto needs --check FILE: documents like those the bundle will classify, such as "
            "a validation split, on which int8 must keep the labels"
        )
    checkpoint_path = checkpoint_file(model_path)
    check_bundle_target(out)
    checkpoint = read_checkpoint(checkpoint_path)
    model, info = model_from_checkpoint(checkpoint, checkpoint_path, top_k, export=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    folders = []
    try:
        print(f"export: tracing {checkpoint_path}", file=sys.stderr)
        if quantize == "auto":
            for q in (None, "int8"):
                folders.append(_build(model, info, out, opset, q))
            choice = _choose_quantization(*folders, check)
            quantize = "int8" if choice["chosen"] == "int8" else None
            work = folders[1] if quantize else folders[0]
        else:
            folders = [_build(model, info, out, opset, quantize)]
            work, choice = folders[0], None
        manifest = json.loads(BundleLayout(work).manifest.read_text(encoding="utf-8"))

        print("export: checking parity with torch", file=sys.stderr)
        settings = InferenceConfig(batch_tokens=4096, block_tokens=1024)  # the longest document in blocks
        reference_model, _ = model_from_checkpoint(checkpoint, checkpoint_path, top_k)
        reference = Predictor(TorchBackend(reference_model), info, str(checkpoint_path), settings)
        difference = parity(reference, load_predictor(work, settings), parity_documents(info))
        tolerance = PARITY_TOLERANCE[quantize]
        if difference > tolerance:
            raise HdcError(
                f"export failed: ONNX and torch disagree (max probability difference {difference:.2e} > {tolerance:.0e})"
            )
        manifest["parity_max_abs_diff"] = difference
        if choice:
            manifest["quantize_choice"] = choice
        write_atomic(BundleLayout(work).manifest, json.dumps(manifest, indent=1))

        swap_in(work, out)
        folders.remove(work)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    return manifest


def _build(model: HierarchicalClassifier, info: ModelInfo, out: Path, opset: int | None, quantize: str | None) -> Path:
    """A complete bundle, not yet checked for parity, in a new temporary folder beside `out`."""
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        work.chmod(0o777 & ~current_umask())  # mkdtemp creates 0700
        bundle = BundleLayout(work)
        try:
            _export_graphs(model, bundle, opset or OPSET)
        except OSError:
            raise  # a full disk, say: the command names it in one line
        except Exception as e:  # torch.onnx's own errors: a model this exporter cannot trace
            reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise HdcError(f"export failed while tracing the model with torch.onnx: {reason[:300]}") from e
        if quantize == "int8":
            _quantize(bundle.block)
            _quantize(bundle.head)  # it holds the n-gram table
        bundle.tokenizer.write_text(info.tokenizer, encoding="utf-8")
        for graph in (bundle.block, bundle.head):
            _stamp(graph, info, {"tokenizer_sha256": sha256(bundle.tokenizer), "quantize": quantize or "none"})
        description = info.to_dict() | {"format": FORMAT, "quantize": quantize, "torch_version": torch.__version__}
        del description["tokenizer"]
        bundle.description.write_text(json.dumps(description, indent=1), encoding="utf-8")
        manifest = {
            "format": FORMAT,
            "hdc_version": __version__,
            "files": {name: sha256(work / name) for name in bundle.FILES},
        }
        bundle.manifest.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work


def _choose_quantization(fp32: Path, int8: Path, check: list[str]) -> dict:
    """Run both bundles on the --check documents; int8 where it keeps AUTO_AGREEMENT of the labels."""
    documents = [d for d in iter_documents(check) if isinstance(d, Document)]
    if not documents:
        raise UsageError(f"--check {' '.join(check)}: no readable documents to compare fp32 and int8 on")
    labels = []
    for folder in (fp32, int8):
        predictor = load_predictor(folder)
        info, threshold = predictor.info, InferenceConfig().threshold
        labels.append(
            [
                chosen_labels(o.probabilities, info.labels, info.multilabel, threshold) if o.ok else None
                for o in predictor.run(documents, progress=False)
            ]
        )
    agreement = float(np.mean([a == b for a, b in zip(*labels)]))
    chosen = "int8" if agreement >= AUTO_AGREEMENT else "none"
    sizes = {name: sum(f.stat().st_size for f in folder.iterdir()) for name, folder in (("fp32", fp32), ("int8", int8))}
    print(
        f"export: int8 keeps the label of {agreement:.1%} of {len(documents)} --check documents "
        f"(needed: {AUTO_AGREEMENT:.1%}), so the bundle is {'int8' if chosen == 'int8' else 'fp32'} "
        f"({sizes['int8'] / 2**20:.1f} MB int8, {sizes['fp32'] / 2**20:.1f} MB fp32)",
        file=sys.stderr,
    )
    return {"documents": len(documents), "label_agreement": round(agreement, 4), "chosen": chosen}
