"""The engine: outcomes in input order, whatever mix of short, long and bad inputs."""

import json

import numpy as np
from conftest import ASSETS

from hdc.config import InferenceConfig
from hdc.data import BadInput, Document
from hdc.predictor import dumps, load_predictor, result_record


def test_outcomes_come_back_in_input_order(tiny_bundle):
    texts = [json.loads(line)["text"] for line in open(ASSETS / "tiny_test.jsonl")]
    items = [
        Document("id", "short-1", text=texts[0]),
        BadInput("path", "broken.bin", "binary file"),
        Document("id", "long", text=" ".join(texts * 3)),  # over block_tokens: streamed
        Document("id", "short-2", text=texts[1]),
        Document("id", "blank", text="   "),
    ]
    predictor = load_predictor(tiny_bundle, InferenceConfig(batch_tokens=1024, block_tokens=512))
    outcomes = list(predictor.run(items, progress=False))
    assert [o.item.name for o in outcomes] == ["short-1", "broken.bin", "long", "short-2", "blank"]
    assert [o.ok for o in outcomes] == [True, False, True, True, False]
    assert outcomes[2].state.tokens > 512 and "empty after cleaning" in outcomes[4].error
    assert np.allclose(outcomes[0].probabilities.sum(), 1)


def test_a_record_lists_the_top_labels_and_the_warnings(tiny_bundle):
    predictor = load_predictor(tiny_bundle, InferenceConfig(top_labels=2))
    document = Document("id", "d\ud800", text="Bake the pie.\ud83d")
    [outcome] = predictor.run([document], progress=False)
    record = result_record(outcome, predictor.info, predictor.settings)
    assert record["id"] == "d\ufffd" and record["label"] == "cooking" and len(record["top"]) == 2
    assert "lone surrogates" in record["warnings"][0]
    assert json.loads(dumps(record).encode("utf-8")) == record


def test_the_input_is_read_on_the_calling_thread_only_when_read_ahead_is_off(tiny_bundle):
    import threading

    text = json.loads(open(ASSETS / "tiny_test.jsonl").readline())["text"]

    def readers(settings: InferenceConfig) -> set[str]:
        seen = set()

        def items():
            for i in range(5):
                seen.add(threading.current_thread().name)
                yield Document("id", str(i), text=text)

        assert len(list(load_predictor(tiny_bundle, settings).run(items(), progress=False))) == 5
        return seen

    here = threading.current_thread().name
    assert readers(InferenceConfig(read_ahead=False)) == {here}
    assert here not in readers(InferenceConfig())  # the bundle's backend reads ahead by default
