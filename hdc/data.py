"""Reading what users bring: labelled examples, and documents to classify. No torch here.

Labelled data (train, evaluate):
  - JSONL: {"text": ..., "label": ...}; a list of labels makes the task multi-label; "id" is kept.
  - CSV/TSV: --text-column / --label-column name the columns.
  - A folder per class: root/<label>/*.txt.

Documents to classify (predict, inspect): files, folders, globs, JSONL, and "-" for stdin (one
document per line). A bad item becomes an error record that names it; the rest still goes through.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HdcError, UsageError

CHUNK_CHARS = 1 << 20  # long files are read and tokenized this many characters at a time
SNIFF_BYTES = 8192  # how much of a file is looked at to tell binary from text
MAX_CSV_FIELD = 1 << 30


@dataclass
class Example:
    id: str
    text: str
    label: str | tuple[str, ...]  # a tuple for multi-label data
    where: str  # file:line, for error messages


@dataclass
class Document:
    """One document to classify. Files are read lazily, in chunks, so any size fits."""

    key: str  # "id" or "path": the field that names it in the output
    name: str
    text: str | None = None  # in memory (JSONL, stdin)
    path: Path | None = None  # or a file, read in chunks
    source: Callable[[], Iterable[str]] | None = None  # or a producer of chunks (generated text)
    warnings: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {self.key: self.name}

    def chunks(self) -> Iterator[str]:
        """The text in pieces of about CHUNK_CHARS characters, decoded as UTF-8 with replacement."""
        if self.text is not None:
            for i in range(0, len(self.text), CHUNK_CHARS):
                yield self.text[i : i + CHUNK_CHARS]
            return
        if self.source is not None:
            yield from self.source()
            return
        replaced = 0
        with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
            while chunk := f.read(CHUNK_CHARS):
                replaced += chunk.count("\ufffd")
                yield chunk
        if replaced:
            self.warnings.append(f"not valid UTF-8: {replaced} characters replaced with U+FFFD")

    def read(self) -> str:
        return "".join(self.chunks())

    @property
    def size(self) -> int:
        """Characters in memory, or bytes on disk: enough to tell short from long. A producer's
        length is unknown until it is read, so it counts as long."""
        if self.text is not None:
            return len(self.text)
        return self.path.stat().st_size if self.path is not None else sys.maxsize


@dataclass
class BadInput:
    """An input that could not be read: it becomes an error record in the output."""

    key: str
    name: str
    error: str

    def record(self) -> dict:
        return {self.key: self.name, "error": self.error}


# ---------------------------------------------------------------------------------------------
# Labelled examples


def _label_of(value, where: str, column: str) -> str | tuple[str, ...]:
    if isinstance(value, list):
        if not value or not all(isinstance(v, (str, int)) for v in value):
            raise HdcError(f"{where}: {column!r} must be a label or a non-empty list of labels")
        return tuple(sorted({str(v) for v in value}))
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    raise HdcError(f"{where}: {column!r} is empty or not a label: {value!r}")


def _check_text(text, where: str, column: str) -> str:
    if not isinstance(text, str):
        raise HdcError(f"{where}: {column!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise HdcError(f"{where}: empty text in column {column!r}; remove the record or fill it in")
    return text


def _jsonl_rows(f: Iterable[str]) -> Iterator[tuple[int, dict | str]]:
    """(line number, row) for each non-blank line of a JSONL file; row is an error message instead
    when the line is not a JSON object. Training data fails on it, prediction writes an error record."""
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, f"not valid JSON ({e.msg}); each line must be one JSON object"
            continue
        yield number, row if isinstance(row, dict) else "not a JSON object; each line must be one JSON object"


def _read_jsonl(path: Path, text_column: str, label_column: str) -> Iterator[Example]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, row in _jsonl_rows(f):
            where = f"{path}:{number}"
            if isinstance(row, str):
                raise HdcError(f"{where}: {row}")
            for column, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
                if column not in row:
                    raise HdcError(
                        f"{where}: no {column!r} field (fields: {', '.join(map(str, row)) or 'none'}); "
                        f"name the right one with {flag}"
                    )
            yield Example(
                id=str(row.get("id", f"{path.name}:{number}")),
                text=_check_text(row[text_column], where, text_column),
                label=_label_of(row[label_column], where, label_column),
                where=where,
            )


def _read_csv(path: Path, text_column: str, label_column: str) -> Iterator[Example]:
    csv.field_size_limit(MAX_CSV_FIELD)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise HdcError(f"{path}: empty file; expected a header row naming the columns")
        for column, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
            if column not in header:
                raise HdcError(
                    f"{path}:1: no column {column!r} (columns: {', '.join(header)}); name the right one with {flag}"
                )
        t, y = header.index(text_column), header.index(label_column)
        has_id = "id" in header
        for row in reader:
            number = reader.line_num
            where = f"{path}:{number}"
            if not row:
                continue
            if len(row) != len(header):
                raise HdcError(
                    f"{where}: {len(row)} fields but the header has {len(header)}; "
                    "quote fields that contain the delimiter"
                )
            yield Example(
                id=row[header.index("id")] if has_id else f"{path.name}:{number}",
                text=_check_text(row[t], where, text_column),
                label=_label_of(row[y], where, label_column),
                where=where,
            )


def walk_files(folder: Path) -> Iterator[Path]:
    """The files under `folder` in sorted path order, hidden entries and symlinked folders
    skipped. Lazy: memory holds one directory listing at a time, not the whole tree (a batch
    over millions of files stays flat)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return  # unreadable: its files are not there to classify
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from walk_files(Path(entry.path))
        elif entry.is_file():
            yield Path(entry.path)


