"""Reading what users bring: labelled examples, and documents to classify. No torch here.

Labelled data (train, evaluate):
  - JSONL: {"text": ..., "label": ...}; a list of labels makes the task multi-label; "id" is kept.
  - CSV/TSV: --text-column / --label-column name the columns.
  - A folder per class: root/<label>/*.txt.

Documents to classify (predict, inspect): files, folders, globs, JSONL, and "-" for stdin (one
document per line). A bad item becomes an error record that names it; the rest still goes through.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sklearn.model_selection import train_test_split

from .errors import HdcError, UsageError

CHUNK_BYTES = 1 << 20  # long files are read and tokenized this many bytes at a time
SNIFF_BYTES = 8192  # how much of a file is looked at to tell binary from text
MAX_CSV_FIELD = 1 << 30
TABLES = (".csv", ".tsv")  # a table of documents, one per row
JSONL = (".jsonl", ".ndjson")  # one JSON document per line


# ---------------------------------------------------------------------------------------------
# Decoding: every byte hdc reads as text goes through here

# A byte-order mark names the encoding (and is dropped); without one, UTF-8. UTF-32's marks
# begin with UTF-16's, so they are tried first.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate: JSON can carry one, UTF-8 cannot
_replaced = threading.local()


def _count_replacement(error: UnicodeDecodeError) -> tuple[str, int]:
    _replaced.bytes = getattr(_replaced, "bytes", 0) + error.end - error.start
    return "\ufffd", error.end


codecs.register_error("hdc-replace", _count_replacement)


def decode(data: bytes, encoding: str = "utf-8", decoder=None) -> tuple[str, int]:
    """Text from bytes, and how many bytes were not valid `encoding` (each run of them becomes
    U+FFFD). With an incremental `decoder`, `data` is the next piece of a longer text."""
    _replaced.bytes = 0
    text = decoder.decode(data) if decoder else data.decode(encoding, "hdc-replace")
    return text, _replaced.bytes


def clean(text: str) -> tuple[str, int]:
    """`text` with each lone surrogate (from a JSON escape such as "\\ud83d", or a file name that
    is not valid UTF-8) replaced by U+FFFD, and how many there were: no later step can encode them."""
    if _SURROGATE.search(text) is None:
        return text, 0
    return _SURROGATE.subn("\ufffd", text)


def sniff_encoding(head: bytes) -> tuple[str, int]:
    """The encoding a file's first bytes name by their byte-order mark, and the mark's length."""
    for bom, encoding in BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return "utf-8", 0


def replaced_warning(count: int, encoding: str = "utf-8") -> str:
    return f"not valid {encoding.upper()}: {count} bytes replaced with U+FFFD"


class TextFile:
    """A text file opened for reading: its encoding from the byte-order mark (UTF-8 without
    one), decoded with replacement, counting the bytes replaced. `lines()` gives each line
    with its own count; `chunks()` the text in pieces of about CHUNK_BYTES."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = open(path, "rb")
        self.encoding, skip = sniff_encoding(self.raw.read(4))
        self.raw.seek(skip)
        self.replaced = 0

    @property
    def note(self) -> str | None:
        """What the reader should know about how the file was decoded."""
        if self.encoding.startswith(("utf-16", "utf-32")):
            return f"decoded as {self.encoding.upper()} (the file starts with its byte-order mark)"
        return None

    def chunks(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.encoding)("hdc-replace")
        while data := self.raw.read(CHUNK_BYTES):
            text, replaced = decode(data, decoder=decoder)
            self.replaced += replaced
            if text:
                yield text
        text, replaced = decode(b"", decoder=decoder)  # a sequence cut off at the end
        self.replaced += replaced
        if text:
            yield text

    def lines(self) -> Iterator[tuple[str, int]]:
        if self.encoding == "utf-8":
            for line in self.raw:
                text, replaced = decode(line)
                self.replaced += replaced
                yield text, replaced
            return
        carry = ""  # a wide encoding: newlines are not single bytes, so decode first, then split
        for chunk in self.chunks():  # at "\n" only, as the UTF-8 path does (a JSON string may hold U+2028)
            *lines, carry = (carry + chunk).split("\n")
            yield from ((line + "\n", 0) for line in lines)
        if carry:
            yield carry, 0

    def text_lines(self) -> Iterator[str]:
        """The rest of the file line by line, as the csv module reads it; `replaced` counts as
        it goes, so a reader can tell which of its records held undecodable bytes."""
        return (text for text, _ in self.lines())

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Example:
    id: str
    text: str
    label: str | tuple[str, ...]  # a tuple for multi-label data
    where: str  # file:line, for error messages

    def __post_init__(self):
        self.text = clean(self.text)[0]

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels as a tuple, one for single-label data."""
        return self.label if isinstance(self.label, tuple) else (self.label,)


@dataclass
class Document:
    """One document to classify. Files are read lazily, in chunks, so any size fits."""

    key: str  # "id" or "path": the field that names it in the output
    name: str
    text: str | None = None  # in memory (JSONL, stdin)
    path: Path | None = None  # or a file, read in chunks
    source: Callable[[], Iterable[str]] | None = None  # or a producer of chunks (generated text)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.name = clean(self.name)[0]
        if self.text is not None:
            self.text, lone = clean(self.text)
            if lone:
                self.warn(f"{lone} lone surrogates (not valid Unicode) replaced with U+FFFD")

    def warn(self, message: str) -> None:
        if message not in self.warnings:  # a file may be read more than once (inspect)
            self.warnings.append(message)

    def record(self) -> dict:
        return {self.key: self.name}

    def chunks(self) -> Iterator[str]:
        """The text in pieces of about CHUNK_BYTES, decoded as its byte-order mark says (UTF-8
        without one) with replacement; the record warns of what was replaced."""
        if self.text is not None:
            for i in range(0, len(self.text), CHUNK_BYTES):
                yield self.text[i : i + CHUNK_BYTES]
            return
        if self.source is not None:
            yield from self.source()
            return
        with TextFile(self.path) as f:
            if f.note:
                self.warn(f.note)
            yield from f.chunks()
            if f.replaced:
                self.warn(replaced_warning(f.replaced, f.encoding))

    def read(self) -> str:
        return "".join(self.chunks())

    def fingerprint(self) -> str:
        """What identifies this document's content, cheaply: a hash of text in memory, the size
        and modification time of a file. `hdc predict --resume` checks it."""
        if self.text is not None:
            return hashlib.blake2b(self.text.encode("utf-8"), digest_size=12).hexdigest()
        if self.path is not None:
            stat = self.path.stat()
            return f"{stat.st_size}:{stat.st_mtime_ns}"
        return ""

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

    def __post_init__(self):
        self.name = clean(self.name)[0]

    def record(self) -> dict:
        return {self.key: self.name, "error": self.error}

    def fingerprint(self) -> str:
        return "error"


# ---------------------------------------------------------------------------------------------
# Labelled examples


def _label_of(value, where: str, column: str) -> str | tuple[str, ...]:
    if isinstance(value, list):
        if not value or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise HdcError(f"{where}: {column!r} must be a label or a non-empty list of labels")
        return tuple(sorted({clean(str(v))[0] for v in value}))
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return clean(str(value).strip())[0]
    raise HdcError(f"{where}: {column!r} is empty or not a label: {value!r}")


def _check_text(text, where: str, column: str) -> str:
    if not isinstance(text, str):
        raise HdcError(f"{where}: {column!r} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise HdcError(f"{where}: empty text in column {column!r}; remove the record or fill it in")
    return text


def _jsonl_rows(lines: Iterable[tuple[str, int]]) -> Iterator[tuple[int, dict | str, int]]:
    """(line number, row, bytes replaced) for each non-blank line of a JSONL file; row is an error
    message instead when the line is not a JSON object. Training data fails on it, prediction
    writes an error record."""
    for number, (line, replaced) in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, f"not valid JSON ({e.msg}); each line must be one JSON object", replaced
            continue
        except RecursionError:
            yield number, "JSON nested too deeply; each line must be one flat JSON object", replaced
            continue
        yield number, row if isinstance(row, dict) else "not a JSON object; each line must be one JSON object", replaced


def _read_jsonl(path: Path, text_column: str, label_column: str) -> Iterator[Example]:
    with TextFile(path) as f:
        for number, row, _ in _jsonl_rows(f.lines()):
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
        _report_replaced(f)


def _table(path: Path, f: TextFile, columns: dict[str, str]) -> tuple[Iterator[tuple[int, list[str]]], list[str]]:
    """The rows of a CSV/TSV file as (line number, fields), and its header, which must name
    every column of `columns` ({column: the flag that names it})."""
    csv.field_size_limit(MAX_CSV_FIELD)
    reader = csv.reader(f.text_lines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise HdcError(f"{path}:1: not a readable table ({e})") from None
    if not header:
        raise HdcError(f"{path}: empty file; expected a header row naming the columns")
    for column, flag in columns.items():
        if column not in header:
            raise HdcError(
                f"{path}:1: no column {column!r} (columns: {', '.join(header)}); name the right one with {flag}"
            )

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise HdcError(f"{path}:{reader.line_num}: {e}") from None
            if row:
                yield reader.line_num, row

    return rows(), header


def _read_csv(path: Path, text_column: str, label_column: str) -> Iterator[Example]:
    with TextFile(path) as f:
        rows, header = _table(path, f, {text_column: "--text-column", label_column: "--label-column"})
        t, y = header.index(text_column), header.index(label_column)
        has_id = "id" in header
        for number, row in rows:
            where = f"{path}:{number}"
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


def walk_files(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """The files under `folder` in sorted path order, hidden entries and symlinked folders
    skipped, each with None, or with what is wrong with it (a symlink loop, say). Lazy: memory
    holds one directory listing at a time, not the whole tree (a batch over millions of files
    stays flat)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return  # unreadable: its files are not there to classify
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from walk_files(Path(entry.path))
            elif entry.is_file():
                yield Path(entry.path), None
            elif entry.is_symlink() and not os.path.exists(entry.path):
                yield Path(entry.path), "broken symbolic link: it points to nothing"
        except OSError as e:  # a symlink loop, say
            yield Path(entry.path), f"cannot read: {e.strerror}"


