"""Task files (``fewshot.taskfile``): a round trip, zips of class folders, and every kind of hostile zip.

The bad zips are built here, byte by byte where ``zipfile`` would refuse to write them. Each must be refused
with one :class:`TaskFileError` whose message names the problem.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from fewshot import safezip, taskfile
from fewshot.cli import main
from fewshot.taskfile import SharedTask, TaskFileError, TaskImage, read_task, support_dataset, write_task

REPO = Path(__file__).resolve().parents[1]


def png(seed: int, size: int = 40, mode: str = "L", fmt: str = "PNG") -> bytes:
    """A distinct small drawing: a dark bar whose position and length depend on ``seed``."""
    image = Image.new(mode, (size, size), "white")
    for x in range(4 + seed % 7, 10 + seed % 23):
        for y in range(8 + seed % 5, 14 + seed % 11):
            image.putpixel((x, y), 0 if mode == "L" else (0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def sample_task(n_way: int = 3, n_shot: int = 2, n_queries: int = 2, mode: str = "drawn") -> SharedTask:
    support = [[TaskImage(png(10 * c + k), f"c{c} {k}") for k in range(n_shot)] for c in range(n_way)]
    queries = [TaskImage(png(100 + q), f"query {q + 1}") for q in range(n_queries)]
    truths = [q % n_way if q % 3 else None for q in range(n_queries)]
    return SharedTask([f"Class {c}" for c in range(n_way)], support, queries, truths, n_shot, mode)


def make_zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def rewrite_manifest(data: bytes, change) -> bytes:
    """A copy of the task file ``data`` with its manifest passed through ``change(dict) -> object``."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["manifest.json"] = json.dumps(change(json.loads(members["manifest.json"]))).encode()
    return make_zip(members)


def refused(data: bytes, fragment: str, **kwargs) -> str:
    with pytest.raises(TaskFileError) as info:
        read_task(data, **kwargs)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message
    return message


# --- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["drawn", "photo"])
def test_round_trip_gives_the_same_task_and_the_same_bytes(mode):
    task = sample_task(4, 3, 5, mode)
    data = write_task(task)
    back = read_task(data)
    assert back == task
    assert write_task(back) == data  # deterministic: a task saved, loaded and saved again is the same file
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["format_version"] == taskfile.FORMAT_VERSION and manifest["mode"] == mode
    assert (manifest["n_way"], manifest["n_shot"]) == (4, 3)
    assert [q["true_class"] for q in manifest["queries"]] == task.true_classes


def test_non_png_images_are_stored_as_png_and_big_ones_downscaled(tmp_path):
    jpeg = png(3, 60, "RGB", "JPEG")
    big = png(4, taskfile.MAX_SIDE * 2, "RGB", "JPEG")
    task = SharedTask(["a", "b"], [[TaskImage(jpeg, "a.jpg")], [TaskImage(big, "b.jpg")]], n_shot=1, mode="photo")
    back = read_task(write_task(task))
    for image in (back.support[0][0], back.support[1][0]):
        assert image.png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(back.support[0][0].png)).size == (60, 60)
    assert max(Image.open(io.BytesIO(back.support[1][0].png)).size) == taskfile.MAX_SIDE
    path = tmp_path / "task.zip"
    path.write_bytes(write_task(task))
    assert read_task(path) == back  # a path reads as its bytes


@pytest.mark.parametrize("top", ["", "animals/"])
def test_zip_of_class_folders(top):
    members = {f"{top}cat/1.png": png(1), f"{top}cat/2.jpg": png(2, fmt="JPEG"), f"{top}dog/1.png": png(3),
               f"{top}.DS_Store": b"\x00junk", f"__MACOSX/{top}cat/._1.png": b"junk"}
    task = read_task(make_zip(members), folder_mode="photo")
    assert task.class_names == ["cat", "dog"] and task.mode == "photo"
    assert [len(images) for images in task.support] == [2, 1] and task.n_shot == 2
    assert task.support[0][0].png == png(1) and task.support[0][1].png.startswith(b"\x89PNG")
    assert task.queries == [] and task.true_classes == []


def test_a_task_file_in_a_folder_reads_the_same():
    task = sample_task()
    with zipfile.ZipFile(io.BytesIO(write_task(task))) as z:
        nested = make_zip({f"shared/{i.filename}": z.read(i) for i in z.infolist()})
    assert read_task(nested) == task


