"""Omniglot (Lake et al. 2015) from the official zips or their extracted folders, decoded once.

Two protocols:

* ``vinyals``: the split of Vinyals et al. 2016 (train/val/test/trainval class lists shipped in
  ``fewshot/splits/vinyals``); every class is one character at one rotation (0/90/180/270 degrees).
  It mixes background and evaluation alphabets. This is the protocol of the MAML, ProtoNet and
  Matching Networks tables.
* ``lake``: train on ``images_background`` (964 characters; splits ``train`` = 27 alphabets,
  ``val`` = the other 3, ``trainval`` = all 30), test on ``images_evaluation`` (659 characters of 20
  alphabets never seen in training). Rotation classes (x4) are optional for the training splits.

Decoding 32,460 PNGs takes a while, so the first load writes a uint8 array per image size to the
cache folder (``FEWSHOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fewshot``, else ``~/.cache/fewshot``);
later loads read that file in well under a second.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .datasets import TensorDataset
from .transforms import resize_ink

__all__ = [
    "PROTOCOLS",
    "OMNIGLOT_URLS",
    "DataNotFoundError",
    "cache_dir",
    "default_data_dir",
    "resolve_data_dir",
    "load_omniglot",
    "load_omniglot_arrays",
    "download_omniglot",
]

PROTOCOLS = ("vinyals", "lake")
SPLITS = ("train", "val", "test", "trainval")
SUBSETS = ("images_background", "images_evaluation")
OMNIGLOT_URLS = {
    name: f"https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}.zip" for name in SUBSETS
}
LAKE_VAL_ALPHABETS = ("Tifinagh", "Korean", "Bengali")  # held out of images_background for validation
SPLIT_DIR = Path(__file__).parent / "splits" / "vinyals"
CACHE_VERSION = 1


class DataNotFoundError(FileNotFoundError):
    """Omniglot is not where it was looked for; the message lists the places and how to get it."""


def cache_dir() -> Path:
    """Per-user cache folder for decoded arrays (and the default data folder)."""
    if os.environ.get("FEWSHOT_CACHE_DIR"):
        return Path(os.environ["FEWSHOT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fewshot"


def default_data_dir() -> Path:
    return cache_dir() / "data" / "omniglot"


def _has_subset(folder: Path, subset: str) -> bool:
    return (folder / f"{subset}.zip").is_file() or (folder / subset).is_dir()


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding Omniglot: ``data_dir``, else ``$FEWSHOT_DATA_DIR``, else the cache folder.

    A folder that holds an ``omniglot/`` subfolder is accepted too.

    Raises:
        DataNotFoundError: neither zip nor folder of a subset is found; the message says where it
            looked and how to get the data.
    """
    if data_dir is not None:
        candidates, origin = [Path(data_dir).expanduser()], "--data-dir"
    elif os.environ.get("FEWSHOT_DATA_DIR"):
        candidates, origin = [Path(os.environ["FEWSHOT_DATA_DIR"]).expanduser()], "FEWSHOT_DATA_DIR"
    else:
        candidates, origin = [default_data_dir()], "the default cache folder"
    looked = []
    for folder in candidates:
        for option in (folder, folder / "omniglot"):
            looked.append(str(option))
            if all(_has_subset(option, s) for s in SUBSETS):
                return option
    raise DataNotFoundError(
        f"Omniglot not found (looked in {', '.join(looked)}, from {origin}). The folder must contain "
        "images_background.zip and images_evaluation.zip (or their extracted folders). Get them from "
        "https://github.com/brendenlake/omniglot (python/ folder) or run `fewshot download --data-dir DIR`, "
        "then pass --data-dir DIR or set FEWSHOT_DATA_DIR=DIR."
    )


def _fingerprint(root: Path) -> str:
    parts = []
    for subset in SUBSETS:
        z = root / f"{subset}.zip"
        if z.is_file():
            st = z.stat()
            parts.append(f"{z.resolve()}:{st.st_size}:{int(st.st_mtime)}")
        else:
            d = root / subset
            parts.append(f"{d.resolve()}:{int(d.stat().st_mtime)}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _read_subset(root: Path, subset: str) -> dict[str, bytes]:
    """Map ``subset/Alphabet/characterNN/file.png`` -> PNG bytes, from the zip or the folder."""
    z = root / f"{subset}.zip"
    files: dict[str, bytes] = {}
    if z.is_file():
        try:
            with zipfile.ZipFile(z) as archive:
                for info in archive.infolist():
                    if info.filename.endswith(".png"):
                        files[info.filename] = archive.read(info)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataNotFoundError(f"{z} is not a readable zip ({exc}); download it again") from exc
    else:
        folder = root / subset
        for path in sorted(folder.glob("*/*/*.png")):
            files[str(path.relative_to(root)).replace(os.sep, "/")] = path.read_bytes()
    return files


def _decode_subset(files: dict[str, bytes], image_size: int) -> tuple[np.ndarray, list[str]]:
    """Decode to uint8 ``(n_characters, 20, S, S)`` (255 = ink) and the ``Alphabet/characterNN`` names."""
    by_char: dict[str, list[str]] = {}
    for name in files:
        _subset, alphabet, character, _file = name.split("/")
        by_char.setdefault(f"{alphabet}/{character}", []).append(name)
    chars = sorted(by_char)
    if not chars:
        raise DataNotFoundError("Omniglot looks empty or half-extracted: a subset has no character images; "
                                "extract the zips again or point at the zips")
    bad = [c for c in chars if len(by_char[c]) != 20]
    if bad:
        raise DataNotFoundError(
            f"Omniglot looks incomplete or half-extracted: {len(bad)} characters do not have 20 images "
            f"(first: {bad[0]} has {len(by_char[bad[0]])}); extract the zips again or point at the zips"
        )

    def decode(name: str) -> np.ndarray:
        try:
            with Image.open(io.BytesIO(files[name])) as im:
                ink = 1.0 - np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        except (OSError, SyntaxError, ValueError) as exc:  # e.g. the last file of an interrupted extraction
            raise DataNotFoundError(f"Omniglot looks half-extracted or corrupt: {name} is unreadable ({exc}); "
                                    "extract the zips again or point at the zips") from exc
        return np.round(resize_ink(ink, image_size) * 255.0).astype(np.uint8)

    ordered = [n for c in chars for n in sorted(by_char[c])]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(decode, ordered, chunksize=256))
    return np.stack(decoded).reshape(len(chars), 20, image_size, image_size), chars


