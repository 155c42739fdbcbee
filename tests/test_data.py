"""Readers: formats, lazy documents, and the messages for bad data."""

import pytest

from hdc.data import (
    BadInput,
    Document,
    check_trainable,
    iter_documents,
    label_set,
    load_examples,
    split_examples,
    walk_files,
)
from hdc.errors import HdcError, UsageError


def test_jsonl_csv_and_folders(assets):
    jsonl = load_examples(assets / "tiny_test.jsonl")
    csv = load_examples(assets / "tiny_test.csv", text_column="body", label_column="topic")
    assert [e.label for e in jsonl] == [e.label for e in csv] and [e.text for e in jsonl] == [e.text for e in csv]
    assert jsonl[0].id == "test-0" and jsonl[0].where.endswith("tiny_test.jsonl:1")
    folders = load_examples(assets / "folders")
    assert {e.label for e in folders} == {"cooking", "sport", "weather"} and len(folders) == 12


def test_multilabel_detected_from_lists(assets):
    labels, multilabel = label_set(load_examples(assets / "multilabel.jsonl"))
    assert multilabel and labels == ["cooking", "sport", "weather"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "a", "label": "x"}\nnot json\n', "data.jsonl:2: not valid JSON"),
        ('{"body": "a", "label": "x"}\n', "no 'text' field"),
        ('{"text": "a", "label": ""}\n', "data.jsonl:1: 'label' is empty"),
        ('{"text": 5, "label": "x"}\n', "must be a string"),
    ],
)
def test_bad_jsonl(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(HdcError, match=message):
        load_examples(path)


def test_ragged_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nfine,a\ntoo,many,fields\n")
    with pytest.raises(HdcError, match="data.csv:3: 3 fields but the header has 2"):
        load_examples(path)


def test_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "data.xml").write_text("<x/>")
    with pytest.raises(UsageError, match="unknown data format"):
        load_examples(tmp_path / "data.xml")
    with pytest.raises(UsageError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")


def test_split_refuses_a_class_with_one_example(assets):
    examples = load_examples(assets / "tiny_train.jsonl")
    examples[0].label = "rare"
    with pytest.raises(HdcError, match=r"class 'rare' has a single example.*data.valid_fraction=0"):
        split_examples(examples, 0.1, seed=0)
    train, valid = split_examples(examples[1:], 0.1, seed=0)
    assert len(valid) == 24 and {e.label for e in valid} == {"cooking", "sport", "weather"}


def test_single_class(assets):
    examples = [e for e in load_examples(assets / "tiny_train.jsonl") if e.label == "sport"]
    with pytest.raises(HdcError, match="only one class"):
        check_trainable(examples, "x.jsonl")


def test_iter_documents_kinds_and_errors(tmp_path, assets):
    (tmp_path / "a.txt").write_text("Some text.")
    (tmp_path / "b.bin").write_bytes(b"\x00\x01binary")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "docs.jsonl").write_text('{"id": "x1", "text": "hello"}\n{bad\n{"text": "no id"}\n')
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    items = list(
        iter_documents(
            [
                str(tmp_path / "a.txt"),
                str(tmp_path / "*.bin"),
                str(tmp_path / "empty.txt"),
                str(tmp_path / "docs.jsonl"),
                str(latin),
                str(tmp_path / "missing"),
                str(tmp_path / "none-*.txt"),
            ]
        )
    )
    kinds = [(type(i).__name__, i.name.rsplit("/", 1)[-1]) for i in items]
    assert kinds == [
        ("Document", "a.txt"),
        ("BadInput", "b.bin"),
        ("BadInput", "empty.txt"),
        ("Document", "x1"),
        ("BadInput", "docs.jsonl:2"),
        ("Document", "docs.jsonl:3"),
        ("Document", "latin1.txt"),
        ("BadInput", "missing"),
        ("BadInput", "none-*.txt"),
    ]
    assert "binary" in items[1].error and items[2].error == "empty file"
    document = items[6]
    assert document.read() == "caf\ufffd cr\ufffdme" and "2 bytes replaced" in document.warnings[0]


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    [item] = iter_documents([str(tmp_path / "empty")])
    assert isinstance(item, BadInput) and item.error == "directory has no files"


def test_folder_walk_is_sorted_and_skips_hidden(tmp_path):
    for name in ["b/2.txt", "a.txt", "b/1.txt", "a/z.txt", "c/d/e.txt", ".hidden.txt", ".git/x.txt", "b/.x"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text")
    names = [str(p.relative_to(tmp_path)) for p, problem in walk_files(tmp_path) if problem is None]
    assert names == ["a/z.txt", "a.txt", "b/1.txt", "b/2.txt", "c/d/e.txt"]


def test_documents_read_in_chunks(tmp_path, monkeypatch):
    import hdc.data

    monkeypatch.setattr(hdc.data, "CHUNK_BYTES", 7)
    path = tmp_path / "long.txt"
    path.write_text("abcdefghij" * 5)
    chunks = list(Document("path", str(path), path=path).chunks())
    assert all(len(c) <= 7 for c in chunks) and "".join(chunks) == "abcdefghij" * 5
