"""The built-in defaults on a corpus too small for the deep part: a sound model all the same."""

import json
from collections import defaultdict

from conftest import ASSETS, run_cli


def test_a_48_document_folder_corpus_with_no_config_gets_at_least_08_on_held_out(tmp_path):
    by_label = defaultdict(list)
    for line in open(ASSETS / "tiny_train.jsonl"):
        row = json.loads(line)
        by_label[row["label"]].append(row["text"])
    corpus = tmp_path / "corpus"
    for label, texts in by_label.items():
        (corpus / label).mkdir(parents=True)
        for i, text in enumerate(texts[:16]):
            (corpus / label / f"{i}.txt").write_text(text)
    held_out, seen = tmp_path / "held_out.jsonl", defaultdict(int)
    with open(held_out, "w") as f:
        for line in open(ASSETS / "tiny_test.jsonl"):
            row = json.loads(line)
            if seen[row["label"]] < 2:
                seen[row["label"]] += 1
                f.write(json.dumps({"text": row["text"], "label": row["label"]}) + "\n")
    assert sum(len(list((corpus / label).iterdir())) for label in by_label) == 48 and sum(seen.values()) == 6

    trained = run_cli("train", "--train", corpus, "--out", tmp_path / "run")  # no --config, no --set
    assert trained.exit_code == 0, trained.output
    assert "a small corpus, so train.step_tokens" in trained.stderr
    assert "schedule_fitted" in json.loads((tmp_path / "run" / "summary.json").read_text())
    result = json.loads(run_cli("evaluate", tmp_path / "run", held_out, "--json").stdout)
    assert result["n"] == 6 and result["accuracy"] >= 0.8
