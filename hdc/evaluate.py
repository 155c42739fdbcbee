"""`hdc evaluate`: score a model on labelled data, with a report a user can trust."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .config import InferenceConfig
from .data import Document, check_known_labels, load_examples
from .errors import HdcError
from .io import atomic_open, check_overwrite, make_parent, write_atomic
from .metrics import confusion, expected_calibration_error, scores
from .predictor import load_predictor
from .schema import decide, targets


def evaluate(
    model: str | Path,
    data: str | Path,
    report: str | Path | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    settings: InferenceConfig = InferenceConfig(),
) -> dict:
    """Score `model` on the labelled `data`, read with the model's text and label columns unless
    others are given; with `report`, also write report.json and confusion.png there."""
    if report is not None:
        report = make_parent(Path(report) / "report.json", "--report").parent
        check_overwrite(report / "report.json", lambda head: head.startswith(b'{\n "model": '), "--report")
    predictor = load_predictor(model, settings)
    columns = predictor.info.config.data
    examples = load_examples(data, text_column or columns.text_column, label_column or columns.label_column)
    labels, multilabel = predictor.labels, predictor.info.multilabel
    check_known_labels(examples, labels, multilabel)

    start = time.perf_counter()
    probabilities = []
    documents = (Document("id", e.id, text=e.text) for e in examples)
    for n, (example, outcome) in enumerate(zip(examples, predictor.run(documents)), 1):
        if not outcome.ok:
            raise HdcError(f"{example.where}: {outcome.error}")
        probabilities.append(outcome.probabilities)
        if n % 500 == 0:
            print(f"evaluate: {n}/{len(examples)} documents", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    print(f"evaluate: {len(examples)} documents in {seconds:.1f} s", file=sys.stderr)
    probabilities = np.stack(probabilities)

    y_true = targets((e.labels for e in examples), labels, multilabel).astype(np.int64)
    y_pred = decide(probabilities, multilabel, settings.threshold)
    result = scores(y_true, y_pred, labels, multilabel)
    result["ece"] = expected_calibration_error(probabilities, y_true, multilabel)
    result["seconds"] = round(seconds, 3)
    result["documents_per_s"] = round(len(examples) / max(seconds, 1e-9), 2)
    if report is not None:
        write_report(Path(report), result, y_true, y_pred, labels, multilabel, model, data)
    return result


def write_report(out: Path, result: dict, y_true, y_pred, labels, multilabel: bool, model, data) -> None:
    """report.json (metrics and confusion counts) and confusion.png. For multi-label data the
    matrix counts documents with true label i that were given label j."""
    out.mkdir(parents=True, exist_ok=True)
    if multilabel:
        matrix = y_true.T @ y_pred
    else:
        matrix = confusion(y_true, y_pred, len(labels))
    payload = {
        "model": str(model),
        "data": str(data),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "labels": list(labels),
        **result,
        "confusion": matrix.tolist(),
    }
    write_atomic(out / "report.json", json.dumps(payload, indent=1))

    size = 1.5 + 0.55 * len(labels)
    fig = Figure(figsize=(size + 1, size))  # no pyplot: no global backend, no window
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f} (n={result['n']})")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                dark = matrix[i, j] > matrix.max() / 2
                ax.text(
                    j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black"
                )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_open(out / "confusion.png", "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    print(f"evaluate: wrote {out / 'report.json'} and {out / 'confusion.png'}", file=sys.stderr)


def format_table(result: dict) -> str:
    lines = [
        f"N            {result['n']}",
        f"accuracy     {result['accuracy']:.4f}",
        f"macro-F1     {result['macro_f1']:.4f}",
        f"micro-F1     {result['micro_f1']:.4f}",
        f"ECE          {result['ece']:.4f}   (expected calibration error: 0 when probabilities are frequencies)",
        "",
        f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for label, row in result["per_class"].items():
        lines.append(
            f"{label:<16}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>10}"
        )
    return "\n".join(lines)
