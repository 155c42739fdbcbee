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
    plain = TrainConfig(dense_cut_loss=0.0)  # one pooling: the spy below reads one forward's attention
    for train_config, expected in ((replace(plain, select_k=1), 1), (plain, CONFIG.top_k)):
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


def test_cut_loss_mixes_both_poolings_from_dense_cut_after(monkeypatch):
    """train.dense_cut_loss=w: before epoch dense_cut_after a step's loss is the plain loss; from
    it, (1 - w) * the loss pooling every sentence + w * the loss pooling the best N."""
    from dataclasses import replace

    import torch.nn.functional as F
    from test_model import CONFIG, batch

    import hdc.train.module as module_code
    from hdc.config import Config, TrainConfig
    from hdc.schema import ModelInfo
    from hdc.train.module import LitClassifier

    model = replace(CONFIG, dense_sentences=2, ngram_orders=(), ngram_word_orders=(), ngram_linear=False)
    inputs = {k: v for k, v in batch().items() if not k.startswith("ngram")}
    targets = torch.tensor([0, 1])
    train = TrainConfig(dense_cut_loss=0.25, dense_cut_after=1, label_smoothing=0.0)
    module = LitClassifier(ModelInfo(Config(model=model, train=train), ("a", "b", "c"), False, "{}", "test"))
    module.log = lambda *args, **kwargs: None
    monkeypatch.setattr(LitClassifier, "trainer", None)  # no Trainer: data_epoch below says the epoch
    module.train()
    with torch.no_grad():
        every, best = module.model(**inputs, cut=True)
    plain, cut = F.cross_entropy(every, targets), F.cross_entropy(best, targets)
    assert abs(plain - cut) > 1e-4  # document 0's 3 sentences pool differently
    for epoch, expected in ((0, plain), (1, 0.75 * plain + 0.25 * cut)):
        monkeypatch.setattr(module_code, "data_epoch", lambda trainer, epoch=epoch: epoch)
        with torch.no_grad():
            assert torch.allclose(module.training_step((inputs, targets), 0), expected)


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


def test_classes_are_uneven_beyond_twice_the_documents_of_another():
    import numpy as np

    from hdc.train.module import uneven

    assert not uneven(np.array([0] * 10 + [1] * 8 + [2] * 6), multilabel=False)  # within 2x
    assert uneven(np.array([0] * 10 + [1] * 8 + [2] * 4), multilabel=False)
    every = np.ones(20)  # a label on every document has nothing to weigh
    assert not uneven(np.stack([every, np.arange(20) % 2], 1), multilabel=True)
    assert uneven(np.stack([every, np.arange(20) % 5 == 0], 1), multilabel=True)  # on in 4 of 20


def test_training_with_balanced_class_weights(tmp_path):
    result = run_cli(*tiny_train_args(tmp_path / "run"), *TWO_STEPS, "--set", "train.class_weight=balanced")
    assert result.exit_code == 0, result.output
