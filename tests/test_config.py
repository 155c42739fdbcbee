from pathlib import Path

import pytest

from hdc.config import Config, load_config
from hdc.errors import UsageError
from hdc.schema import ModelInfo
from hdc.text import train_tokenizer

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_yaml_is_the_built_in_defaults():
    assert load_config(CONFIGS / "default.yaml") == Config() == load_config(None)


def test_a_saved_models_ngram_settings_reach_its_segmenter():
    """Checkpoints and bundles both rebuild the segmenter from the saved description."""
    config = load_config(CONFIGS / "news.yaml")
    tokenizer = train_tokenizer(["one two three"] * 3, 300).to_str()
    info = ModelInfo.from_dict(ModelInfo(config, ("a", "b"), False, tokenizer, "0").to_dict())
    segmenter = info.segmenter()
    assert (segmenter.ngram_orders, segmenter.ngram_raw) == (config.model.ngram_orders, config.model.ngram_raw)
    assert segmenter.ngram_raw  # the news config reads n-grams as written


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_loads_and_names_its_command(path):
    assert path.read_text().startswith("# hdc train")
    load_config(path)


def test_overrides_are_typed_and_checked():
    config = load_config(None, ["train.lr=3e-3", "model.ngram_orders=[2, 3]", "train.max_epochs=2"])
    assert config.train.lr == 0.003 and config.model.ngram_orders == (2, 3) and config.train.max_epochs == 2
    with pytest.raises(UsageError, match="train.epochs"):
        load_config(None, ["train.epochs=2"])
    with pytest.raises(UsageError, match="section.key=value"):
        load_config(None, ["max_epochs=2"])
    with pytest.raises(UsageError, match="train.ema_decay must be at least 0 and below 1, got 995"):
        load_config(None, ["train.ema_decay=995"])
    with pytest.raises(UsageError, match="data.valid_fraction must be at least 0 and below 1, got 1.0"):
        load_config(None, ["data.valid_fraction=1"])
    with pytest.raises(UsageError, match="train.ngram_lr must be at least 0 and finite, got -1.0"):
        load_config(None, ["train.lr=0.003", "train.ngram_lr=-1"])
    with pytest.raises(UsageError, match=r"model.sentence_tokens \(16\) must be at least model.phrase_tokens \(32\)"):
        load_config(None, ["model.sentence_tokens=16"])
    with pytest.raises(UsageError, match="model.ngram_tf must be sublinear or binary, got 'log'"):
        load_config(None, ["model.ngram_tf=log"])
    with pytest.raises(UsageError, match="model.ngram_linear needs the n-gram branch: set model.ngram_orders"):
        load_config(None, ["model.ngram_orders=[]", "model.ngram_word_orders=[]", "model.ngram_linear=true"])
    for empty in ("train.ngram_linear_scale=[]", "train.ngram_linear_word_weight=[]"):
        with pytest.raises(UsageError, match=r"train.ngram_linear_c, .* must each list at least one number"):
            load_config(None, [empty])
