"""Omniglot from the shared zips: class counts, both protocols, the lake train/test separation, errors."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot import DataNotFoundError, TaskSampler, load_omniglot, resolve_data_dir
from fewshot.omniglot import LAKE_VAL_ALPHABETS, load_omniglot_arrays

pytestmark = pytest.mark.slow


def _alphabets_in_zip(omniglot_dir: Path, subset: str) -> set[str]:
    """Alphabet names read straight from the zip listing, independently of the library."""
    with zipfile.ZipFile(omniglot_dir / f"{subset}.zip") as archive:
        return {name.split("/")[1] for name in archive.namelist() if name.endswith(".png")}


@pytest.fixture(scope="module")
def alphabets(omniglot_dir) -> dict[str, set[str]]:
    found = {s: _alphabets_in_zip(omniglot_dir, s) for s in ("images_background", "images_evaluation")}
    assert len(found["images_background"]) == 30 and len(found["images_evaluation"]) == 20
    assert not found["images_background"] & found["images_evaluation"]
    return found


def test_background_and_evaluation_character_counts(omniglot_arrays):
    background, background_names = omniglot_arrays["images_background"]
    evaluation, evaluation_names = omniglot_arrays["images_evaluation"]
    assert background.shape == (964, 20, 28, 28) and len(background_names) == 964
    assert evaluation.shape == (659, 20, 28, 28) and len(evaluation_names) == 659
    assert background.dtype == np.uint8
    assert not set(background_names) & set(evaluation_names)
    # ink is 255 and the minority of pixels (the PNGs are black ink on white: polarity was flipped)
    assert background.max() == 255 and background.mean() < 0.25 * 255


def test_decoded_once_into_the_cache(omniglot_cache, omniglot_dir):
    cached = list(omniglot_cache.glob("omniglot-v*-28px-*.npz"))
    assert len(cached) == 1
    arrays = load_omniglot_arrays(omniglot_dir)  # from the cache: same content
    with np.load(cached[0]) as npz:
        assert np.array_equal(npz["images_evaluation"], arrays["images_evaluation"][0])


@pytest.mark.parametrize("split, n_classes", [("train", 4112), ("val", 688), ("test", 1692), ("trainval", 4800)])
def test_vinyals_class_counts_and_20_images_per_class(omniglot_cache, omniglot_dir, split, n_classes):
    dataset = load_omniglot("vinyals", split, data_dir=omniglot_dir)
    assert len(dataset.class_names) == n_classes
    assert dataset.images.shape == (n_classes * 20, 1, 28, 28) and dataset.images.dtype == torch.uint8
    assert torch.bincount(torch.tensor(dataset.get_labels())).tolist() == [20] * n_classes
    assert all(name.count("/") == 2 and name.split("/")[2] in ("rot000", "rot090", "rot180", "rot270")
               for name in dataset.class_names)


def test_vinyals_splits_share_no_character(omniglot_cache, omniglot_dir):
    characters = {}
    for split in ("train", "val", "test"):
        names = load_omniglot("vinyals", split, data_dir=omniglot_dir).class_names
        characters[split] = {n.rsplit("/", 1)[0] for n in names}  # drop the rotation
    assert not characters["train"] & characters["test"]
    assert not characters["val"] & characters["test"]
    assert not characters["train"] & characters["val"]


def test_vinyals_mixes_both_subsets(omniglot_cache, omniglot_dir):
    # the papers' split draws characters from both zips (so "vinyals" models have seen evaluation alphabets)
    assert set(load_omniglot("vinyals", "train", data_dir=omniglot_dir).subsets) == {"images_background",
                                                                                   "images_evaluation"}


def test_rotation_classes_are_rotated_images(omniglot_cache, omniglot_dir):
    dataset = load_omniglot("lake", "val", data_dir=omniglot_dir)
    labels = torch.tensor(dataset.get_labels())
    names = dataset.class_names
    base = names.index(next(n for n in names if n.endswith("rot000")))
    character = names[base][: -len("rot000")]
    upright = dataset.images[labels == base]
    for degrees in (90, 180, 270):
        rotated = dataset.images[labels == names.index(f"{character}rot{degrees:03d}")]
        assert torch.equal(rotated, torch.rot90(upright, k=degrees // 90, dims=(2, 3)))


def test_lake_splits_come_from_the_right_zip(omniglot_cache, omniglot_dir, alphabets):
    expected_counts = {"train": (964 - 141) * 4, "val": 141 * 4, "trainval": 964 * 4, "test": 659}
    for split, count in expected_counts.items():
        dataset = load_omniglot("lake", split, data_dir=omniglot_dir)
        assert len(dataset.class_names) == count, split
        subset = "images_evaluation" if split == "test" else "images_background"
        assert set(dataset.subsets) == {subset}, split
        assert {n.split("/")[0] for n in dataset.class_names} <= alphabets[subset], split
        val_alphabets = {n.split("/")[0] for n in dataset.class_names} & set(LAKE_VAL_ALPHABETS)
        assert val_alphabets == ({"val": set(LAKE_VAL_ALPHABETS), "trainval": set(LAKE_VAL_ALPHABETS)}
                                 .get(split, set())), split
    assert len(load_omniglot("lake", "trainval", data_dir=omniglot_dir, rotations=False).class_names) == 964


def test_lake_train_images_are_background_images(omniglot_arrays, omniglot_dir):
    dataset = load_omniglot("lake", "train", data_dir=omniglot_dir, rotations=False)
    background, names = omniglot_arrays["images_background"]
    labels = torch.tensor(dataset.get_labels())
    for c in (0, 100, len(dataset.class_names) - 1):
        character = dataset.class_names[c].rsplit("/", 1)[0]
        assert torch.equal(dataset.images[labels == c][:, 0], torch.from_numpy(background[names.index(character)]))


def test_lake_train_sampler_never_yields_an_evaluation_class(omniglot_cache, omniglot_dir, alphabets):
    dataset = load_omniglot("lake", "train", data_dir=omniglot_dir)
    sampler = TaskSampler(dataset, 20, 1, 1, seed=0)
    seen = set()
    for _ in range(500):
        _, class_ids = sampler.sample_indices()
        seen |= {dataset.class_names[c].split("/")[0] for c in class_ids.tolist()}
    assert seen <= alphabets["images_background"] - set(LAKE_VAL_ALPHABETS)
    assert not seen & alphabets["images_evaluation"]
    assert len(seen) == 27  # 500 tasks of 20 classes reach every training alphabet


def test_unknown_protocol_split_and_test_rotations(omniglot_cache, omniglot_dir):
    with pytest.raises(ValueError, match="unknown protocol 'omni'"):
        load_omniglot("omni", "train", data_dir=omniglot_dir)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_omniglot("lake", "dev", data_dir=omniglot_dir)
    with pytest.raises(ValueError, match="rotations"):
        load_omniglot("lake", "test", data_dir=omniglot_dir, rotations=True)


def test_a_parent_folder_holding_omniglot_is_accepted(tmp_path, omniglot_dir):
    (tmp_path / "omniglot").symlink_to(omniglot_dir, target_is_directory=True)
    assert resolve_data_dir(tmp_path) == tmp_path / "omniglot"
    assert resolve_data_dir(omniglot_dir) == omniglot_dir


def test_empty_folder_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as info:
        load_omniglot("lake", "test", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and str(tmp_path / "omniglot") in message and "--data-dir" in message
    assert "images_background.zip" in message and "FEWSHOT_DATA_DIR" in message  # how to get it and point at it


def test_data_dir_from_the_environment_and_the_default(tmp_path, monkeypatch, omniglot_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FEWSHOT_DATA_DIR", str(empty))
    with pytest.raises(DataNotFoundError, match="from FEWSHOT_DATA_DIR") as info:
        resolve_data_dir()
    assert str(empty) in str(info.value)
    assert resolve_data_dir(omniglot_dir) == omniglot_dir  # an explicit folder wins over the variable
    monkeypatch.delenv("FEWSHOT_DATA_DIR")
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="default cache folder") as info:
        resolve_data_dir()
    assert str(tmp_path / "cache" / "data" / "omniglot") in str(info.value)
    monkeypatch.setenv("FEWSHOT_DATA_DIR", str(omniglot_dir))
    assert resolve_data_dir() == omniglot_dir


def _extract(omniglot_dir: Path, target: Path, subset: str, characters: int, keep: int = 20) -> list[str]:
    """Extract the first ``characters`` characters of a subset (``keep`` drawings each) to a folder."""
    written = []
    with zipfile.ZipFile(omniglot_dir / f"{subset}.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        chars = sorted({n.rsplit("/", 1)[0] for n in names})[:characters]
        for char in chars:
            for name in [n for n in names if n.startswith(char + "/")][:keep]:
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                (target / name).write_bytes(archive.read(name))
                written.append(name)
    return written


def test_extracted_folders_decode_like_the_zips(tmp_path, monkeypatch, omniglot_dir, omniglot_arrays):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _extract(omniglot_dir, data, "images_background", 1)
    _extract(omniglot_dir, data, "images_evaluation", 2)
    dataset = load_omniglot("lake", "test", data_dir=data)
    assert len(dataset.class_names) == 2 and dataset.images.shape == (40, 1, 28, 28)
    evaluation, names = omniglot_arrays["images_evaluation"]
    first = dataset.class_names[0].rsplit("/", 1)[0]
    assert torch.equal(dataset.images[:20, 0], torch.from_numpy(evaluation[names.index(first)]))


def test_half_extracted_folder_is_a_clear_error(tmp_path, monkeypatch, omniglot_dir):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    _extract(omniglot_dir, data, "images_background", 2)
    _extract(omniglot_dir, data, "images_evaluation", 1, keep=7)  # extraction stopped part-way
    with pytest.raises(DataNotFoundError, match="incomplete or half-extracted") as info:
        load_omniglot("lake", "test", data_dir=data)
    assert "has 7" in str(info.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))  # nothing cached


def test_corrupt_zip_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("images_background.zip", "images_evaluation.zip"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataNotFoundError, match="not a readable zip"):
        load_omniglot("lake", "test", data_dir=tmp_path)


def test_one_subset_missing(tmp_path, omniglot_dir):
    (tmp_path / "images_background.zip").symlink_to(omniglot_dir / "images_background.zip")
    with pytest.raises(DataNotFoundError, match="images_evaluation.zip"):
        resolve_data_dir(tmp_path)


def test_drawings_are_omniglot_pngs_inverted(omniglot_dir, omniglot_arrays):
    """One character decoded by hand (PIL + resize) matches the cached array: polarity and resize are the library's."""
    from fewshot.transforms import resize_ink

    evaluation, names = omniglot_arrays["images_evaluation"]
    with zipfile.ZipFile(omniglot_dir / "images_evaluation.zip") as archive:
        png = sorted(n for n in archive.namelist() if n.endswith(".png") and f"/{names[0]}/" in n)[0]
        with Image.open(io.BytesIO(archive.read(png))) as im:
            ink = 1.0 - np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    assert ink.shape == (105, 105) and 0.0 < ink.mean() < 0.3
    expected = np.round(resize_ink(ink, 28) * 255.0).astype(np.uint8)
    assert np.array_equal(evaluation[0, 0], expected)
