"""Regression: a safetensors header length whose low byte is 0x80 is not mistaken for a pickle."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import fewshot


def test_header_length_with_pickle_magic_byte_loads(tmp_path):
    model = fewshot.build_model("protonet", hidden=4)
    path = tmp_path / "m.safetensors"
    for pad in range(300):  # vary the metadata until the u64 header length starts with byte 0x80
        fewshot.save_checkpoint(path, model, method="protonet", metadata={"note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length with low byte 0x80 was produced")
    loaded, info = fewshot.load_checkpoint(path)
    assert info["note"] == "x" * pad and isinstance(loaded, fewshot.PrototypicalNetwork)


def test_real_pickles_are_still_refused(tmp_path):
    for name, write in [("zip", lambda p: torch.save({"w": torch.zeros(2)}, p)),
                        ("pickle", lambda p: p.write_bytes(pickle.dumps({"w": 1}, protocol=4)))]:
        path = tmp_path / f"{name}.safetensors"
        write(path)
        with pytest.raises(fewshot.CheckpointError, match="never unpickles"):
            fewshot.load_checkpoint(path)
    other = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(fewshot.CheckpointError, match="not a fewshot checkpoint"):
        fewshot.load_checkpoint(other)
