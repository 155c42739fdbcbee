"""The LightningModule: fewer phrases selected in training steps, SGD on the n-gram table."""

import torch
from conftest import TWO_STEPS, run_cli, tiny_train_args


def test_training_steps_select_fewer_phrases_than_inference(monkeypatch):
    from dataclasses import replace

    from test_model import CONFIG, batch

    from hdc.config import Config, TrainConfig
    from hdc.schema import ModelInfo
    from hdc.train.module import LitClassifier

    model = replace(CONFIG, ngram_orders=(), ngram_word_orders=(), ngram_linear=False)
    inputs = {k: v for k, v in batch().items() if not k.startswith("ngram")}
    selected = []
    for train_config, expected in ((TrainConfig(select_k=1), 1), (TrainConfig(), CONFIG.top_k)):
        module = LitClassifier(ModelInfo(Config(model=model, train=train_config), ("a", "b"), False, "{}", "test"))

        def spy(*args, forward=module.model.forward, **kwargs):
            logits, attention = forward(*args, **kwargs, return_attention=True)
            selected.append(attention.selected.shape[-1])
            return logits

        monkeypatch.setattr(module.model, "forward", spy)
        module.log = lambda *args, **kwargs: None
        module.train()
        module.training_step((inputs, torch.tensor([0, 1])), 0)
        module.eval()
        with torch.no_grad():  # as Lightning validates
            module.validation_step((inputs, torch.tensor([0, 1])), 0)
        assert selected[-2:] == [expected, CONFIG.top_k]  # training steps, then validation


def test_ngram_table_takes_sgd_steps_at_ngram_lr(tmp_path):
    """One step moves the n-gram table by -ngram_lr * schedule * gradient, so, measured from a
    run at ngram_lr 0 (which keeps the seeded initial table), doubling ngram_lr doubles the move."""
    tables = {}
    for lr in (0.0, 5.0, 10.0):
        out = tmp_path / str(lr)
        result = run_cli(
            *tiny_train_args(out), *TWO_STEPS, "--set", "train.max_steps=1", "--set", f"train.ngram_lr={lr}"
        )
        assert result.exit_code == 0, result.output
        tables[lr] = torch.load(out / "checkpoints/last.ckpt", weights_only=True)["state_dict"][
            "model.ngram_embed.weight"
        ]
    once, twice = tables[5.0] - tables[0.0], tables[10.0] - tables[0.0]
    assert once.abs().max() > 1e-4
    assert torch.allclose(twice, 2 * once, atol=1e-6)


def test_balanced_class_weights_are_inverse_frequencies():
    import numpy as np

    from hdc.train.module import class_weights

    single = class_weights(np.array([0, 0, 0, 1]), 2, multilabel=False)
    assert torch.allclose(single, torch.tensor([4 / 6, 4 / 2]))
    multi = class_weights(np.array([[1, 0], [1, 1], [1, 0], [0, 0]], np.float32), 2, multilabel=True)
    assert torch.allclose(multi, torch.tensor([1 / 3, 3 / 1]))


def test_training_with_balanced_class_weights(tmp_path):
    result = run_cli(*tiny_train_args(tmp_path / "run"), *TWO_STEPS, "--set", "train.class_weight=balanced")
    assert result.exit_code == 0, result.output
