"""The CLI surface: help, version, exit codes and the messages for bad input."""

import json

import pytest
from conftest import ASSETS, TINY, jsonl, run_cli

from hdc import __version__
from hdc.cli import cli

COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_help(command):
    for flag in ("--help", "-h"):
        result = run_cli(*command, flag)
        assert result.exit_code == 0
        assert "Usage:" in result.output


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and __version__ in result.output


def train_args(tmp_path, train, *extra):
    return ("train", "--config", TINY, "--train", train, "--out", tmp_path / "run", *extra)


def test_missing_column_names_file_line_and_flag(tmp_path):
    result = run_cli(*train_args(tmp_path, ASSETS / "tiny_test.csv"))
    assert result.exit_code == 1
    assert "tiny_test.csv:1" in result.stderr and "'text'" in result.stderr and "--text-column" in result.stderr


def test_empty_text_names_the_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "fine text here", "label": "a"}\n{"text": "  ", "label": "b"}\n')
    result = run_cli(*train_args(tmp_path, data))
    assert result.exit_code == 1 and "data.jsonl:2" in result.stderr and "empty text" in result.stderr


def test_single_class_is_refused(tmp_path):
    data = tmp_path / "one.jsonl"
    data.write_text("".join(json.dumps({"text": f"document {i}", "label": "only"}) + "\n" for i in range(10)))
    result = run_cli(*train_args(tmp_path, data))
    assert result.exit_code == 1 and "only one class" in result.stderr and "'only'" in result.stderr


def test_unseen_label_at_evaluation(tiny_run, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "The City won.", "label": "sport"}\n{"text": "Rain today.", "label": "politics"}\n')
    result = run_cli("evaluate", tiny_run, data)
    assert result.exit_code == 1
    assert "eval.jsonl:2" in result.stderr and "'politics'" in result.stderr and "never seen" in result.stderr


def test_missing_model_and_bad_flags_exit_2(tiny_run, tmp_path):
    assert run_cli("predict", tmp_path / "nope", "-").exit_code == 2
    assert run_cli("predict", tiny_run, "-", "--k", "0").exit_code == 2
    assert run_cli("predict", tiny_run, "-", "--shard", "3/2").exit_code == 2
    assert (
        run_cli(
            "train", "--train", ASSETS / "tiny_train.jsonl", "--out", tmp_path / "r", "--set", "model.nope=1"
        ).exit_code
        == 2
    )
    not_a_model = run_cli("predict", tmp_path, "-")
    assert not_a_model.exit_code == 2 and "not a run directory" in not_a_model.stderr


def test_bad_inputs_in_a_batch_give_error_records(tiny_run, tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Heavy rain is expected across the north on Monday.")
    result = run_cli("predict", tiny_run, good, tmp_path / "missing.txt", str(tmp_path / "*.nothing"), good)
    assert result.exit_code == 1
    records = jsonl(result.stdout)
    assert [("error" in r) for r in records] == [False, True, True, False]
    assert records[1] == {"path": str(tmp_path / "missing.txt"), "error": "no such file or directory"}
    assert records[0]["label"] == "weather"
    assert "4 documents, 2 errors" in result.stderr


def test_predict_stdin_one_document_per_line(tiny_run):
    result = run_cli("predict", tiny_run, "-", input="Bake the pie for forty minutes.\n\nThe Rovers won the final.\n")
    assert result.exit_code == 0
    records = jsonl(result.stdout)
    assert [r["id"] for r in records] == ["stdin:1", "stdin:3"]
    assert [r["label"] for r in records] == ["cooking", "sport"]
