"""The `hdc` command. Each command parses its options, builds its settings and calls one library
function.

Data goes to stdout; logs and progress to stderr. Exit codes: 0 success, 1 the command ran but
failed (bad data, errors in a batch, a full disk), 2 it was called wrongly (a bad flag, a missing
file). Nothing here imports torch, so a runtime-only install can predict, evaluate, inspect and
serve bundles.

One vocabulary across commands: --text-column and --label-column name the data's fields,
--top-k how many labels a record lists, --phrases how many selected phrases per query, --top how
many sentences a summary shows. Older spellings (--text-field, --k, export's --top-k) still work
for one release, hidden from --help.
"""

from __future__ import annotations

import json
import math
import sys

import click

from . import __version__
from .config import InferenceConfig, load_config
from .distributed import SHARD_FILES
from .distributed import batch as batch_on_ray
from .errors import HdcError, UsageError
from .evaluate import evaluate as evaluate_model
from .evaluate import format_table
from .explain import inspect as inspect_documents
from .predict import predict as predict_documents
from .serve import serve as serve_model

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True, "max_content_width": 100}
MODEL = click.argument("model", type=click.Path(exists=True))
DEFAULTS = InferenceConfig()


class Group(click.Group):
    """Turns HdcError and OSError (a full disk, a closed pipe) into a one-line message and an exit
    code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HdcError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except BrokenPipeError:  # the reader of stdout went away (| head): nothing more to say
            sys.stderr.close()
            ctx.exit(1)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}", err=True)
            ctx.exit(1)


class Number(click.ParamType):
    """A finite number in a range (click's FloatRange lets NaN through)."""

    name = "number"

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(number) and self.low <= number <= self.high):
            self.fail(f"{value!r} is not a number from {self.low:g} to {self.high:g}", param, ctx)
        return number


# Options that several commands share, each defined once (click builds a fresh option per use).
THREADS = click.option(
    "--threads", type=click.IntRange(min=0), default=DEFAULTS.threads, help="CPU threads; 0 lets the backend choose."
)
THRESHOLD = click.option(
    "--threshold",
    type=Number(0, 1),
    default=DEFAULTS.threshold,
    help="A multi-label model gives every label with at least this probability.",
)
TOP_K = click.option(
    "--top-k", type=click.IntRange(min=1), default=DEFAULTS.top_labels, help="How many labels each record lists."
)
OLD_K = click.option("--k", "old_k", type=click.IntRange(min=1), default=None, hidden=True)  # before --top-k
BLOCK_TOKENS = click.option(
    "--block-tokens",
    type=click.IntRange(min=256),
    default=DEFAULTS.block_tokens,
    help="Longer documents are streamed in blocks of this many tokens.",
)
BATCH_TOKENS = click.option(
    "--batch-tokens",
    type=click.IntRange(min=256),
    default=DEFAULTS.batch_tokens,
    help="Short documents are batched up to this many tokens.",
)
TEXT_COLUMN = click.option(
    "--text-column", default=None, help="Text column of CSV/TSV or field of JSONL; default: the model's."
)
LABEL_COLUMN = click.option(
    "--label-column", default=None, help="Label column of CSV/TSV or field of JSONL; default: the model's."
)


def settings(**options) -> InferenceConfig:
    """The InferenceConfig of a command's options; the ones it does not have keep their defaults."""
    names = {"top_k": "top_labels", "old_k": "top_labels"}
    values = {names.get(k, k): v for k, v in options.items() if v is not None and k != "old_k"}
    if options.get("old_k") is not None:
        values["top_labels"] = options["old_k"]
    return InferenceConfig(**values)


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="hdc")
def cli():
    """hdc: a hierarchical document classifier for documents of any length.

    \b
    Typical use:
      hdc train --config configs/news.yaml --train train.jsonl --valid valid.jsonl --out runs/news
      hdc evaluate runs/news test.jsonl --report reports/news
      hdc predict runs/news docs/ > predictions.jsonl
    """


