"""``fewshot pretrain``: mini-batches over all classes, an exact resume, and an encoder every method can start from."""

from __future__ import annotations

import pytest
import torch

from fewshot import TensorDataset, load_checkpoint
from fewshot.augment import AffineAugment
from fewshot.cli import main
from fewshot.pretrain import BatchSampler, pretrain_encoder, steps_for_epochs


def labelled_pixels(n_classes: int = 12, n_per_class: int = 5) -> TensorDataset:
    """Item ``i`` of class ``c`` is an image whose first pixel is ``c`` and second ``i``: the batch says what it holds."""
    images = torch.zeros(n_classes * n_per_class, 1, 16, 16, dtype=torch.uint8)
    labels = [c for c in range(n_classes) for _ in range(n_per_class)]
    images[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.uint8)
    images[:, 0, 0, 1] = torch.arange(len(labels), dtype=torch.uint8)
    return TensorDataset(images, labels, [f"c{c}" for c in range(n_classes)])


def test_a_batch_holds_distinct_images_and_their_true_classes():
    dataset = labelled_pixels()
    sampler = BatchSampler(dataset, 20, seed=3)
    for _ in range(5):
        task = sampler.sample_task()
        assert task.support_images.shape[0] == 0 and task.query_images.shape == (20, 1, 16, 16)
        pixels = (task.query_images[:, 0, 0, :2] * 255).round().long()
        assert len(set(pixels[:, 1].tolist())) == 20, "no image twice in a batch"
        assert torch.equal(task.class_ids[task.query_labels], pixels[:, 0]), "class_ids[label] is the image's class"
        assert torch.equal(task.class_ids, task.class_ids.unique())


def test_batches_are_seeded_and_resume_from_the_sampler_state():
    dataset = labelled_pixels()
    a, b = BatchSampler(dataset, 8, seed=1, augment=AffineAugment()), BatchSampler(dataset, 8, seed=1,
                                                                                     augment=AffineAugment())
    assert torch.equal(a.sample_task().query_images, b.sample_task().query_images)
    state = a.state_dict()
    expected = a.sample_task().query_images
    c = BatchSampler(dataset, 8, seed=7, augment=AffineAugment())
    c.load_state_dict(state)
    assert torch.equal(c.sample_task().query_images, expected)
    assert not torch.equal(BatchSampler(dataset, 8, seed=2).sample_task().query_images, expected)