def _read_folders(root: Path) -> Iterator[Example]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise HdcError(f"{root}: no class folders; expected {root}/<label>/*.txt")
    for folder in classes:
        for path, problem in walk_files(folder):
            where = str(path)
            if problem is None and _is_binary(path):
                problem = "binary file in a class folder"
            if problem is not None:
                print(f"warning: {where}: {problem}; skipped", file=sys.stderr)
                continue
            with TextFile(path) as f:
                text = "".join(f.chunks())
                _report_replaced(f)
            yield Example(
                id=str(path.relative_to(root)),
                text=_check_text(text, where, "text"),
                label=folder.name,
                where=where,
            )


def _report_replaced(f: TextFile) -> None:
    if f.replaced:
        print(f"warning: {f.path}: {replaced_warning(f.replaced, f.encoding)}", file=sys.stderr)


def read_examples(path: str | Path, text_column: str = "text", label_column: str = "label") -> Iterator[Example]:
    """Labelled examples from JSONL, CSV/TSV or a folder per class, read lazily."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir():
        return _read_folders(path)
    suffix = path.suffix.lower()
    if suffix in TABLES:
        return _read_csv(path, text_column, label_column)
    if suffix in JSONL + (".json",):
        return _read_jsonl(path, text_column, label_column)
    raise UsageError(f"{path}: unknown data format; use .jsonl, .csv, .tsv or a folder per class")


def load_examples(path: str | Path, text_column: str = "text", label_column: str = "label") -> list[Example]:
    try:
        examples = list(read_examples(path, text_column, label_column))
    except OSError as e:
        raise HdcError(f"{e.filename or path}: cannot read: {e.strerror}") from None
    if not examples:
        raise HdcError(f"{path}: no examples found")
    return examples


def label_set(examples: list[Example]) -> tuple[list[str], bool]:
    """The sorted labels, and whether the data is multi-label (any example has a list)."""
    multilabel = any(isinstance(e.label, tuple) for e in examples)
    return sorted({label for e in examples for label in e.labels}), multilabel


def check_trainable(examples: list[Example], source: str) -> tuple[list[str], bool]:
    labels, multilabel = label_set(examples)
    if len(labels) < 2:
        raise HdcError(
            f"{source}: only one class ({labels[0]!r}); a classifier needs at least two. "
            "Check --label-column, or add examples of other classes"
        )
    return labels, multilabel


def check_known_labels(examples: list[Example], known: list[str] | tuple[str, ...], multilabel: bool) -> None:
    """Every label of `examples` is one the model knows, and each example has one label when the
    model is single-label (a one-label list counts as that label; `examples` are changed so)."""
    known_set = set(known)
    for e in examples:
        for label in e.labels:
            if label not in known_set:
                raise HdcError(
                    f"{e.where}: label {label!r} was never seen in training (the model knows: "
                    f"{', '.join(known)}); remove these examples or retrain with them"
                )
        if not multilabel and isinstance(e.label, tuple):
            if len(e.label) != 1:
                raise HdcError(
                    f"{e.where}: a list of {len(e.label)} labels, but the model is single-label (trained on "
                    "one label per document); give one label, or train a multi-label model on lists"
                )
            e.label = e.label[0]


def split_examples(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out a stratified fraction for validation (multi-label data: by first label)."""
    strata = [e.labels[0] for e in examples]
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
    """NUL bytes in the first SNIFF_BYTES, unless a byte-order mark says UTF-16 or UTF-32 (whose
    text is full of them)."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    return sniff_encoding(head)[0] == "utf-8" and b"\0" in head


def _file_document(path: Path) -> Document | BadInput:
    name = str(path)
    try:
        if path.stat().st_size == 0:
            return BadInput("path", name, "empty file")
        if _is_binary(path):
            return BadInput("path", name, "binary file (it contains NUL bytes); pass text files")
    except OSError as e:
        return BadInput("path", name, f"cannot read: {e.strerror}")
    return Document("path", name, path=path)


def _jsonl_documents(path: Path, f: TextFile, text_column: str) -> Iterator[Document | BadInput]:
    """A JSONL file: one document per line, its text in `text_column`, named by its "id"."""
    for number, row, replaced in _jsonl_rows(f.lines()):
        where = f"{path}:{number}"
        if isinstance(row, str):
            yield BadInput("id", where, row)
        elif not isinstance(row.get(text_column), str):
            yield BadInput("id", where, f"expected a JSON object with a string {text_column!r} field (--text-column)")
        else:
            document = Document("id", str(row["id"]) if "id" in row else where, text=row[text_column])
            if replaced:
                document.warn(replaced_warning(replaced))
            if f.note:
                document.warn(f.note)
            yield document


def _table_documents(path: Path, f: TextFile, text_column: str) -> Iterator[Document | BadInput]:
    """A CSV/TSV file as a table of documents: one per row, its text in `text_column`, named by
    the "id" column where there is one."""
    try:
        rows, header = _table(path, f, {text_column: "--text-column"})
        t, named, seen = header.index(text_column), "id" in header, f.replaced
        for number, row in rows:
            where = f"{path}:{number}"
            if len(row) != len(header):
                yield BadInput("id", where, f"{len(row)} fields but the header has {len(header)}; quote the delimiter")
            else:
                document = Document("id", row[header.index("id")] if named else where, text=row[t])
                # the csv module reads a record's lines only, so what f.replaced gained since the
                # last record was replaced in this one
                if f.replaced > seen:
                    document.warn(replaced_warning(f.replaced - seen))
                if f.note:
                    document.warn(f.note)
                yield document
            seen = f.replaced
    except HdcError as e:
        yield BadInput("path", str(path), str(e).removeprefix(f"{path}:1: ").removeprefix(f"{path}: "))


def _many_documents(path: Path, read, text_column: str) -> Iterator[Document | BadInput]:
    """The documents that `read` (_jsonl_documents, _table_documents) finds in one file."""
    try:
        f = TextFile(path)
    except OSError as e:
        yield BadInput("path", str(path), f"cannot read: {e.strerror}")
        return
    with f:
        yield from read(path, f, text_column)


def _stdin_documents() -> Iterator[Document]:
    """One document per line of standard input, decoded as UTF-8 (with replacement) line by line."""
    stream = getattr(sys.stdin, "buffer", None)
    lines = ((line, 0) for line in sys.stdin) if stream is None else (decode(line) for line in stream)
    for number, (line, replaced) in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if line.strip():
            document = Document("id", f"stdin:{number}", text=line)
            if replaced:
                document.warn(replaced_warning(replaced))
            yield document


def _glob(pattern: str) -> Iterator[Path]:
    """The files a glob pattern matches, sorted; `**` does not follow symlinked folders (pathlib's
    rule, so a symlink loop cannot recurse), and hidden names match only if the pattern says so."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base, rest = Path(*parts[:first]) if first else Path("."), Path(*parts[first:])
    hidden = any(part.startswith(".") for part in rest.parts)
    matches = []
    for path in base.glob(str(rest)):
        relative = path.relative_to(base).parts
        if (hidden or not any(part.startswith(".") for part in relative)) and path.is_file():
            matches.append(path)
    return iter(sorted(matches))


