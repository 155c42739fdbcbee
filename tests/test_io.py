"""Writing without losing: atomic files, folder swaps, locks, and never overwriting a user's file."""

import hashlib

import pytest

import hdc.io
from hdc.errors import HdcError, UsageError
from hdc.io import Lock, check_overwrite, make_parent, sha256, swap_in, write_atomic


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with hdc.io.atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("the writer died")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    write_atomic(path, "new")
    assert path.read_text() == "new"


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_in_replaces_a_folder_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(hdc.io, "_exchange", lambda a, b: False)
    target, new = tmp_path / "bundle", tmp_path / "new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    (new / "new.txt").write_text("new")
    swap_in(new, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "bundle"
    ]


def test_a_second_lock_on_a_file_is_refused_until_the_first_is_released(tmp_path):
    first = Lock(tmp_path / "x.lock", "x")
    with pytest.raises(HdcError, match="being written by another hdc process"):
        Lock(tmp_path / "x.lock", "x")
    first.release()
    with Lock(tmp_path / "x.lock", "x"):
        pass


def test_check_overwrite_refuses_a_file_hdc_did_not_write(tmp_path):
    mine, ours, empty = tmp_path / "mine.txt", tmp_path / "ours.txt", tmp_path / "empty.txt"
    mine.write_text("a user's notes")
    ours.write_text("HDC output")
    empty.write_text("")
    with pytest.raises(UsageError, match="--out .*mine.txt: exists and was not written by hdc"):
        check_overwrite(mine, lambda head: head.startswith(b"HDC"), "--out")
    check_overwrite(ours, lambda head: head.startswith(b"HDC"), "--out")
    check_overwrite(empty, lambda head: False, "--out")
    check_overwrite(tmp_path / "absent", lambda head: False, "--out")


def test_make_parent_creates_folders_and_refuses_a_folder_as_file(tmp_path):
    assert make_parent(tmp_path / "a/b/c.json", "--json").parent.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="--json .*cannot create its folder"):
        make_parent(tmp_path / "file" / "c.json", "--json")
    with pytest.raises(UsageError, match="is a folder"):
        make_parent(tmp_path / "a", "--json")


def test_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 10000)
    assert sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