@cli.command(context_settings=CONTEXT, short_help="Train a model on labelled documents.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML config; without it, the built-in defaults (as in configs/default.yaml).",
)
@click.option(
    "--train",
    "train_path",
    type=click.Path(exists=True),
    required=True,
    help="Training data: .jsonl, .csv, .tsv or a folder per class.",
)
@click.option(
    "--valid",
    "valid_path",
    type=click.Path(exists=True),
    help="Validation data; default: a stratified share of --train (data.valid_fraction; "
    "0 holds none out and keeps the last epoch).",
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory to write.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.max_epochs=3 (repeatable).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint, with its config.")
@click.option(
    "--embeddings",
    type=click.Path(exists=True, dir_okay=False),
    help="Word vectors (fastText .vec or GloVe text) to initialise token embeddings.",
)
@click.option("--text-column", default=None, help="Text column/field; overrides data.text_column.")
@click.option("--label-column", default=None, help="Label column/field; overrides data.label_column.")
@click.option("--devices", type=click.IntRange(min=1), default=None, help="Processes per node (train.devices).")
@click.option("--num-nodes", type=click.IntRange(min=1), default=None, help="Machines (train.num_nodes).")
@click.option("--strategy", default=None, help="Lightning strategy, e.g. ddp or ddp_spawn (train.strategy).")
def train(
    config_path,
    train_path,
    valid_path,
    out,
    overrides,
    resume,
    embeddings,
    text_column,
    label_column,
    devices,
    num_nodes,
    strategy,
):
    """Train a model on labelled documents and write a run directory.

    The run directory holds checkpoints/best.ckpt (best validation macro-F1; the last epoch
    with data.valid_fraction=0 and no --valid), checkpoints/last.ckpt, tokenizer.json,
    config.yaml, labels.json and logs/metrics.csv.
    """
    try:  # training needs torch and lightning, which a runtime-only install lacks
        from .train import train as run
    except ImportError as e:
        raise HdcError(
            f"hdc train needs torch and lightning ({e}); install them with: pip install 'hdc[train]'"
        ) from None
    if resume and config_path:
        raise UsageError(
            "--config: a resumed run continues with its own config.yaml; drop --config (--set still applies)"
        )
    flags = {
        "data.text_column": text_column,
        "data.label_column": label_column,
        "train.devices": devices,
        "train.num_nodes": num_nodes,
        "train.strategy": strategy,
    }
    overrides = tuple(overrides) + tuple(f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None)
    config = load_config(config_path, overrides)
    summary = run(config, train_path, valid_path, out, embeddings=embeddings, resume=resume, overrides=overrides)
    click.echo(json.dumps(summary, indent=1))


@cli.command(context_settings=CONTEXT, short_help="Score a model on labelled data.")
@MODEL
@click.argument("data", type=click.Path(exists=True))
@click.option("--report", type=click.Path(file_okay=False), help="Write report.json and confusion.png to this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
@TEXT_COLUMN
@LABEL_COLUMN
@THRESHOLD
@BATCH_TOKENS
@BLOCK_TOKENS
@THREADS
def evaluate(model, data, report, as_json, text_column, label_column, threshold, batch_tokens, block_tokens, threads):
    """Score MODEL (run directory, checkpoint or bundle) on labelled DATA."""
    options = settings(threshold=threshold, batch_tokens=batch_tokens, block_tokens=block_tokens, threads=threads)
    result = evaluate_model(model, data, report, text_column, label_column, options)
    click.echo(json.dumps(result, indent=1) if as_json else format_table(result))


def _shard(ctx, param, value):
    if value is None:
        return (0, 1)
    index, sep, count = value.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise click.BadParameter("expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


@cli.command(context_settings=CONTEXT, short_help="Classify documents into JSONL records.")
@MODEL
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@TOP_K
@OLD_K
@THRESHOLD
@click.option("--output", type=click.Path(dir_okay=False), help="Write JSONL here (atomically) instead of stdout.")
@click.option("--resume", is_flag=True, help="With --output: skip the documents a killed run already wrote.")
@click.option("--shard", callback=_shard, metavar="I/N", help="Classify only every N-th input, starting at the I-th.")
@click.option(
    "--text-column",
    default=None,
    help="Text field of .jsonl inputs and column of .csv/.tsv ones; default: the one the model was trained on.",
)
@click.option("--text-field", "text_field", default=None, hidden=True)  # the old name of --text-column
@BATCH_TOKENS
@BLOCK_TOKENS
@THREADS
def predict(
    model,
    inputs,
    top_k,
    old_k,
    threshold,
    output,
    resume,
    shard,
    text_column,
    text_field,
    batch_tokens,
    block_tokens,
    threads,
):
    """Classify documents: one JSONL record each, printed as its batch finishes.

    INPUT is a file, a folder, a glob, a .jsonl file (one document per line, with an optional
    "id"), a .csv/.tsv table (one document per row) or - for stdin (one document per line). An
    unreadable input gives an error record and the rest still goes through; the exit code is
    then 1.
    """
    if resume and not output:
        raise click.BadParameter("--resume needs --output", param_hint="--resume")
    options = settings(
        top_k=top_k,
        old_k=old_k,
        threshold=threshold,
        batch_tokens=batch_tokens,
        block_tokens=block_tokens,
        threads=threads,
    )
    ok, errors = predict_documents(model, list(inputs), output, options, shard, resume, text_column or text_field)
    click.echo(f"predict: {ok + errors} documents, {errors} errors", err=True)
    if errors:
        sys.exit(1)


@cli.command(context_settings=CONTEXT, short_help="Classify a corpus of files on Ray Data, in parallel.")
@MODEL
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Folder for the parts (JSONL).")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Ray workers, each with one model.")
@click.option("--shard-files", type=click.IntRange(min=1), default=SHARD_FILES, help="Files per part.")
@click.option("--address", default=None, help="A running Ray cluster ('auto' finds it); default: start a local one.")
@TOP_K
@THRESHOLD
@BATCH_TOKENS
@BLOCK_TOKENS
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    help="CPU threads per worker; Ray reserves as many CPUs for each.",
)
def batch(model, inputs, output, workers, shard_files, address, top_k, threshold, batch_tokens, block_tokens, threads):
    """Classify every file of INPUT (files, folders) on Ray Data: WORKERS workers each load the
    model once and write one part-*.jsonl per shard of files. A worker that dies is replaced and
    its shard run again; every file lands in exactly one part. Rerun the same command to finish
    a stopped job. Needs Ray: pip install 'hdc[ray]'.
    """
    options = settings(
        top_k=top_k, threshold=threshold, batch_tokens=batch_tokens, block_tokens=block_tokens, threads=threads
    )
    log = lambda message: click.echo(f"batch: {message}", err=True)  # noqa: E731
    summary = batch_on_ray(model, list(inputs), output, workers, options, shard_files, address, log)
    click.echo(json.dumps(summary))
    if summary["errors_now"]:
        sys.exit(1)


@cli.command(context_settings=CONTEXT, short_help="Export a model to an ONNX bundle (no torch needed to run it).")
@MODEL
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--quantize",
    type=click.Choice(["int8", "auto"]),
    default=None,
    help="Quantize the graphs' weights to int8: a bundle about a quarter the size. auto: int8 only if it "
    "keeps the label of 99.5% of the --check documents (so accuracy on them moves by at most half a point).",
)
@click.option(
    "--check",
    multiple=True,
    metavar="FILE",
    help="Documents for --quantize auto to compare int8 with fp32 on (files, folders, .jsonl, as "
    "predict reads them), such as the validation split. Repeatable.",
)
@click.option(
    "--opset",
    type=click.IntRange(min=18),
    default=None,
    help="ONNX opset; default: 23, the first with the fused Attention operator.",
)
@click.option(
    "--phrases",
    type=click.IntRange(min=1),
    default=None,
    help="Phrases the sparse path selects per query; default: the model's (model.top_k). More keep "
    "needles that rank behind filler in very long documents, at little cost.",
)
@click.option("--top-k", "old_phrases", type=click.IntRange(min=1), default=None, hidden=True)  # before --phrases
def export(model, out_dir, quantize, check, opset, phrases, old_phrases):
    """Export MODEL (run directory or checkpoint) to an ONNX bundle in OUT_DIR.

    The bundle (block.onnx, head.onnx, tokenizer.json, model.json, manifest.json) runs without
    torch: `hdc predict OUT_DIR ...` with a base install. The export is checked with
    onnx.checker and for parity with torch before it is put in place. OUT_DIR must be absent,
    empty, or a bundle hdc exported: nothing else is replaced.
    """
    try:  # export needs torch and onnx, which a runtime-only install lacks
        from .export import export as run
    except ImportError as e:
        raise HdcError(f"hdc export needs torch and onnx ({e}); install them with: pip install 'hdc[train]'") from None
    manifest = run(model, out_dir, quantize, opset, phrases or old_phrases, list(check))
    click.echo(json.dumps(manifest, indent=1))


