"""The Python API: `hdc.load(path)` gives a Classifier whose `predict` returns `hdc predict`'s records.

    import hdc
    classifier = hdc.load("runs/news-bundle")           # a bundle, a run directory or a checkpoint
    classifier.predict(["Some text.", {"id": "a7", "text": "More text."}])
    # [{"id": "0", "label": "bbc", "top": [...]}, {"id": "a7", ...}]
    classifier.predict_files(["examples/article.txt"])   # [{"path": ..., "label": ...}]

A Classifier pickles as its path and settings, and loads the model the first time it is used in
a process: a distributed engine ships it to each worker for the cost of a few bytes, and each
worker loads the model once (`hdc batch`, in hdc/distributed.py, does this on Ray Data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from .config import InferenceConfig
from .data import Document
from .errors import UsageError
from .predictor import Predictor, load_predictor, result_record


class Classifier:
    def __init__(self, path: str | Path, settings: InferenceConfig = InferenceConfig()):
        self.path, self.settings = str(path), settings
        self._predictor: Predictor | None = None

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = load_predictor(self.path, self.settings)
        return self._predictor

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.labels)

    def __getstate__(self) -> dict:
        return {"path": self.path, "settings": self.settings}  # never the loaded model

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["settings"])

    def predict(self, texts: Iterable[str | dict]) -> list[dict]:
        """One record per text, in order. A text is a string (its id is its position) or a dict
        with "text" and optionally "id". A text that cannot be classified gets an "error" record."""
        documents = []
        for i, item in enumerate(texts):
            if isinstance(item, str):
                documents.append(Document("id", str(i), text=item))
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                documents.append(Document("id", str(item.get("id", i)), text=item["text"]))
            else:
                raise UsageError(
                    f"text {i}: expected a string or a dict with a 'text' string, got {type(item).__name__}"
                )
        return self._records(documents)

    def predict_files(self, paths: Iterable[str | Path]) -> list[dict]:
        """One record per file, in order, read in chunks (any size); an unreadable file gets an
        "error" record naming it."""
        return self._records([Document("path", str(p), path=Path(p)) for p in paths])

    def _records(self, documents: list[Document]) -> list[dict]:
        outcomes = self.predictor.run(documents, progress=False)
        return [result_record(outcome, self.predictor.info, self.settings) for outcome in outcomes]


def load(path: str | Path, **settings) -> Classifier:
    """A Classifier for a bundle, a run directory or a checkpoint. Keyword settings are those of
    InferenceConfig: top_labels, threshold, batch_tokens, block_tokens, threads."""
    try:
        return Classifier(path, replace(InferenceConfig(), **settings))
    except TypeError as e:
        raise UsageError(f"hdc.load: {e}") from None
