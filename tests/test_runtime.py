"""The torch-free runtime: every file it loads is verified against the manifest first."""

import json
import shutil

import pytest

from hdc.errors import HdcError
from hdc.runtime import load_bundle, session_options, verify_bundle


def test_load_bundle_gives_a_backend_and_the_models_info(tiny_bundle):
    backend, info = load_bundle(tiny_bundle, threads=1)
    assert info.labels == ("cooking", "sport", "weather") and backend.head_inputs[0] == "dense_sum"


def test_a_file_left_out_of_the_manifest_is_refused(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["files"]["head.onnx"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    (bundle / "head.onnx").write_bytes(b"corrupted")
    with pytest.raises(HdcError, match="head.onnx: not listed in manifest.json"):
        verify_bundle(bundle)


def test_an_unparsable_tokenizer_is_named(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "tokenizer.json").write_text("{broken")
    manifest = json.loads((bundle / "manifest.json").read_text())
    import hashlib

    manifest["files"]["tokenizer.json"] = hashlib.sha256(b"{broken").hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HdcError, match="tokenizer is unreadable"):
        load_bundle(bundle)


def test_session_options_take_the_thread_count():
    assert session_options(3).intra_op_num_threads == 3 and session_options().inter_op_num_threads == 1