def load_omniglot_arrays(data_dir: str | Path | None = None, image_size: int = 28) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Both subsets as ``{"images_background": (array, names), "images_evaluation": (...)}``, cached."""
    root = resolve_data_dir(data_dir)
    cache = cache_dir() / f"omniglot-v{CACHE_VERSION}-{image_size}px-{_fingerprint(root)}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as npz:
                return {s: (npz[s], json.loads(str(npz[f"{s}_names"]))) for s in SUBSETS}
        except (OSError, ValueError, KeyError):
            pass  # a corrupt cache file is rebuilt below
    out = {s: _decode_subset(_read_subset(root, s), image_size) for s in SUBSETS}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **{s: out[s][0] for s in SUBSETS}, **{f"{s}_names": json.dumps(out[s][1]) for s in SUBSETS})
    os.replace(tmp, cache)  # atomic: a concurrent reader never sees half a file
    return out


def _vinyals_lines(split: str) -> list[str]:
    return (SPLIT_DIR / f"{split}.txt").read_text().split()


def load_omniglot(
    protocol: str = "vinyals",
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    image_size: int = 28,
    rotations: bool | None = None,
) -> TensorDataset:
    """One split of one protocol as a :class:`TensorDataset` (uint8, 255 = ink, ``(N, 1, S, S)``).

    Args:
        protocol: ``"vinyals"`` or ``"lake"`` (see the module docstring).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"trainval"``.
        data_dir: folder with the zips; defaults as in :func:`resolve_data_dir`.
        image_size: side of the square images (28 is the standard).
        rotations: lake only: add 90/180/270-degree rotations as extra classes (default: yes for
            the training splits, never for ``test``). The vinyals lists fix their own rotations.

    Class names are ``Alphabet/characterNN/rotDDD``; ``dataset.subsets`` tells which zip every class
    came from, and ``dataset.drawers`` the drawer of every image: Omniglot's files are
    ``<character id>_<drawer>.png`` with drawers 01-20 for every character, and a character's images
    are kept in file-name order, so image ``j`` of a character is drawer ``j + 1``. Lake et al.'s
    one-shot task (:class:`fewshot.tasks.AlphabetTaskSampler`) keeps support and query drawers apart.

    Raises:
        ValueError: unknown protocol or split, or rotations asked of the lake test split.
        DataNotFoundError: the data is missing or incomplete.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    arrays = load_omniglot_arrays(data_dir, image_size)
    index = {name: (subset, i) for subset in SUBSETS for i, name in enumerate(arrays[subset][1])}
    classes: list[tuple[str, int, int, str]] = []  # (subset, character index, degrees, name)
    if protocol == "vinyals":
        if rotations is False:
            raise ValueError("the vinyals split lists its rotation classes explicitly; rotations cannot be turned off")
        for line in _vinyals_lines(split):
            alphabet, character, rot = line.split("/")
            subset, i = index[f"{alphabet}/{character}"]
            classes.append((subset, i, int(rot[3:]), line))
    else:
        if split == "test":
            if rotations:
                raise ValueError("the lake test split is images_evaluation as drawn; rotations are for training only")
            subset, degrees = "images_evaluation", (0,)
        else:
            subset = "images_background"
            degrees = (0, 90, 180, 270) if rotations in (None, True) else (0,)
        for i, name in enumerate(arrays[subset][1]):
            alphabet = name.split("/")[0]
            if split == "val" and alphabet not in LAKE_VAL_ALPHABETS:
                continue
            if split == "train" and alphabet in LAKE_VAL_ALPHABETS:
                continue
            classes += [(subset, i, d, f"{name}/rot{d:03d}") for d in degrees]
    images = []
    for subset, i, deg in ((c[0], c[1], c[2]) for c in classes):
        chars = torch.from_numpy(arrays[subset][0][i])  # (20, S, S)
        images.append(torch.rot90(chars, k=deg // 90, dims=(1, 2)) if deg else chars)
    stacked = torch.stack(images).reshape(-1, 1, image_size, image_size).contiguous()  # (n_classes*20, 1, S, S)
    labels = [c for c in range(len(classes)) for _ in range(20)]
    dataset = TensorDataset(stacked, labels, [c[3] for c in classes])
    dataset.subsets = [c[0] for c in classes]  # type: ignore[attr-defined]
    dataset.drawers = [j + 1 for _ in classes for j in range(20)]  # type: ignore[attr-defined]
    dataset.protocol, dataset.split = protocol, split  # type: ignore[attr-defined]
    return dataset


def download_omniglot(dest: str | Path | None = None) -> Path:
    """Download the two official zips into ``dest`` (default: the cache data folder). Needs internet.

    Never called by the tests.
    """
    import urllib.request

    folder = Path(dest).expanduser() if dest is not None else default_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for name, url in OMNIGLOT_URLS.items():
        target = folder / f"{name}.zip"
        if target.is_file():
            continue
        tmp = target.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
        os.replace(tmp, target)
    return folder
