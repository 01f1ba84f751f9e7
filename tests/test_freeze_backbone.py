"""``train --freeze-backbone``: an encoder started from another model stays exactly as it was; only the method's own
layers learn, and the flag is refused where it could not mean anything."""

from __future__ import annotations

import pytest
import torch

from fewshot import SiameseNetwork, TaskSampler, TrainConfig, load_checkpoint, train
from fewshot.cli import main


def test_a_frozen_encoder_keeps_its_weights_and_batch_norm_statistics_while_the_head_learns(gratings):
    model = SiameseNetwork(hidden=8)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # weights and running statistics
    head = model.compare.weight.clone()
    train(model, TaskSampler(gratings, 5, 1, 3, seed=0), TrainConfig(episodes=5, meta_lr=1e-2, eval_every=0,
                                                                     freeze_backbone=True))
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(model.compare.weight, head)
    # without the flag the same run changes the encoder (the test above could fail)
    model = SiameseNetwork(hidden=8)
    train(model, TaskSampler(gratings, 5, 1, 3, seed=0), TrainConfig(episodes=5, meta_lr=1e-2, eval_every=0))
    assert any(not torch.equal(v, before[k]) for k, v in model.backbone.state_dict().items())


@pytest.fixture(scope="module")
def folder_data(pattern_folder):
    """4 classes x 4 noisy binary patterns (16x16 PNGs): a real folder dataset, no Omniglot needed."""
    return pattern_folder(4, 4, 16)


def _train(folder_data, tmp_path, *extra: str) -> list[str]:
    return ["train", "--dataset", "folder", "--data-dir", str(folder_data), "--device", "cpu", "--n-way", "3",
            "--n-shot", "1", "--n-query", "1", "--episodes", "2", "--image-size", "16", "--hidden", "8",
            "--val-every", "0", "--quiet", *extra]


def test_cli_freezes_the_init_backbone_encoder_and_records_it(folder_data, tmp_path, capsys):
    encoder = tmp_path / "encoder.safetensors"
    assert main(_train(folder_data, tmp_path, "--method", "protonet", "--out", str(encoder))) == 0
    out = tmp_path / "siamese.safetensors"
    assert main(_train(folder_data, tmp_path, "--method", "siamese", "--init-backbone", str(encoder),
                       "--freeze-backbone", "--meta-lr", "1e-2", "--out", str(out))) == 0
    source, _ = load_checkpoint(encoder)
    model, info = load_checkpoint(out)
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[name]), name
    assert info["train_config"]["freeze_backbone"] is True
    capsys.readouterr()
    # a resume must keep the setting
    code = main(_train(folder_data, tmp_path, "--method", "siamese", "--episodes", "4", "--resume",
                       "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "--freeze-backbone" in err and "Traceback" not in err
    assert main(_train(folder_data, tmp_path, "--method", "siamese", "--episodes", "4", "--resume",
                       "--freeze-backbone", "--out", str(out))) == 0
    resumed, _ = load_checkpoint(out)
    for name, value in resumed.backbone.state_dict().items():
        assert torch.equal(value, source.backbone.state_dict()[name]), name


@pytest.mark.parametrize("method, extra, fragment", [
    ("maml", ["--init-backbone", "ENC"], "MAML adapts the whole network"),
    ("maml", ["--init-backbone", "ENC", "--proto-head"], "--learn-inner-lr or --learn-inner-temperature"),
    ("fomaml", ["--proto-head", "--learn-inner-temperature", "--init-backbone", "ENC"], "second-order MAML"),
    ("protonet", ["--init-backbone", "ENC"], "nothing would learn"),
    ("siamese", [], "give it with --init-backbone"),
])
def test_freeze_backbone_where_it_means_nothing_is_one_error_line(folder_data, tmp_path, capsys, method, extra,
                                                                  fragment):
    encoder = tmp_path / "encoder.safetensors"
    assert main(_train(folder_data, tmp_path, "--method", "protonet", "--out", str(encoder))) == 0
    capsys.readouterr()
    out = tmp_path / "out.safetensors"
    extra = [str(encoder) if a == "ENC" else a for a in extra]
    code = main(_train(folder_data, tmp_path, "--method", method, "--freeze-backbone", *extra, "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and fragment in err and "Traceback" not in err, err
    assert not out.exists()
