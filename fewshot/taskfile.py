"""A task as one shareable zip file: the images as PNG plus ``manifest.json``; and the reader of such files.

A teacher prepares a task (drawings, uploads, class names, true classes) and hands it out as one file; a
student loads it on any machine and gets the same task back. The same reader takes a zip of class subfolders
(``cat/1.png``, ``dog/1.png``: every image a support example), as ``fewshot predict --support`` takes a folder.

A zip from someone else is untrusted input. :mod:`fewshot.safezip` reads it in memory (paths that climb out or
are absolute, links, encryption, duplicates, too many members, and zip bombs are refused from the headers and
again while reading, with bounded reads); this module then refuses non-images (a signature check, then the
project's safe decoder :func:`fewshot.transforms.open_image`), a manifest of the wrong shape, and classes or
examples beyond the app's limits (:data:`MIN_WAY`-:data:`MAX_WAY` classes, :data:`MIN_SHOT`-:data:`MAX_SHOT`
examples per class). Every refusal is one :class:`TaskFileError` whose message says what is wrong.
"""

from __future__ import annotations

import io
import json
import posixpath
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .datasets import TensorDataset
from .safezip import BoundedReader, UnsafeZipError, check_members, open_zip
from .transforms import IMAGE_EXTENSIONS, ImageError, open_image, preprocess_image

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MODES", "MIN_WAY", "MAX_WAY", "MIN_SHOT", "MAX_SHOT", "MAX_QUERIES",
    "TaskFileError", "TaskImage", "SharedTask", "write_task", "read_task", "support_dataset",
]

FORMAT, FORMAT_VERSION = "fewshot-task", 1
MANIFEST = "manifest.json"
MODES = ("drawn", "photo")
# The lab's limits (its N-way and K-shot sliders): a file cannot hold a task the app could not show.
MIN_WAY, MAX_WAY = 2, 10
MIN_SHOT, MAX_SHOT = 1, 5
MAX_QUERIES = 50
MAX_NAME_CHARS = 40  # the Build page's class-name box
# Zip limits are fewshot.safezip's; a full photo task (10 x 5 photos + 50 queries, each at most MAX_SIDE) fits well.
MAX_MANIFEST_BYTES = 2**20
MAX_SIDE = 1024  # images are stored at most this many pixels on their longer side (photos are downscaled)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the same task gives the same bytes
# Formats the reader decodes (first bytes of the file); anything else is refused before any decoder runs.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
               b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


class TaskFileError(ValueError):
    """A task file that cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class TaskImage:
    """One image of a task: PNG bytes and the name it is shown with."""

    png: bytes
    name: str = ""


@dataclass(frozen=True)
class SharedTask:
    """A task as a person built it: class names, support images per class, queries with their true classes.

    ``true_classes[q]`` is the class index of query ``q`` or ``None`` when unknown; ``n_shot`` is the task's
    K-shot setting (a class may hold fewer or more examples, within the limits); ``mode`` is ``"drawn"`` or
    ``"photo"``.
    """

    class_names: list[str]
    support: list[list[TaskImage]]
    queries: list[TaskImage] = field(default_factory=list)
    true_classes: list[int | None] = field(default_factory=list)
    n_shot: int = 1
    mode: str = "drawn"

    @property
    def n_way(self) -> int:
        return len(self.class_names)


def _check_shape(task: SharedTask, where: str) -> None:
    """The app's limits on a task; raises :class:`TaskFileError` naming the first problem."""
    n = len(task.class_names)
    if not MIN_WAY <= n <= MAX_WAY:
        raise TaskFileError(f"{where} has {n} classes; a task has {MIN_WAY} to {MAX_WAY}")
    for i, name in enumerate(task.class_names):
        if not isinstance(name, str) or not name.strip():
            raise TaskFileError(f"{where}: class {i + 1} has no name; every class needs one")
        if len(name) > MAX_NAME_CHARS:
            raise TaskFileError(f"{where}: class {i + 1}'s name is {len(name)} characters (at most {MAX_NAME_CHARS})")
    lowered = [name.strip().lower() for name in task.class_names]
    for i, name in enumerate(lowered):
        if name in lowered[:i]:
            raise TaskFileError(f"{where}: classes {lowered.index(name) + 1} and {i + 1} are both called "
                                f"{task.class_names[i]!r}; class names must differ")
    if len(task.support) != n:
        raise TaskFileError(f"{where}: {n} class names but support images for {len(task.support)} classes")
    for i, images in enumerate(task.support):
        if not MIN_SHOT <= len(images) <= MAX_SHOT:
            raise TaskFileError(f"{where}: class {task.class_names[i]!r} has {len(images)} examples; "
                                f"each class needs {MIN_SHOT} to {MAX_SHOT}")
    if type(task.n_shot) is not int or not MIN_SHOT <= task.n_shot <= MAX_SHOT:
        raise TaskFileError(f"{where}: K-shot is {task.n_shot!r}; it must be a whole number from {MIN_SHOT} to "
                            f"{MAX_SHOT}")
    if len(task.queries) > MAX_QUERIES:
        raise TaskFileError(f"{where} has {len(task.queries)} queries (at most {MAX_QUERIES})")
    if len(task.true_classes) != len(task.queries):
        raise TaskFileError(f"{where}: {len(task.queries)} queries but {len(task.true_classes)} true classes")
    for q, truth in enumerate(task.true_classes):
        if truth is not None and (type(truth) is not int or not 0 <= truth < n):
            raise TaskFileError(f"{where}: query {q + 1}'s true class is {truth!r}; it must be a class index "
                                f"from 0 to {n - 1} or null")
    if task.mode not in MODES:
        raise TaskFileError(f"{where}: mode {task.mode!r} is not one of {', '.join(MODES)}")


