"""hdc: a hierarchical document classifier for documents of any length."""

__version__ = "0.1.0"
