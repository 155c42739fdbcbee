"""Training with Lightning. `train` (hdc.train.recipe) is what `hdc train` calls; the parts it
is made of are batches, module, plumbing, ngram_linear and vectors."""

from .recipe import train

__all__ = ["train"]
