"""Checkpoints: loaded safely (weights only), with a one-line error for every broken one."""

import pytest
import torch

from hdc.checkpoint import load_checkpoint, model_from_checkpoint, read_checkpoint, store_weights
from hdc.errors import HdcError


def test_load_checkpoint_gives_a_backend_and_the_models_info(tiny_run):
    backend, info = load_checkpoint(tiny_run / "checkpoints/best.ckpt")
    assert info.labels == ("cooking", "sport", "weather") and not backend.model.training


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable checkpoint"),
        (b"PK\x03\x04 not really a zip", "not a readable checkpoint"),
    ],
    ids=["empty", "garbage"],
)
def test_unreadable_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(HdcError, match=message):
        read_checkpoint(path)


class Payload:  # a Python object: what weights_only loading refuses
    pass


def test_a_checkpoint_holding_objects_is_refused_without_advice_to_unpickle(tmp_path):
    path = tmp_path / "objects.ckpt"
    torch.save({"hdc": Payload()}, path)
    with pytest.raises(HdcError) as error:
        read_checkpoint(path)
    assert "holds Python objects" in str(error.value) and "weights_only=False" not in str(error.value)


def test_an_hdc_checkpoint_without_weights_is_named(tiny_run, tmp_path):
    checkpoint = torch.load(tiny_run / "checkpoints/best.ckpt", weights_only=True)
    del checkpoint["state_dict"]
    torch.save(checkpoint, tmp_path / "no-weights.ckpt")
    with pytest.raises(HdcError, match="without weights"):
        read_checkpoint(tmp_path / "no-weights.ckpt")


def test_weights_that_do_not_fit_are_listed_by_name(tiny_run):
    checkpoint = read_checkpoint(tiny_run / "checkpoints/best.ckpt")
    del checkpoint["state_dict"]["model.head.bias"]
    checkpoint["state_dict"]["model.extra"] = torch.zeros(1)
    checkpoint["state_dict"]["model.cls"] = torch.zeros(5)
    with pytest.raises(HdcError) as error:
        model_from_checkpoint(checkpoint, "x.ckpt")
    message = str(error.value)
    assert "missing: head.bias (1)" in message and "unexpected: extra (1)" in message and "wrong shape: cls" in message


def test_store_weights_round_trips(tiny_run):
    checkpoint = read_checkpoint(tiny_run / "checkpoints/best.ckpt")
    model, _ = model_from_checkpoint(checkpoint, "best.ckpt")
    with torch.no_grad():
        model.head.bias.fill_(0.25)
    store_weights(checkpoint, model)
    again, _ = model_from_checkpoint(checkpoint, "best.ckpt")
    assert torch.equal(again.head.bias, torch.full_like(again.head.bias, 0.25))


def test_top_k_and_export_are_set_when_the_model_is_built(tiny_run):
    checkpoint = read_checkpoint(tiny_run / "checkpoints/best.ckpt")
    model, info = model_from_checkpoint(checkpoint, "best.ckpt", top_k=2, export=True)
    assert model.config.top_k == 2 == info.config.model.top_k and model.export
