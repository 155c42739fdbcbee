"""`hdc predict`'s output file: what a killed run leaves, and how --resume reads it back."""

import json

from hdc.data import Document
from hdc.predict import PredictionsFile, is_predictions


def test_is_predictions_knows_its_own_records():
    assert is_predictions(b'{"id": "a", "label": "x"}\n') and is_predictions(b'{"path": "a.txt", "error": "x"}\n')
    assert not is_predictions(b'{"text": "a user file"}\n') and not is_predictions(b"id,text\n")


def test_a_killed_runs_records_are_recovered_up_to_the_last_complete_pair(tmp_path):
    output = tmp_path / "out.jsonl"
    sink = PredictionsFile(output, resume=False)
    items = [Document("id", f"d{i}", text=f"text {i}") for i in range(3)]
    for item in items:
        sink.write(json.dumps({"id": item.name, "label": "x"}), item)
    sink.close()
    _, partial, index = PredictionsFile.paths(output)
    partial.write_bytes(partial.read_bytes() + b'{"id": "d3", "lab')  # torn record, no index line
    resumed = PredictionsFile(output, resume=True)
    assert resumed.done == [["id", f"d{i}", items[i].fingerprint()] for i in range(3)]
    assert list(resumed.skip_done(items + [Document("id", "d3", text="t")]))[0].name == "d3"
    resumed.finish()
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == ["d0", "d1", "d2"]
    assert not partial.exists() and not index.exists()


def test_an_index_line_without_its_record_is_dropped(tmp_path):
    output = tmp_path / "out.jsonl"
    sink = PredictionsFile(output, resume=False)
    item = Document("id", "d0", text="t")
    sink.write(json.dumps({"id": "d0"}), item)
    sink.close()
    _, partial, index = PredictionsFile.paths(output)
    partial.write_bytes(b"")  # the record was lost, its index line was not
    assert PredictionsFile(output, resume=True).done == []
