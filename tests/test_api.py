"""hdc.load: the Python API gives the CLI's records, and pickles as its path."""

import json
import pickle

import pytest
from conftest import run_cli

import hdc
from hdc.errors import UsageError

TEXTS = ["The Rovers won the match after a late goal.", "Heavy rain is expected across the north on Monday."]


def test_predict_matches_the_cli_records(tiny_bundle, tmp_path):
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    result = run_cli("predict", tiny_bundle, inputs)
    assert result.exit_code == 0
    expected = [json.loads(line) for line in result.stdout.splitlines()]
    assert hdc.load(tiny_bundle).predict(TEXTS) == expected
    assert hdc.load(tiny_bundle).predict([{"id": str(i), "text": t} for i, t in enumerate(TEXTS)]) == expected


def test_pickles_as_its_path_and_loads_the_model_once_where_it_is_used(tiny_bundle):
    classifier = hdc.load(tiny_bundle, top_labels=2)
    records = classifier.predict(TEXTS)  # loaded here
    shipped = pickle.dumps(classifier)
    assert len(shipped) < 2_000  # the path and settings, never the model
    copy = pickle.loads(shipped)
    assert copy._predictor is None and copy.predict(TEXTS) == records
    loaded = copy.predictor
    copy.predict(TEXTS)
    assert copy.predictor is loaded  # not loaded again
    assert all(len(r["top"]) == 2 for r in records)


def test_files_give_path_records_and_an_unreadable_one_an_error_record(tiny_run, tmp_path):
    good = tmp_path / "a.txt"
    good.write_text(TEXTS[0])
    records = hdc.load(tiny_run).predict_files([good, tmp_path / "missing.txt"])
    assert records[0]["path"] == str(good) and "label" in records[0]
    assert records[1]["path"].endswith("missing.txt") and "error" in records[1]


def test_bad_arguments_name_what_is_wrong(tiny_bundle):
    with pytest.raises(UsageError, match="colour"):
        hdc.load(tiny_bundle, colour=1)
    with pytest.raises(UsageError, match="text 1"):
        hdc.load(tiny_bundle).predict(["fine", 3])