def _as_png(data: bytes, name: str) -> bytes:
    """``data`` decoded safely and returned as PNG: PNG bytes within :data:`MAX_SIDE` unchanged (so a task saved,
    loaded and saved again gives the same file), anything else re-encoded, downscaled to :data:`MAX_SIDE`.

    Raises:
        TaskFileError: not an image of an accepted format, or undecodable.
    """
    kind = next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "WEBP"
    if kind is None:
        raise TaskFileError(f"{name} is not an image (PNG, JPEG, GIF, BMP, WebP or TIFF); a task file holds "
                            "images and its manifest only")
    try:
        image = open_image(data, name=name)
    except ImageError as exc:
        raise TaskFileError(str(exc)) from exc
    if kind == "PNG" and max(image.size) <= MAX_SIDE:
        return data
    if image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    if max(image.size) > MAX_SIDE:
        image = image.copy()
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_task(task: SharedTask) -> bytes:
    """The task as the bytes of one zip: ``manifest.json`` and ``support/<class>/<k>.png``, ``queries/<q>.png``.

    The same task always gives the same bytes (fixed timestamps, fixed order).

    Raises:
        TaskFileError: the task is outside the limits, or one of its images cannot be decoded.
    """
    _check_shape(task, "the task")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "mode": task.mode, "n_way": task.n_way,
                "n_shot": task.n_shot, "classes": list(task.class_names), "support": [], "queries": []}
    members: list[tuple[str, bytes]] = []
    for c, images in enumerate(task.support):
        for k, image in enumerate(images):
            path = f"support/{c}/{k}.png"
            members.append((path, _as_png(image.png, image.name or path)))
            manifest["support"].append({"file": path, "class": c, "name": image.name})
    for q, (image, truth) in enumerate(zip(task.queries, task.true_classes)):
        path = f"queries/{q}.png"
        members.append((path, _as_png(image.png, image.name or path)))
        manifest["queries"].append({"file": path, "true_class": truth, "name": image.name})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo(MANIFEST, _FIXED_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        archive.writestr(info, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
        for path, png in members:  # PNG is compressed already: stored as it is
            info = zipfile.ZipInfo(path, _FIXED_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, png)
    return buf.getvalue()


def _strip_top_folder(files: dict[str, zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """A zip of one folder (``task/manifest.json``, ``animals/cat/1.png``) read as that folder's contents."""
    tops = {name.split("/")[0] for name in files}
    if len(tops) != 1 or all("/" not in name for name in files):
        return files
    top = tops.pop()
    inner = {name[len(top) + 1 :]: info for name, info in files.items()}
    if MANIFEST in inner or any("/" in name for name in inner):
        return inner
    return files


def _field(obj: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in obj:
        raise TaskFileError(f"manifest: {where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TaskFileError(f"manifest: {where}'s {key!r} must be {names}, got {type(value).__name__}")
    return value


def _from_manifest(files: dict[str, zipfile.ZipInfo], reader: BoundedReader) -> SharedTask:
    if files[MANIFEST].file_size > MAX_MANIFEST_BYTES:
        raise TaskFileError(f"manifest.json is {files[MANIFEST].file_size // 2**10} KiB; a manifest is at most "
                            f"{MAX_MANIFEST_BYTES // 2**10} KiB")
    try:
        manifest = json.loads(reader.read(MANIFEST, MAX_MANIFEST_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskFileError(f"manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise TaskFileError("manifest.json must hold a JSON object")
    if manifest.get("format") != FORMAT:
        raise TaskFileError(f"manifest.json is not a fewshot task (its 'format' is {manifest.get('format')!r})")
    version = _field(manifest, "format_version", int, "the manifest")
    if version > FORMAT_VERSION:
        raise TaskFileError(f"the task file has format version {version}; this fewshot reads up to "
                            f"{FORMAT_VERSION}: update fewshot")
    if version < 1:
        raise TaskFileError(f"manifest: format_version {version} is not a version")
    mode = _field(manifest, "mode", str, "the manifest")
    classes = _field(manifest, "classes", list, "the manifest")
    if not MIN_WAY <= len(classes) <= MAX_WAY:
        raise TaskFileError(f"the task file has {len(classes)} classes; a task has {MIN_WAY} to {MAX_WAY}")
    if not all(isinstance(c, str) for c in classes):
        raise TaskFileError("manifest: every entry of 'classes' must be a class name (a string)")
    n_way = _field(manifest, "n_way", int, "the manifest")
    if n_way != len(classes):
        raise TaskFileError(f"manifest: n_way is {n_way} but {len(classes)} classes are named")
    n_shot = _field(manifest, "n_shot", int, "the manifest")
    entries = _field(manifest, "support", list, "the manifest")
    queries = _field(manifest, "queries", list, "the manifest")
    if len(entries) > MAX_WAY * MAX_SHOT or len(queries) > MAX_QUERIES:
        raise TaskFileError(f"the task file lists {len(entries)} support images and {len(queries)} queries "
                            f"(at most {MAX_WAY * MAX_SHOT} and {MAX_QUERIES})")
    used: set[str] = set()

    def image(entry: object, where: str) -> TaskImage:
        if not isinstance(entry, dict):
            raise TaskFileError(f"manifest: {where} must be an object with 'file'")
        path = posixpath.normpath(_field(entry, "file", str, where))
        if path not in files or path == MANIFEST:
            raise TaskFileError(f"manifest: {where}'s file {entry['file']!r} is not in the zip")
        if path in used:
            raise TaskFileError(f"manifest: {entry['file']!r} is listed twice")
        used.add(path)
        name = entry.get("name", "")
        if not isinstance(name, str) or len(name) > 200:
            raise TaskFileError(f"manifest: {where}'s 'name' must be a string of at most 200 characters")
        return TaskImage(_as_png(reader.read(path), path), name)

    support: list[list[TaskImage]] = [[] for _ in classes]
    for k, entry in enumerate(entries):
        where = f"support image {k + 1}"
        if not isinstance(entry, dict):
            raise TaskFileError(f"manifest: {where} must be an object with 'file' and 'class'")
        c = _field(entry, "class", int, where)
        if not 0 <= c < len(classes):
            raise TaskFileError(f"manifest: {where}'s class must be an index from 0 to {len(classes) - 1}, got {c!r}")
        if len(support[c]) >= MAX_SHOT:
            raise TaskFileError(f"the task file has more than {MAX_SHOT} examples of class {classes[c]!r}; "
                                f"each class has {MIN_SHOT} to {MAX_SHOT}")
        support[c].append(image(entry, where))
    images, truths = [], []
    for q, entry in enumerate(queries):
        where = f"query {q + 1}"
        if not isinstance(entry, dict) or "true_class" not in entry:
            raise TaskFileError(f"manifest: {where} must be an object with 'file' and 'true_class' (an index or null)")
        images.append(image(entry, where))
        truths.append(entry["true_class"])
    task = SharedTask(list(classes), support, images, truths, n_shot, mode)
    _check_shape(task, "the task file")
    extra = sorted(set(files) - used - {MANIFEST})
    if extra:
        raise TaskFileError(f"the zip holds {extra[0]!r}, which the manifest does not list "
                            f"({len(extra)} such member(s)); a task file holds its images and manifest only")
    return task


def _from_folders(files: dict[str, zipfile.ZipInfo], reader: BoundedReader, mode: str) -> SharedTask:
    loose = sorted(name for name in files if "/" not in name)
    if loose:
        raise TaskFileError(f"the zip holds {loose[0]!r} outside any class folder; put each class's images in "
                            "its own folder (cat/1.png, dog/1.png), or load a task file saved by the lab")
    deep = sorted(name for name in files if name.count("/") > 1)
    if deep:
        raise TaskFileError(f"{deep[0]!r} is in a folder inside a class folder; each class folder holds images only")
    by_class: dict[str, list[str]] = {}
    for name in sorted(files):
        folder, file = name.split("/")
        if not file.lower().endswith(IMAGE_EXTENSIONS):
            raise TaskFileError(f"{name!r} is not an image (extensions: {', '.join(IMAGE_EXTENSIONS)}); a zip of "
                                "class folders holds images only")
        by_class.setdefault(folder, []).append(name)
    if not MIN_WAY <= len(by_class) <= MAX_WAY:
        raise TaskFileError(f"the zip has {len(by_class)} class folder(s); a task has {MIN_WAY} to {MAX_WAY}")
    for folder, names in by_class.items():
        if len(names) > MAX_SHOT:
            raise TaskFileError(f"class folder {folder!r} holds {len(names)} images; each class has "
                                f"{MIN_SHOT} to {MAX_SHOT}")
    support = [[TaskImage(_as_png(reader.read(name), name), posixpath.basename(name)) for name in names]
               for names in by_class.values()]
    n_shot = max(len(images) for images in support)
    task = SharedTask(list(by_class), support, [], [], n_shot, mode)
    _check_shape(task, "the zip")
    return task


def read_task(source: bytes | str | Path, *, folder_mode: str = "drawn") -> SharedTask:
    """Read a task file written by :func:`write_task`, or a zip of class subfolders (all images support).

    Args:
        source: the zip's bytes or its path.
        folder_mode: the mode of a class-folder zip (``"drawn"`` or ``"photo"``); a task file names its own.

    Raises:
        TaskFileError: anything wrong with the file (see the module docstring); the message names it.
    """
    if folder_mode not in MODES:
        raise ValueError(f"folder_mode must be one of {MODES}, got {folder_mode!r}")
    where = str(source) if isinstance(source, (str, Path)) else None  # a file on disk is named in every message
    try:
        with open_zip(source) as archive:
            files = _strip_top_folder(check_members(archive))
            reader = BoundedReader(archive, files)
            if not files:
                raise TaskFileError("the zip is empty; a task file holds a manifest and images")
            if MANIFEST in files:
                return _from_manifest(files, reader)
            return _from_folders(files, reader, folder_mode)
    except (UnsafeZipError, TaskFileError) as exc:  # one exception type for callers, whichever layer refused it
        message = str(exc)
        if where is not None and not message.startswith(where):
            message = f"{where}: {message}"
        if isinstance(exc, TaskFileError) and message == str(exc):
            raise
        raise TaskFileError(message) from exc


def support_dataset(task: SharedTask, image_size: int = 28, *, center: bool = True) -> TensorDataset:
    """The task's support images as a :class:`~fewshot.datasets.TensorDataset` (``predict --support`` on a zip).

    Images take :func:`fewshot.transforms.preprocess_image` (ink, 1 = ink), as a folder of class subfolders does.
    """
    images, labels = [], []
    for c, examples in enumerate(task.support):
        for example in examples:
            images.append(preprocess_image(example.png, image_size, center=center, name=example.name or None))
            labels.append(c)
    stacked = (torch.stack(images) * 255.0).round().to(torch.uint8)  # (S, 1, H, W)
    dataset = TensorDataset(stacked, labels, list(task.class_names))
    dataset.skipped = []  # type: ignore[attr-defined]  # as FolderDataset: nothing is skipped in a checked file
    return dataset
