"""hdc: a hierarchical document classifier for documents of any length.

The package in layers; a module imports only from its own layer or the ones before it, and
tests/test_layers.py checks it, with no import circles:

    foundation   errors, config, io, text, data, metrics, schema (the torch/runtime contract)
    model        model (torch), stream (numpy: blocks merged into a document state)
    backends     checkpoint (torch), runtime (ONNX Runtime, no torch)
    engine       predictor (Predictor, load_predictor, the record format)
    commands     predict, evaluate, explain + explain_html, export, serve, train/ (recipe + parts), news,
                 api (the Python API: hdc.load)
    cli          cli

The runtime path (a bundle: predictor, runtime, stream, schema and the foundation, and the
predict, evaluate, inspect and serve commands) never imports torch or lightning.
"""

__version__ = "0.1.0"

from .api import Classifier, load  # noqa: E402  (the public Python API; see hdc/api.py)

__all__ = ["Classifier", "load", "__version__"]