@cli.command(context_settings=CONTEXT, short_help="Show why a model labelled a document, level by level.")
@MODEL
@click.argument("inputs", nargs=-1, required=True, metavar="FILE...")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Write the weights of every level, with character spans, as JSON.",
)
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write a self-contained HTML page.")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    help="For several files: one JSON and one HTML page each, plus index.html.",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=DEFAULTS.top_sentences, help="How many sentences the summary shows."
)
@click.option(
    "--phrases",
    type=click.IntRange(min=1),
    default=DEFAULTS.top_phrases,
    help="How many selected phrases per query the summary shows.",
)
@THRESHOLD
@BLOCK_TOKENS
@THREADS
def inspect(model, inputs, json_path, html_path, out_dir, top, phrases, threshold, block_tokens, threads):
    """Show why MODEL labelled each FILE (or - for stdin): word, phrase and sentence weights and
    the phrases the sparse path selected, lined up with the text.

    Without --json/--html/--out-dir it prints a short summary. A document longer than
    --block-tokens is streamed, and its report keeps the selected phrases and the top sentences
    with their context.
    """
    options = settings(
        threshold=threshold, block_tokens=block_tokens, threads=threads, top_sentences=top, top_phrases=phrases
    )
    summaries, errors = inspect_documents(model, list(inputs), json_path, html_path, out_dir, options)
    if not (json_path or html_path or out_dir):
        click.echo("\n\n".join(summaries))
    if errors:
        click.echo(f"inspect: {errors} of {len(summaries)} documents failed", err=True)
        sys.exit(1)


@cli.command(context_settings=CONTEXT, short_help="Serve a model over HTTP.")
@MODEL
@click.option("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 exposes the service to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, help="Port; 0 picks a free one.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=10 << 20, help="Largest request body accepted.")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Threads that classify; 0: one per CPU core.")
@click.option(
    "--token",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on /classify and /labels; default: $HDC_SERVE_TOKEN if set.",
)
@TOP_K
@OLD_K
@THRESHOLD
@THREADS
def serve(model, host, port, max_bytes, workers, token, top_k, old_k, threshold, threads):
    """Serve MODEL (a bundle, or a run directory) over HTTP: POST /classify, GET /health, GET /labels.

    \b
    curl -s localhost:8000/classify -d '{"text": "Heavy rain is expected tomorrow."}'
    curl -s localhost:8000/classify -d '{"texts": ["first document", "second document"]}'
    """
    options = settings(top_k=top_k, old_k=old_k, threshold=threshold, threads=threads)
    serve_model(model, host=host, port=port, settings=options, max_bytes=max_bytes, workers=workers, token=token)


def main() -> None:
    cli(prog_name="hdc")


if __name__ == "__main__":
    main()