def test_support_dataset_has_the_task_classes():
    dataset = support_dataset(sample_task(3, 2), 28)
    assert dataset.images.shape == (6, 1, 28, 28) and dataset.get_labels() == [0, 0, 1, 1, 2, 2]
    assert dataset.class_names == ["Class 0", "Class 1", "Class 2"] and dataset.images.max() > 200


# --- the writer refuses tasks the app could not show ------------------------------------------------------


@pytest.mark.parametrize("change, fragment", [
    (lambda t: SharedTask(t.class_names[:1], t.support[:1], n_shot=2), "1 classes; a task has 2 to 10"),
    (lambda t: SharedTask(["a", "A", "b"], t.support, n_shot=2), "both called"),
    (lambda t: SharedTask(["a", "b", "c" * 41], t.support, n_shot=2), "41 characters"),
    (lambda t: SharedTask(t.class_names, [t.support[0] * 3] + t.support[1:], n_shot=2), "has 6 examples"),
    (lambda t: SharedTask(t.class_names, t.support, t.queries, [7, None], 2), "true class is 7"),
    (lambda t: SharedTask(t.class_names, t.support, n_shot=0), "K-shot is 0"),
    (lambda t: SharedTask(t.class_names, t.support, mode="video", n_shot=2), "mode 'video'"),
    (lambda t: SharedTask(t.class_names, [[TaskImage(b"%PDF-1.4", "doc.pdf")]] * 3, n_shot=2), "not an image"),
])
def test_writer_refuses_a_task_outside_the_limits(change, fragment):
    with pytest.raises(TaskFileError, match=fragment):
        write_task(change(sample_task()))


# --- hostile and malformed zips --------------------------------------------------------------------------


def test_not_a_zip():
    refused(b"PK\x03\x04 this is not really a zip", "not a zip file")
    refused(png(1), "not a zip file")


def test_empty_zip():
    refused(make_zip({}), "empty")


@pytest.mark.parametrize("name", ["../evil.png", "cat/../../evil.png", "..\\evil.png"])
def test_paths_that_climb_out(name):
    refused(make_zip({"cat/1.png": png(1), "dog/1.png": png(2), name: png(3)}), "climbs out")


@pytest.mark.parametrize("name", ["/etc/evil.png", "C:/evil.png", "\\evil.png"])
def test_absolute_paths(name):
    refused(make_zip({"cat/1.png": png(1), "dog/1.png": png(2), name: png(3)}), "absolute path")


def _with_mode(name: str, data: bytes, mode: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("cat/1.png", png(1))
        z.writestr("dog/1.png", png(2))
        info = zipfile.ZipInfo(name)
        info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
        info.external_attr = mode << 16
        z.writestr(info, data)
    return buf.getvalue()


def test_symlink_member():
    refused(_with_mode("cat/2.png", b"/etc/passwd", stat.S_IFLNK | 0o777), "symbolic link")


def test_device_or_fifo_member():
    refused(_with_mode("cat/2.png", b"", stat.S_IFIFO | 0o644), "not a plain file")


def test_encrypted_member():
    data = bytearray(make_zip({"cat/1.png": png(1), "dog/1.png": png(2)}))
    # set the "encrypted" flag (bit 0 of the general purpose flags) in the local and central headers
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        data[start + offset] |= 1
    refused(bytes(data), "encrypted")


def test_duplicate_names():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning, match="Duplicate"):
        z.writestr("cat/1.png", png(1))
        z.writestr("dog/1.png", png(2))
        z.writestr("cat/1.png", png(3))
    refused(buf.getvalue(), "twice")


