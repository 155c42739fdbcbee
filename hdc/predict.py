"""`hdc predict`: classify documents into JSONL records, on stdout or in a file that a killed
run can resume (`PredictionsFile`), optionally one shard of the inputs. The engine is
hdc.predictor."""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .config import InferenceConfig
from .data import BadInput, Document, iter_documents
from .errors import HdcError, UsageError
from .io import Lock, check_overwrite, make_parent
from .predictor import dumps, load_predictor, result_record


def is_predictions(head: bytes) -> bool:
    """Whether a file's first bytes are those of `hdc predict` output (records start with the
    document's key), so --output may replace it."""
    return head.startswith((b'{"id": ', b'{"path": '))


class PredictionsFile:
    """`hdc predict --output F`: records go to F.partial, which is renamed to F when the run
    completes. F.partial.index holds, for each record, the (key, name, fingerprint) of the
    input it came from, so `--resume` matches the records to the inputs by position and content,
    not by name (names may repeat). F.partial is locked while a process writes it.

    A record is written and flushed before its index line, so after a kill the two agree on
    every record but perhaps the last, which is then done again."""

    def __init__(self, output: Path, resume: bool):
        self.output, self.partial, self.index_path = self.paths(output)
        check_overwrite(output, is_predictions, "--output")
        self.lock = Lock(self.partial, f"--output {output}")
        self.records = open(self.lock.fd, "r+b", closefd=False)
        self.index = open(self.index_path, "a+b")
        self.done = self._recover() if resume else []
        if not resume:
            self.records.truncate(0)
            self.index.truncate(0)
        self.records.seek(0, os.SEEK_END)
        self.index.seek(0, os.SEEK_END)

    @staticmethod
    def paths(output: Path) -> tuple[Path, Path, Path]:
        """The output, its partial file and the partial's index."""
        return output, output.with_name(output.name + ".partial"), output.with_name(output.name + ".partial.index")

    def _recover(self) -> list[list[str]]:
        """The (key, name, fingerprint) of each record a killed run completed; both files are
        cut back to those records (a torn last line, or a record without its index line)."""
        records = _complete_lines(self.records, lambda line: isinstance(json.loads(line), dict))
        index = _complete_lines(self.index, lambda line: len(json.loads(line)) == 3)
        n = min(len(records), len(index))
        for f, ends in ((self.records, records), (self.index, index)):
            f.truncate(ends[n - 1] if n else 0)
        self.index.seek(0)
        return [json.loads(line) for line in itertools.islice(self.index, n)]

    def skip_done(self, items: Iterable[Document | BadInput]) -> Iterator[Document | BadInput]:
        """The inputs after those already done, checking that the done ones are the same inputs."""
        position = 0
        for item in items:
            if position < len(self.done):
                expected = self.done[position]
                if [item.key, item.name, item.fingerprint()] != expected:
                    raise UsageError(
                        f"--resume: {self.partial} was written for other inputs (its record {position + 1} is "
                        f"{expected[1]!r}, the input there is {item.name!r}, or it has changed); "
                        "run without --resume to start over"
                    )
                position += 1
                continue
            yield item
        if position < len(self.done):
            raise UsageError(
                f"--resume: {self.partial} holds {len(self.done)} records but the inputs give only {position}; "
                "run without --resume to start over"
            )

    def write(self, line: str, item: Document | BadInput) -> None:
        try:
            self.records.write(_encode(line))
            self.records.flush()
            self.index.write(_encode(json.dumps([item.key, item.name, item.fingerprint()], ensure_ascii=False)))
            self.index.flush()
        except OSError as e:
            raise HdcError(
                f"--output {self.output}: cannot write ({e.strerror}); the records written so far are kept in "
                f"{self.partial}: make room, then run again with --resume"
            ) from None

    def finish(self) -> None:
        """The run is complete: F.partial becomes F (still under the lock)."""
        self.records.close()
        self.index.close()
        os.replace(self.partial, self.output)
        self.index_path.unlink(missing_ok=True)
        self.lock.release()

    def close(self) -> None:
        """The run stops short: F.partial stays, for --resume (which drops a half-written record)."""
        for f in (self.records, self.index):
            try:
                f.close()
            except OSError:  # the write that failed, tried again: the disk is still full
                pass
        self.lock.release()


def _encode(line: str) -> bytes:
    """A JSON line as UTF-8; a lone surrogate (which UTF-8 cannot hold) stays a JSON escape."""
    return (line + "\n").encode("utf-8", "backslashreplace")


def _complete_lines(f, valid) -> list[int]:
    """The end offset of each leading line of the binary file `f` that ends in a newline and
    passes `valid`."""
    f.seek(0)
    ends, offset = [], 0
    for line in f:
        offset += len(line)
        try:
            if not line.endswith(b"\n") or not valid(line):
                break
        except (ValueError, TypeError):
            break
        ends.append(offset)
    return ends


def predict(
    model: str | Path,
    inputs: list[str],
    output: str | Path | None = None,
    settings: InferenceConfig = InferenceConfig(),
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    text_column: str | None = None,
) -> tuple[int, int]:
    """Write one JSONL record per document, to stdout or to `output`, as each batch finishes.

    `output` is written as OUTPUT.partial and renamed when complete; with resume=True the
    documents already in OUTPUT.partial are skipped. shard=(i, n) keeps every n-th document,
    starting at the i-th. .csv/.tsv inputs are tables of documents, their text in `text_column`
    (default: the column the model was trained on). Returns (documents classified, errors)."""
    sink = None
    own: set[Path] = set()
    if output is not None:
        output = make_parent(output, "--output")
        own = {path.resolve() for path in PredictionsFile.paths(output)}
        for item in inputs:
            if item != "-" and Path(item).resolve() in own:
                raise UsageError(f"--output {output} is also an input; write the predictions elsewhere")
    predictor = load_predictor(model, settings)
    text_column = text_column or predictor.info.config.data.text_column
    index, count = shard
    items = (item for i, item in enumerate(iter_documents(inputs, text_column, exclude=own)) if i % count == index)
    if output is not None:
        sink = PredictionsFile(output, resume)
        if sink.done:
            print(f"resume: {len(sink.done)} documents already in {sink.partial}", file=sys.stderr)
        items = sink.skip_done(items)
    ok = errors = 0
    try:
        for outcome in predictor.run(items):
            line = dumps(result_record(outcome, predictor.info, settings))
            if sink is None:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
            else:
                sink.write(line, outcome.item)
            if outcome.ok:
                ok += 1
            else:
                errors += 1
                print(f"error: {outcome.item.name}: {outcome.error}", file=sys.stderr)
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    if sink is not None:
        sink.finish()
    return ok, errors