def iter_documents(
    inputs: list[str], text_column: str = "text", exclude: set[Path] = frozenset()
) -> Iterator[Document | BadInput]:
    """Every document named by `inputs`, in order: files, folders (recursively, sorted), globs,
    .jsonl files (one document per line), .csv/.tsv tables (one per row) and "-" for stdin (one
    per line). Paths in `exclude` (resolved: hdc's own output) are skipped."""

    def expand(path: Path) -> Iterator[Document | BadInput]:
        if exclude and path.resolve() in exclude:
            return
        suffix = path.suffix.lower()
        if suffix in JSONL:
            yield from _many_documents(path, _jsonl_documents, text_column)
        elif suffix in TABLES:
            yield from _many_documents(path, _table_documents, text_column)
        else:
            yield _file_document(path)

    for item in inputs:
        if item == "-":
            yield from _stdin_documents()
            continue
        path = Path(item)
        try:
            kind = "dir" if path.is_dir() else "file" if path.exists() else "glob" if glob.has_magic(item) else None
        except OSError as e:
            yield BadInput("path", item, f"cannot read: {e.strerror}")
            continue
        if kind == "dir":
            empty = True
            for p, problem in walk_files(path):
                empty = False
                yield from expand(p) if problem is None else [BadInput("path", str(p), problem)]
            if empty:
                yield BadInput("path", item, "directory has no files")
        elif kind == "file":
            yield from expand(path)
        elif kind == "glob":
            found = False
            for p in _glob(item):
                found = True
                yield from expand(p)
            if not found:
                yield BadInput("path", item, "no files match this pattern")
        elif os.path.islink(item):
            yield BadInput("path", item, "broken symbolic link or symlink loop")
        else:
            yield BadInput("path", item, "no such file or directory")