@pytest.mark.parametrize("bad, fragment", [({"batch_size": 0}, "batch size"), ({"batch_size": 61}, "batch size")])
def test_impossible_batches_are_refused(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        BatchSampler(labelled_pixels(), **bad)


def test_one_class_is_nothing_to_classify():
    one = TensorDataset(torch.zeros(4, 1, 16, 16, dtype=torch.uint8), [0] * 4, ["only"])
    with pytest.raises(ValueError, match="at least 2 classes"):
        BatchSampler(one, 2)


def test_steps_for_epochs():
    assert steps_for_epochs(2, 1000, 128) == 16
    assert steps_for_epochs(0.001, 1000, 128) == 1
    with pytest.raises(ValueError, match="--epochs"):
        steps_for_epochs(0, 1000, 128)


def test_pretraining_learns_and_an_interrupted_run_resumes_to_the_same_weights(gratings, tmp_path):
    dataset = gratings  # 10 classes x 20 images, 16 pixels
    settings = dict(batch_size=20, epochs=4.0, hidden=8, lr=0.01, augment=AffineAugment(), checkpoint_every=10,
                    val_every=0)
    losses: list[float] = []
    whole, meta = pretrain_encoder(dataset, tmp_path / "whole.safetensors", on_step=lambda log: losses.append(log.loss),
                                   **settings)  # 40 steps
    assert whole.steps == 40 and meta["pretrain"]["n_classes"] == 10 and meta["epochs_done"] == 4.0
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses

    class Interrupt(Exception):
        pass

    def stop_after_20(log):
        if log.step == 20:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain_encoder(dataset, tmp_path / "cut.safetensors", on_step=stop_after_20, **settings)
    _, info = load_checkpoint(tmp_path / "cut.safetensors")
    assert info["steps_done"] == 10  # the last checkpoint before the interruption
    resumed, _ = pretrain_encoder(dataset, tmp_path / "cut.safetensors", resume=True, **settings)
    assert resumed.steps == 40
    a, _ = load_checkpoint(tmp_path / "whole.safetensors")
    b, info = load_checkpoint(tmp_path / "cut.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert info["method"] == "finetune" and info["resumed"] == 1
    assert 0 < info["cpu_seconds"] and 0 < info["train_seconds"]


def test_resume_refuses_a_missing_file_and_a_changed_setting(gratings, tmp_path):
    dataset = gratings
    with pytest.raises(ValueError, match="does not exist"):
        pretrain_encoder(dataset, tmp_path / "missing.safetensors", resume=True)
    pretrain_encoder(dataset, tmp_path / "e.safetensors", batch_size=20, epochs=0.1, hidden=8, val_every=0)
    with pytest.raises(ValueError, match="without --augment"):
        pretrain_encoder(dataset, tmp_path / "e.safetensors", batch_size=20, epochs=0.1, hidden=8, val_every=0,
                         augment=AffineAugment(), resume=True)


def run(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


@pytest.fixture(scope="module")
def lake_encoder(omniglot_cache, omniglot_dir, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("pretrain") / "encoder.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
        code = main(["pretrain", "--protocol", "lake", "--data-dir", str(omniglot_dir), "--epochs", "0.004",
                     "--batch-size", "64", "--hidden", "8", "--val-every", "3", "--val-episodes", "2", "--augment",
                     "--device", "cpu", "--quiet", "--out", out])
    assert code == 0
    return out


def test_the_pretrain_command_writes_a_self_describing_resumable_encoder(lake_encoder, omniglot_dir, capsys):
    model, info = load_checkpoint(lake_encoder)
    assert info["method"] == "finetune" and info["role"] == "encoder" and info["protocol"] == "lake"
    assert info["pretrain"]["n_classes"] == model.classifier.out_features == 3292  # 823 characters x 4 rotations
    assert info["steps_done"] == 5 and "val_accuracy" in info.metadata and info.train_state is not None
    code, err = run(["pretrain", "--protocol", "lake", "--data-dir", str(omniglot_dir), "--epochs", "0.006",
                     "--batch-size", "64", "--hidden", "8", "--val-every", "0", "--augment", "--device", "cpu",
                     "--quiet", "--resume", "--out", lake_encoder], capsys)
    assert code == 0, err
    _, resumed = load_checkpoint(lake_encoder)
    assert resumed["steps_done"] == 7 and resumed["resumed"] == 1
    assert resumed["command"] == info["command"] and len(resumed["resumed_with"]) == 1  # the first command is kept


@pytest.mark.parametrize("method", ["protonet", "maml", "siamese"])
def test_every_method_starts_from_the_encoder(lake_encoder, omniglot_dir, tmp_path, method, capsys):
    out = str(tmp_path / f"{method}.safetensors")
    code, err = run(["train", "--method", method, "--protocol", "lake", "--data-dir", str(omniglot_dir),
                     "--episodes", "0", "--hidden", "8", "--val-every", "0", "--device", "cpu", "--quiet",
                     "--init-backbone", lake_encoder, "--out", out], capsys)
    assert code == 0, err
    encoder, _ = load_checkpoint(lake_encoder)
    model, info = load_checkpoint(out)
    assert info["init_backbone"]["method"] == "finetune"
    for name, param in model.backbone.named_parameters():
        assert torch.equal(param, dict(encoder.backbone.named_parameters())[name]), name


def test_an_encoder_of_another_architecture_is_refused(lake_encoder, omniglot_dir, tmp_path, capsys):
    code, err = run(["train", "--method", "protonet", "--protocol", "lake", "--data-dir", str(omniglot_dir),
                     "--episodes", "0", "--hidden", "16", "--val-every", "0", "--device", "cpu", "--quiet",
                     "--init-backbone", lake_encoder, "--out", str(tmp_path / "p.safetensors")], capsys)
    assert code == 2
    one_error_line(err, "8 filters")
    assert not (tmp_path / "p.safetensors").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs must be a positive number"),
    (["--epochs", "nan"], "--epochs must be a positive number"),
    (["--batch-size", "1000000"], "batch size must be between 1 and the"),
    (["--resume"], "does not exist"),
])
def test_bad_pretrain_input_is_one_error_line(omniglot_cache, omniglot_dir, tmp_path, monkeypatch, capsys, args,
                                              fragment):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(omniglot_cache))
    code, err = run(["pretrain", "--protocol", "lake", "--data-dir", str(omniglot_dir), "--val-every", "0",
                     "--device", "cpu", "--quiet", "--out", str(tmp_path / "e.safetensors"), *args], capsys)
    assert code == 2
    one_error_line(err, fragment)