def _read_folders(root: Path) -> Iterator[Example]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise HdcError(f"{root}: no class folders; expected {root}/<label>/*.txt")
    for folder in classes:
        for path in walk_files(folder):
            where = str(path)
            if _is_binary(path):
                raise HdcError(f"{where}: binary file in a class folder; remove it")
            text = path.read_text(encoding="utf-8", errors="replace")
            yield Example(
                id=str(path.relative_to(root)),
                text=_check_text(text, where, "text"),
                label=folder.name,
                where=where,
            )


def read_examples(path: str | Path, text_column: str = "text", label_column: str = "label") -> Iterator[Example]:
    """Labelled examples from JSONL, CSV/TSV or a folder per class, read lazily."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_folders(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, text_column, label_column)
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _read_jsonl(path, text_column, label_column)
    raise UsageError(f"{path}: unknown data format; use .jsonl, .csv, .tsv or a folder per class")


def load_examples(path: str | Path, text_column: str = "text", label_column: str = "label") -> list[Example]:
    examples = list(read_examples(path, text_column, label_column))
    if not examples:
        raise HdcError(f"{path}: no examples found")
    return examples


def label_set(examples: list[Example]) -> tuple[list[str], bool]:
    """The sorted labels, and whether the data is multi-label (any example has a list)."""
    multilabel = any(isinstance(e.label, tuple) for e in examples)
    labels = Counter(l for e in examples for l in (e.label if isinstance(e.label, tuple) else (e.label,)))
    return sorted(labels), multilabel


def check_trainable(examples: list[Example], source: str) -> tuple[list[str], bool]:
    labels, multilabel = label_set(examples)
    if len(labels) < 2:
        raise HdcError(
            f"{source}: only one class ({labels[0]!r}); a classifier needs at least two. "
            "Check --label-column, or add examples of other classes"
        )
    return labels, multilabel


def check_known_labels(examples: list[Example], known: list[str]) -> None:
    known_set = set(known)
    for e in examples:
        for label in e.label if isinstance(e.label, tuple) else (e.label,):
            if label not in known_set:
                raise HdcError(
                    f"{e.where}: label {label!r} was never seen in training (the model knows: "
                    f"{', '.join(known)}); remove these examples or retrain with them"
                )


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out a stratified fraction for validation (multi-label data: by first label)."""
    from sklearn.model_selection import train_test_split

    strata = [e.label[0] if isinstance(e.label, tuple) else e.label for e in examples]
    rare = [label for label, n in Counter(strata).items() if n < 2]
    if rare:
        raise HdcError(
            f"class {rare[0]!r} has a single example, so it cannot be split into train and valid; "
            "add examples, pass --valid with a validation file, or train without validation "
            "(--set data.valid_fraction=0)"
        )
    try:
        train, valid = train_test_split(examples, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError as e:
        raise HdcError(
            f"cannot hold out {fraction:.0%} for validation: {e}; pass --valid, or --set data.valid_fraction=0"
        ) from None
    return train, valid


# ---------------------------------------------------------------------------------------------
# Documents to classify


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(SNIFF_BYTES)


def _file_document(path: Path) -> Document | BadInput:
    name = str(path)
    try:
        if _is_binary(path):
            return BadInput("path", name, "binary file (it contains NUL bytes); pass text files")
        if path.stat().st_size == 0:
            return BadInput("path", name, "empty file")
    except OSError as e:
        return BadInput("path", name, f"cannot read: {e.strerror}")
    return Document("path", name, path=path)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        yield BadInput("path", str(path), f"cannot read: {e.strerror}")
        return
    with f:
        for number, row in _jsonl_rows(f):
            where = f"{path}:{number}"
            if isinstance(row, str):
                yield BadInput("id", where, row)
            elif not isinstance(row.get(text_field), str):
                yield BadInput("id", where, f"expected a JSON object with a string {text_field!r} field")
            else:
                yield Document("id", str(row["id"]) if "id" in row else where, text=row[text_field])


def _stdin_documents() -> Iterator[Document]:
    for number, line in enumerate(sys.stdin, 1):
        line = line.rstrip("\n")
        if line.strip():
            yield Document("id", f"stdin:{number}", text=line)


def iter_documents(inputs: list[str], text_field: str = "text") -> Iterator[Document | BadInput]:
    """Every document named by `inputs`, in order: files, folders (recursively, sorted),
    globs, .jsonl files (one document per line) and "-" for stdin (one per line)."""
    for item in inputs:
        if item == "-":
            yield from _stdin_documents()
            continue
        path = Path(item)
        if path.is_dir():
            empty = True
            for p in walk_files(path):
                empty = False
                yield from _expand(p, text_field)
            if empty:
                yield BadInput("path", item, "directory has no files")
        elif path.exists():
            yield from _expand(path, text_field)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                yield BadInput("path", item, "no files match this pattern")
            for p in matches:
                yield from _expand(p, text_field)
        else:
            yield BadInput("path", item, "no such file or directory")


def _expand(path: Path, text_field: str) -> Iterator[Document | BadInput]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from _jsonl_documents(path, text_field)
    else:
        yield _file_document(path)