def test_zip_bomb_ratio_from_the_headers():
    bomb = make_zip({"cat/1.png": png(1), "dog/1.png": b"\x00" * (8 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
    assert len(bomb) < 100_000
    refused(bomb, "zip bomb")


def test_member_too_large_from_the_headers():
    big = make_zip({"cat/1.png": png(1), "dog/1.png": bytes(range(256)) * (safezip.MAX_MEMBER_BYTES // 256 + 1)})
    refused(big, "MiB per member")


def test_total_size_from_the_headers(monkeypatch):
    monkeypatch.setattr(safezip, "MAX_TOTAL_BYTES", 2 * len(png(1)))
    refused(make_zip({"cat/1.png": png(1), "dog/1.png": png(2), "dog/2.png": png(3)}), "unpacks to")


def test_bomb_limits_are_enforced_while_reading():
    """A header that hides the size (checked or not) cannot make a read return more than the limits."""
    data = make_zip({"dog/1.png": b"\x00" * (4 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        reader = safezip.BoundedReader(z, {"dog/1.png": z.getinfo("dog/1.png")})
        with pytest.raises(safezip.UnsafeZipError, match="times its packed size"):
            reader.read("dog/1.png")
        assert reader.total <= safezip.RATIO_MIN_BYTES + safezip._READ_CHUNK  # stopped early, not after 4 MiB
        info = z.getinfo("dog/1.png")
        info.file_size = 1000  # a header that lies low: the read stops there instead of trusting the data
        reader = safezip.BoundedReader(z, {"dog/1.png": info})
        with pytest.raises(safezip.UnsafeZipError, match="damaged"):  # the data's CRC no longer matches
            reader.read("dog/1.png")


def test_total_limit_is_enforced_while_reading(monkeypatch):
    data = make_zip({"cat/1.png": png(1), "dog/1.png": png(2)})
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        reader = safezip.BoundedReader(z, {i.filename: i for i in z.infolist()})
        monkeypatch.setattr(safezip, "MAX_TOTAL_BYTES", len(png(1)) + 10)
        reader.read("cat/1.png")
        with pytest.raises(safezip.UnsafeZipError, match="unpacks to more than"):
            reader.read("dog/1.png")


def test_too_many_members():
    members = {f"c{i % 3}/{i}.png": b"x" for i in range(safezip.MAX_MEMBERS + 1)}
    refused(make_zip(members), "members")


def test_file_too_large(monkeypatch):
    monkeypatch.setattr(safezip, "MAX_FILE_BYTES", 100)
    refused(make_zip({"cat/1.png": png(1), "dog/1.png": png(2)}), "at most")


@pytest.mark.parametrize("members, fragment", [
    ({"cat/1.png": png(1), "dog/1.png": b"just text, named like an image"}, "dog/1.png is not an image"),
    ({"cat/1.png": png(1), "dog/1.png": png(2)[:60]}, "truncated or corrupt"),
    ({"cat/1.png": png(1), "dog/1.png": png(2), "dog/notes.txt": b"hello"}, "'dog/notes.txt' is not an image"),
    ({"cat/1.png": png(1), "dog/1.png": png(2), "readme.txt": b"hi"}, "outside any class folder"),
    ({"cat/1.png": png(1), "dog/a/1.png": png(2)}, "inside a class folder"),
    ({"cat/1.png": png(1)}, "1 class folder(s)"),
    ({f"c{c}/1.png": png(c) for c in range(11)}, "11 class folder(s)"),
    ({"cat/1.png": png(1), **{f"dog/{k}.png": png(k) for k in range(6)}}, "holds 6 images"),
])
def test_bad_class_folder_zips(members, fragment):
    refused(make_zip(members), fragment)


def _drop(key):
    def change(m):
        del m[key]
        return m
    return change


def _set(key, value):
    def change(m):
        m[key] = value
        return m
    return change


@pytest.mark.parametrize("change, fragment", [
    (lambda m: [m], "must hold a JSON object"),
    (_set("format", "something-else"), "not a fewshot task"),
    (_set("format_version", 99), "format version 99"),
    (_set("format_version", "1"), "'format_version' must be int"),
    (_drop("classes"), "has no 'classes'"),
    (_set("classes", "cat,dog"), "'classes' must be list"),
    (_set("classes", ["only"]), "1 classes"),
    (_set("classes", [f"c{i}" for i in range(11)]), "11 classes"),
    (_set("classes", [1, 2, 3]), "class name (a string)"),
    (_set("n_way", 5), "n_way is 5 but 3 classes"),
    (_set("n_shot", 9), "K-shot is 9"),
    (_set("n_shot", True), "'n_shot' must be int"),
    (_set("mode", "video"), "mode 'video'"),
    (lambda m: {**m, "support": [{**e, "class": 7} for e in m["support"]]}, "from 0 to 2, got 7"),
    (lambda m: {**m, "support": ["support/0/0.png"] + m["support"][1:]}, "must be an object"),
    (lambda m: {**m, "support": [{**m["support"][0], "file": "support/9/9.png"}] + m["support"][1:]}, "not in the zip"),
    (lambda m: {**m, "support": [{**m["support"][0], "file": "manifest.json"}] + m["support"][1:]}, "not in the zip"),
    (lambda m: {**m, "support": m["support"] + m["support"][:1]}, "listed twice"),
    (lambda m: {**m, "support": [e for e in m["support"] if e["class"] != 1]}, "has 0 examples"),
    (lambda m: {**m, "support": m["support"][1:]}, "does not list"),
    (lambda m: {**m, "queries": [{"file": q["file"]} for q in m["queries"]]}, "'true_class'"),
    (lambda m: {**m, "queries": [{**q, "true_class": 3} for q in m["queries"]]}, "true class is 3"),
    (lambda m: {**m, "queries": [{**q, "true_class": "cat"} for q in m["queries"]]}, "true class is 'cat'"),
    (lambda m: {**m, "queries": [{**q, "name": ["x"]} for q in m["queries"]]}, "'name' must be a string"),
])
def test_bad_manifests(change, fragment):
    refused(rewrite_manifest(write_task(sample_task(3, 2, 2)), change), fragment)


def test_manifest_that_is_not_json():
    data = write_task(sample_task())
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["manifest.json"] = b"{not json"
    refused(make_zip(members), "not valid JSON")
    members["manifest.json"] = b" " * (taskfile.MAX_MANIFEST_BYTES + 1)
    refused(make_zip(members), "a manifest is at most")


def test_more_examples_than_the_limit_in_a_manifest():
    task = sample_task(2, 5, 0)
    data = write_task(task)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["support/0/5.png"] = png(77)
    manifest = json.loads(members["manifest.json"])
    manifest["support"].append({"file": "support/0/5.png", "class": 0, "name": ""})
    members["manifest.json"] = json.dumps(manifest).encode()
    refused(make_zip(members), "more than 5 examples")


def test_image_in_the_manifest_that_is_not_an_image():
    data = write_task(sample_task())
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["queries/0.png"] = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    refused(make_zip(members), "queries/0.png is not an image")


# --- fewshot predict --support task.zip ------------------------------------------------------------------


CHECKPOINT = REPO / "checkpoints" / "lake" / "protonet.safetensors"


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="shipped checkpoint missing")
def test_predict_takes_a_task_file(tmp_path, capsys):
    task = sample_task(3, 1, 0)
    zipped = tmp_path / "task.zip"
    zipped.write_bytes(write_task(task))
    query = tmp_path / "q.png"
    query.write_bytes(task.support[1][0].png)  # a copy of class 1's only example: at distance 0 from its prototype
    assert main(["predict", "--checkpoint", str(CHECKPOINT), "--support", str(zipped), "--query", str(query),
                 "--device", "cpu", "--json"]) == 0
    prediction = json.loads(capsys.readouterr().out)["predictions"][0]
    assert sorted(prediction["probabilities"]) == task.class_names and prediction["label"] == "Class 1"


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="shipped checkpoint missing")
def test_predict_with_a_hostile_zip_is_one_error_line(tmp_path, capsys):
    zipped = tmp_path / "evil.zip"
    zipped.write_bytes(make_zip({"cat/1.png": png(1), "dog/1.png": png(2), "../x.png": png(3)}))
    query = tmp_path / "q.png"
    query.write_bytes(png(1))
    assert main(["predict", "--checkpoint", str(CHECKPOINT), "--support", str(zipped), "--query", str(query),
                 "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("error: ") and "climbs out" in lines[0]
    assert lines[0].startswith(f"error: {zipped}: member '../x.png'")  # the file is named
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    assert main(["predict", "--checkpoint", str(CHECKPOINT), "--support", str(bogus), "--query", str(query),
                 "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bogus}: not a zip file"


def test_limits_are_the_apps():
    """The file's limits are the lab's sliders' (a file cannot hold a task the app cannot show)."""
    from pages.lab import task

    assert (taskfile.MAX_WAY, taskfile.MAX_SHOT) == (task.MAX_WAY, task.MAX_SHOT)
    assert taskfile.MIN_WAY == 2 and taskfile.MIN_SHOT == 1  # the Build page's slider minimums
    build = (REPO / "pages" / "build.py").read_text()
    assert f"max_chars={taskfile.MAX_NAME_CHARS}" in build  # the class-name box
