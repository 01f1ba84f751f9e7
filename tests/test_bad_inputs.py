"""The catalogue of bad input (issue 6): every case in one place, each with a clear message and nothing else lost.

Three tables:

* ``APP_UPLOADS`` / ``APP_TASK`` -- the Streamlit lab, with ``AppTest``. After each bad input: the message says
  what is wrong and what to do, no exception reached the page (``at.exception`` empty), and everything else the
  user had entered (class names, the other classes' drawings and uploads, the task shape, the chosen method)
  is still in session state.
* ``CLI`` -- ``python -m fewshot`` (its ``main``, in-process): exit status 2 and one ``error:`` line that names
  the problem and the fix, never a traceback.
* ``ELSEWHERE`` -- cases already tested elsewhere in the suite, listed here by test name so the catalogue is
  complete; ``test_catalogue_references_exist`` fails when one of those tests disappears.

Odd-but-valid images (16-bit, CMYK, palette, transparency, animated GIF, EXIF rotation, inverted polarity) are
in the catalogue too: their expected outcome is *accepted*, without any message.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import streamlit as st
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

import fewshot
from fewshot.cli import main as cli_main

# The AppTest suite's checkpoints, helpers and app.py-every-run workaround.
from test_app import (APP, SHAPES, app, canvas_state, checkpoint_dir, draw_task, env,  # noqa: F401
                      run_app_py_every_time, texts)

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------------ image files
def _png(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _symbol() -> Image.Image:
    from fewshot.symbols import synthetic_symbol

    return Image.open(io.BytesIO(synthetic_symbol("zigzag", seed=5))).convert("L")


def _noise_png() -> bytes:
    return _png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)))


def _header_only_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _corrupt_png() -> bytes:
    data = bytearray(_noise_png())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the compressed pixels
    return bytes(data)


def _transparent_rgba() -> bytes:
    ink = np.asarray(_symbol()) < 128
    rgba = np.zeros(ink.shape + (4,), np.uint8)
    rgba[ink] = (20, 20, 20, 255)
    return _png(Image.fromarray(rgba, "RGBA"))


def _animated_gif() -> bytes:
    frames = [_symbol().convert("P"), Image.new("L", _symbol().size, 255).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _jpeg(_symbol().transpose(Image.Transpose.ROTATE_90).convert("RGB"), exif=exif)


@dataclass
class Upload:
    data: Callable[[], bytes]
    name: str
    mime: str
    message: str | None  # a fragment of the error shown; None = the file must be accepted without a message


APP_UPLOADS = {
    "not-an-image": Upload(lambda: b"these are notes, not pixels\n" * 10, "notes.png", "image/png", "not an image"),
    "empty-file": Upload(lambda: b"", "empty.png", "image/png", "not an image"),
    "svg-renamed": Upload(lambda: b"<svg xmlns='http://www.w3.org/2000/svg'><circle r='5'/></svg>", "logo.png",
                          "image/png", "not an image"),
    "truncated-png": Upload(lambda: _noise_png()[:300], "cut.png", "image/png", "truncated or corrupt"),
    "truncated-jpeg": Upload(lambda: _jpeg(_symbol())[:-400], "cut.jpg", "image/jpeg", "truncated or corrupt"),
    "corrupt-png": Upload(_corrupt_png, "flipped.png", "image/png", "truncated or corrupt"),
    "decompression-bomb": Upload(lambda: _header_only_png(50_000, 50_000), "bomb.png", "image/png", "too large"),
    "over-40-megapixels": Upload(lambda: _header_only_png(8_000, 6_000), "huge.png", "image/png", "too large"),
    "blank-white": Upload(lambda: _jpeg(Image.new("RGB", (64, 64), "white")), "white.jpg", "image/jpeg", "looks blank"),
    "all-black": Upload(lambda: _png(Image.new("L", (64, 64), 0)), "black.png", "image/png", "looks blank"),
    "fully-transparent": Upload(lambda: _png(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), "clear.png", "image/png",
                                "looks blank"),
    # odd but valid: accepted as they are
    "16-bit-png": Upload(lambda: _png(Image.fromarray(np.asarray(_symbol()).astype(np.uint16) * 257)), "deep.png",
                         "image/png", None),
    "cmyk-jpeg": Upload(lambda: _jpeg(_symbol().convert("CMYK")), "print.jpg", "image/jpeg", None),
    "palette-png": Upload(lambda: _png(_symbol().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)),
                          "palette.png", "image/png", None),
    "rgba-transparent": Upload(_transparent_rgba, "strokes.png", "image/png", None),
    "animated-gif": Upload(_animated_gif, "anim.gif", "image/gif", None),
    "exif-rotated": Upload(_exif_rotated, "phone.jpg", "image/jpeg", None),
    "white-on-black": Upload(lambda: _png(Image.fromarray(255 - np.asarray(_symbol()))), "chalk.png", "image/png", None),
}


# ------------------------------------------------------------------------------------------------ app helpers
def _kept(at: AppTest) -> dict:
    """Everything the user entered, as session state holds it."""
    store = at.session_state["task"]
    return {"names": list(store.names[:store.n_way]), "drawn": sorted(store.drawn),
            "uploads": {slot: sorted(items) for slot, items in store.uploads.items() if items},
            "shape": (store.n_way, store.n_shot, store.n_queries),
            "method": at.session_state["build_method"] if "build_method" in at.session_state else None}


def _assert_kept(at: AppTest, before: dict, *, except_slot: str | None = None, except_names: bool = False) -> None:
    after = _kept(at)
    for key in before:
        if key == "uploads" and except_slot:
            b = {k: v for k, v in before[key].items() if k != except_slot}
            a = {k: v for k, v in after[key].items() if k != except_slot}
            assert a == b, "another slot's uploads changed"
        elif key == "names" and except_names:
            continue
        else:
            assert after[key] == before[key], f"{key} changed: {before[key]} -> {after[key]}"


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, at.exception
    for element in list(at.error) + list(at.warning):
        assert "Traceback" not in element.value


@pytest.fixture(scope="module")
def user(checkpoint_dir, tmp_path_factory):  # noqa: F811
    """One user on the Build page for the whole catalogue: a drawn 5-way task, a second upload for class 1, the
    method set to ProtoNet. Each case does one wrong thing, checks the message and that nothing else was lost,
    then undoes it (as the user would) and checks the task classifies again."""
    from streamlit.runtime.pages_manager import PagesManager

    from fewshot.symbols import synthetic_symbol

    original = PagesManager.__init__

    def init(self, *args, **kwargs):  # as test_app.run_app_py_every_time, for the module's lifetime
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSHOT_CHECKPOINT_DIR", str(checkpoint_dir))
        mp.setenv("FEWSHOT_DATA_DIR", str(tmp_path_factory.mktemp("no-omniglot") / "none"))
        mp.setattr(PagesManager, "__init__", init)
        at = app("build")
        at.file_uploader(key="upload_s0").upload("extra.png", synthetic_symbol("circle", seed=42), "image/png")
        at.selectbox(key="build_method").set_value("protonet")
        draw_task(at)
        _no_traceback(at)
        yield at


def _classifies(at: AppTest) -> bool:
    at.button(key="classify").click().run()
    _no_traceback(at)
    return "Prediction for Query 1 (Prototypical Networks):" in texts(at)


def _uploader_key(at: AppTest, slot: str) -> str:
    generation = at.session_state["task"].uploader_generation
    return f"upload_{slot}" if generation == 0 else f"upload_{slot}_g{generation}"


@pytest.mark.parametrize("case", list(APP_UPLOADS), ids=list(APP_UPLOADS))
def test_app_upload(user, case):
    at, spec = user, APP_UPLOADS[case]
    before = _kept(at)
    key = _uploader_key(at, "s1")
    at.file_uploader(key=key).upload(spec.name, spec.data(), spec.mime).run()
    _no_traceback(at)
    bucket = at.session_state["task"].uploads.get("s1", {})
    if spec.message is None:
        assert not _errors(at), _errors(at)
        assert [u.name for u in bucket.values()] == [spec.name]
        assert "1 uploaded example(s) of class 2" in texts(at)
        _assert_kept(at, before, except_slot="s1")
    else:
        shown = [e for e in _errors(at) if spec.name in e]
        assert shown and spec.message in shown[0], _errors(at)
        assert shown[0].startswith("Not used:") and ";" in shown[0]  # what is wrong; what to do
        assert not bucket
        _assert_kept(at, before)
    at.file_uploader(key=key).set_value([]).run()  # the user takes the file away again
    _no_traceback(at)
    assert not at.session_state["task"].uploads.get("s1") and not _errors(at)
    _assert_kept(at, before)


def test_app_task_still_classifies_after_every_upload(user):
    assert _classifies(user)


def _black_canvas_state() -> dict:
    import base64

    state = canvas_state("bar")
    black = io.BytesIO()
    Image.new("RGBA", (210, 210), (0, 0, 0, 255)).save(black, "PNG")
    state["drawing"]["data"] = "data:image/png;base64," + base64.b64encode(black.getvalue()).decode()
    return state


def _canvas(key: str, state_fn: Callable[[], dict], shown: str, message: str, kind: str = "error"):
    def case(at):
        saved = at.session_state[key]
        at.session_state[key] = state_fn()
        at.run()
        assert shown in texts(at), texts(at)[-1500:]

        def undo():
            at.session_state[key] = saved
            at.run()
        return message, kind, False, undo
    return case


def _name(i: int, value: str, message: str):
    def case(at):
        saved = at.text_input(key=f"class_name_{i}").value
        at.text_input(key=f"class_name_{i}").set_value(value).run()

        def undo():
            at.text_input(key=f"class_name_{i}").set_value(saved).run()
        return message, "error", False, undo
    return case


def _no_examples(at):
    at.slider(key="n_way").set_value(6).run()

    def undo():
        at.slider(key="n_way").set_value(5).run()
    return "Class 6 ('Class 6') has no examples: draw one or upload an image.", "error", False, undo


def _more_than_k(at):
    return "Class 1 ('circle') has 2 examples but K-shot is 1", "warning", True, lambda: None


def _way_over_model_head(at):
    at.slider(key="n_way").set_value(6).run()
    at.session_state["draw_s5_0"] = canvas_state("star", seed=56)
    at.selectbox(key="build_method").set_value("maml")
    at.run()

    def undo():
        at.selectbox(key="build_method").set_value("protonet")
        at.slider(key="n_way").set_value(5).run()
    return "has a 5-way output head and cannot answer a 6-way task (use at most 5 classes", "warning", False, undo


APP_TASK = {
    "empty-canvas": _canvas("draw_s4_0", lambda: canvas_state(None), "Class 5, example 1: empty",
                            "Class 5 ('bar') has no examples: draw one or upload an image."),
    "all-black-canvas": _canvas("draw_s4_0", _black_canvas_state, "Class 5, example 1: empty (no ink)",
                                "Class 5 ('bar') has no examples: draw one or upload an image."),
    "class-without-examples": _no_examples,
    "class-with-more-than-K": _more_than_k,
    "duplicate-class-names": _name(1, "circle", "Classes 1 and 2 are both called 'circle': give every class a "
                                                "different name."),
    "duplicate-names-other-case": _name(1, "CIRCLE", "Classes 1 and 2 are both called 'CIRCLE'"),
    "empty-class-name": _name(2, "", "Class 3 has no name: type one in its name box."),
    "whitespace-class-name": _name(2, "   ", "Class 3 has no name: type one in its name box."),
    "query-with-nothing-drawn": _canvas("draw_q0", lambda: canvas_state(None), "Query 1: empty",
                                        "No queries yet: draw a query or upload one, then classify.", "warning"),
    "all-black-query": _canvas("draw_q0", _black_canvas_state, "Query 1: empty (no ink)",
                               "No queries yet: draw a query or upload one, then classify.", "warning"),
    "N-above-the-model-head": _way_over_model_head,
}


@pytest.mark.parametrize("case", list(APP_TASK), ids=list(APP_TASK))
def test_app_task(user, case):
    at = user
    before = _kept(at)
    message, kind, still_classifies, undo = APP_TASK[case](at)
    _no_traceback(at)
    changed = _kept(at)  # the case's own edit is the user's latest input: it stays too
    assert _classifies(at) == still_classifies
    shown = [e.value for e in (at.error if kind == "error" else at.warning)]
    assert any(message in m for m in shown), (message, shown)
    assert _kept(at) == changed
    assert changed["uploads"] == before["uploads"]
    undo()
    _no_traceback(at)
    after = _kept(at)
    assert set(after.pop("drawn")) >= set(before["drawn"])  # a drawing made for the case is kept, unused
    assert after == {k: v for k, v in before.items() if k != "drawn"}
    assert _classifies(at)


def test_app_n_and_k_are_bounded(user):
    """N and K outside the allowed range cannot be entered: the sliders stop at 2..10 classes and 1..5 shots."""
    n_way, n_shot = user.slider(key="n_way"), user.slider(key="n_shot")
    assert (n_way.min, n_way.max, n_shot.min, n_shot.max) == (2, 10, 1, 5)


def _write_bad_checkpoints(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    torch.save({"w": torch.zeros(2)}, folder / "pickled.safetensors")
    cut = fewshot.save_checkpoint(folder / "cut.safetensors", fewshot.build_model("protonet", hidden=4),
                                  method="protonet")
    cut.write_bytes(cut.read_bytes()[:200])
    record = {"format": "fewshot-checkpoint", "format_version": 999, "method": "protonet", "method_kwargs": {}}
    save_file({"model/x": torch.zeros(1)}, str(folder / "future.safetensors"), metadata={"fewshot": json.dumps(record)})


CHECKPOINT_FOLDER = {"checkpoint-folder-missing": "is not a folder", "checkpoint-pickle-payload": "never unpickles",
                     "checkpoint-truncated": "truncated or corrupt",
                     "checkpoint-future-version": "newer than this fewshot understands"}


@pytest.mark.parametrize("case", list(CHECKPOINT_FOLDER), ids=list(CHECKPOINT_FOLDER))
def test_app_bad_checkpoints_are_skipped_with_a_reason(user, tmp_path, case):
    at = user
    before = _kept(at)
    folder = tmp_path / "mine"
    if case != "checkpoint-folder-missing":
        _write_bad_checkpoints(folder)
    at.text_input(key="ckpt_extra_dir").set_value(str(folder)).run()
    _no_traceback(at)
    skipped = [c.value for c in at.sidebar.caption if c.value.startswith("Skipped:")]
    assert any(CHECKPOINT_FOLDER[case] in s for s in skipped), skipped
    _assert_kept(at, before)
    assert _classifies(at)  # the good checkpoints still work
    at.text_input(key="ckpt_extra_dir").set_value("").run()


def test_app_half_extracted_omniglot_is_explained(env, tmp_path):  # noqa: F811
    data = tmp_path / "omniglot"
    for subset in ("images_background", "images_evaluation"):
        folder = data / subset / "Alphabet" / "character01"
        folder.mkdir(parents=True)
        for k in range(3):  # 3 of 20 drawings: extraction stopped early
            (folder / f"{k:02d}.png").write_bytes(_png(_symbol()))
    env.setenv("FEWSHOT_DATA_DIR", str(data))
    env.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    at = app("human")  # the page that loads Omniglot as it opens
    _no_traceback(at)
    assert "FEWSHOT_DATA_DIR" in texts(at)  # what to do
    assert any("half-extracted" in c.value for c in at.code), [c.value for c in at.code]  # what is wrong


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-bad")
    files: dict[str, Path] = {"root": root}
    support = root / "support"
    for c, shape in enumerate(("circle", "cross", "bar")):
        (support / shape).mkdir(parents=True)
        for k in range(3):
            from fewshot.symbols import synthetic_symbol

            (support / shape / f"{k}.png").write_bytes(synthetic_symbol(shape, seed=10 * c + k))
    files["support"] = support
    files["query"] = next((support / "circle").iterdir())
    proto = fewshot.build_model("protonet", hidden=8)
    files["protonet"] = fewshot.save_checkpoint(root / "protonet.safetensors", proto, method="protonet",
                                                metadata={"image_size": 28})
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(files["protonet"].read_bytes()[:300])
    files["truncated"] = truncated
    record = {"format": "fewshot-checkpoint", "format_version": 999, "method": "protonet", "method_kwargs": {}}
    save_file({"model/x": torch.zeros(1)}, str(root / "future.safetensors"), metadata={"fewshot": json.dumps(record)})
    files["future"] = root / "future.safetensors"
    save_file({"weight": torch.zeros(2)}, str(root / "foreign.safetensors"))
    files["foreign"] = root / "foreign.safetensors"

    class Payload:
        def __reduce__(self):
            return (open, (str(root / "pwned"), "w"))

    (root / "evil.safetensors").write_bytes(pickle.dumps({"model": Payload()}, protocol=4))
    files["evil"] = root / "evil.safetensors"
    export = root / "exported.safetensors"
    fewshot.save_checkpoint(export, proto, method="protonet")
    files["exported"] = export
    (root / "no-classes").mkdir()
    files["no_classes"] = root / "no-classes"
    (root / "no-images" / "a").mkdir(parents=True)
    (root / "no-images" / "a" / "readme.txt").write_text("no pictures here")
    files["no_images"] = root / "no-images"
    (root / "empty-queries").mkdir()
    files["empty_queries"] = root / "empty-queries"
    (root / "cut-query.png").write_bytes(_noise_png()[:200])
    files["cut_query"] = root / "cut-query.png"
    # Omniglot folders: half-extracted (3 of 20 drawings), an empty subset, a corrupt zip
    for name, count in (("half", 3), ("emptysub", 0)):
        for subset in ("images_background", "images_evaluation"):
            folder = root / name / subset / "Alphabet" / "character01"
            folder.mkdir(parents=True)
            for k in range(count):
                (folder / f"{k:02d}.png").write_bytes(_png(_symbol()))
        files[name] = root / name
    (root / "badzip").mkdir()
    for subset in ("images_background", "images_evaluation"):
        (root / "badzip" / f"{subset}.zip").write_bytes(b"PK\x03\x04 this zip was cut short")
    files["badzip"] = root / "badzip"
    return files


def _train(f, *extra, method: str = "protonet") -> list[str]:
    return ["train", "--method", method, "--dataset", "folder", "--data-dir", str(f["support"]), "--n-way", "2",
            "--n-shot", "1", "--n-query", "1", "--episodes", "2", "--val-every", "0", "--hidden", "8", "--quiet",
            "--device", "cpu", *extra]


def _predict(f, checkpoint, *, support=None, query=None) -> list[str]:
    return ["predict", "--checkpoint", str(checkpoint), "--support", str(support or f["support"]),
            "--query", str(query or f["query"]), "--device", "cpu"]


def _omniglot_eval(f, data) -> list[str]:
    return ["evaluate", "--checkpoint", str(f["protonet"]), "--protocol", "lake", "--data-dir", str(data),
            "--episodes", "1", "--device", "cpu"]


CLI = {
    "checkpoint-missing": (lambda f: ["info", "--checkpoint", str(f["root"] / "nope.safetensors")], "does not exist"),
    "checkpoint-is-a-folder": (lambda f: ["info", "--checkpoint", str(f["root"])], "is a folder"),
    "checkpoint-truncated": (lambda f: ["info", "--checkpoint", str(f["truncated"])], "truncated or corrupt"),
    "checkpoint-future-version": (lambda f: ["info", "--checkpoint", str(f["future"])], "upgrade fewshot"),
    "checkpoint-pickle-payload": (lambda f: _predict(f, f["evil"]), "never unpickles"),
    "checkpoint-other-program": (lambda f: ["info", "--checkpoint", str(f["foreign"])], "not a fewshot checkpoint"),
    "checkpoint-other-method": (lambda f: _train(f, "--out", str(f["protonet"]), "--resume", method="maml"),
                                "'protonet' checkpoint, not 'maml'"),
    "resume-without-a-checkpoint": (lambda f: _train(f, "--out", str(f["root"] / "new.safetensors"), "--resume"),
                                    "run without --resume"),
    "resume-from-an-export": (lambda f: _train(f, "--out", str(f["exported"]), "--resume"), "holds no training state"),
    "support-folder-missing": (lambda f: _predict(f, f["protonet"], support=f["root"] / "gone"), "does not exist"),
    "support-folder-without-classes": (lambda f: _predict(f, f["protonet"], support=f["no_classes"]),
                                       "has no class subfolders"),
    "support-folder-without-images": (lambda f: _predict(f, f["protonet"], support=f["no_images"]),
                                      "no readable images"),
    "query-missing": (lambda f: _predict(f, f["protonet"], query=f["root"] / "gone.png"), "does not exist"),
    "query-folder-empty": (lambda f: _predict(f, f["protonet"], query=f["empty_queries"]), "contains no image files"),
    "query-truncated-png": (lambda f: _predict(f, f["protonet"], query=f["cut_query"]), "truncated or corrupt"),
    "N-is-1": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors")) + ["--n-way", "1"], "at least 2"),
    "N-is-0": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors")) + ["--n-way", "0"], "at least 2"),
    "K-is-0": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors")) + ["--n-shot", "0"],
               "must be a positive integer"),
    "N-above-the-classes": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors")) + ["--n-way", "5"],
                            "the dataset has 3 classes but n_way = 5"),
    "K-plus-Q-above-the-images": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors")) + ["--n-shot", "3"],
                                  "has 3 images but n_shot + n_query = 4"),
    "folder-dataset-without-data-dir": (lambda f: ["train", "--method", "protonet", "--dataset", "folder", "--out",
                                                   str(f["root"] / "x.safetensors")], "needs --data-dir"),
    "non-finite-loss": (lambda f: _train(f, "--out", str(f["root"] / "nan.safetensors"), "--meta-lr", "1e20"),
                        "non-finite loss"),
    "meta-lr-overflows-float32": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors"), "--meta-lr", "1e38"),
                                  "meta_lr must be > 0 and at most 1e30"),
    "meta-lr-not-a-number": (lambda f: _train(f, "--out", str(f["root"] / "x.safetensors"), "--meta-lr", "nan"),
                             "meta_lr must be > 0"),
    "omniglot-half-extracted": (lambda f: _omniglot_eval(f, f["half"]), "half-extracted"),
    "omniglot-empty-subset": (lambda f: _omniglot_eval(f, f["emptysub"]), "half-extracted"),
    "omniglot-corrupt-zip": (lambda f: _omniglot_eval(f, f["badzip"]), "not a readable zip"),
}


@pytest.mark.parametrize("case", list(CLI), ids=list(CLI))
def test_cli(cli_files, capsys, case, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(cli_files["root"] / "cache"))
    make_args, fragment = CLI[case]
    try:
        status = cli_main(make_args(cli_files))
    except SystemExit as exc:  # argparse: usage line + "error: argument ..."
        status = exc.code
    out, err = capsys.readouterr()
    assert status == 2, (status, err)
    assert "Traceback" not in err and out == ""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("usage:") and not ln.startswith("  ")]
    assert len(lines) == 1 and "error: " in lines[0], err
    assert fragment in lines[0], lines[0]
    assert not (cli_files["root"] / "pwned").exists()  # no pickle payload ever ran


# ------------------------------------------------------------------------------------------------ elsewhere
ELSEWHERE = {
    "app-upload-not-an-image-then-fixed": "test_app.py::test_bad_input_gets_messages_and_keeps_the_rest",
    "app-no-omniglot": "test_app.py::test_every_page_renders_without_data",
    "app-no-checkpoints": "test_app.py::test_no_checkpoints_is_explained_and_own_folder_works",
    "app-embedding-folder-missing-or-broken-file": "test_app.py::test_embedding_page_folder_source",
    "cli-pickle-via-torch-save": "test_cli.py::test_pickle_checkpoint",
    "cli-20-way-question-to-5-way-maml": "test_cli.py::test_20_way_evaluation_of_a_5_way_maml",
    "cli-support-folder-with-one-class": "test_cli.py::test_support_folder_with_one_class",
    "cli-omniglot-data-dir-empty": "test_cli.py::test_missing_data_dir",
    "checkpoint-pickle-payload-never-runs": "test_checkpoints.py::test_pickle_checkpoint_is_refused_without_running_it",
    "checkpoint-protocol-0-pickle": "test_checkpoints.py::test_protocol_0_pickle_is_refused_without_running_it",
    "checkpoint-weights-do-not-fit": "test_checkpoints.py::test_weights_that_do_not_fit_the_described_model",
    "checkpoint-unknown-method": "test_checkpoints.py::test_unknown_method",
    "checkpoint-random-bytes": "test_checkpoints.py::test_random_bytes",
    "checkpoint-header-looks-like-pickle": "test_checkpoint_header.py::test_header_length_with_pickle_magic_byte_loads",
    "image-folder-instead-of-file": "test_transforms.py::test_not_an_image",
    "image-pixel-limit-before-decoding": "test_transforms.py::test_pixel_limit_is_checked_before_decoding",
    "training-killed-mid-run": "test_crash_resume.py::test_sigkill_mid_run_then_resume_matches_uninterrupted",
    "training-killed-mid-write": "test_crash_resume.py::test_kill_during_the_write_never_corrupts_the_last_good_checkpoint",
    # issue 19: hostile checkpoints and arguments (one case per class, then property-based fuzzing)
    "cli-each-class-of-hostile-input": "test_fuzz_cli.py::test_each_class_of_the_issue_is_one_error_line",
    "cli-fuzzed-metadata-record": "test_fuzz_cli.py::test_fuzzed_metadata_record",
    "cli-fuzzed-tensors": "test_fuzz_cli.py::test_fuzzed_tensors",
    "cli-fuzzed-arguments": "test_fuzz_cli.py::test_fuzzed_arguments",
    "cli-broken-training-state-still-predicts": "test_fuzz_cli.py::test_a_broken_training_state_does_not_stop_inference",
    "cli-skipped-images-reported": "test_fuzz_cli.py::test_skipped_images_are_reported_with_the_reason",
    "checkpoint-record-field-by-field": "test_checkpoints.py::test_the_record_is_checked_field_by_field_before_a_model_is_built",
    "checkpoint-training-state-on-resume": "test_checkpoints.py::test_the_training_state_is_checked_only_when_a_run_resumes",
    "checkpoint-pipe-or-device": "test_checkpoints.py::test_pipes_and_devices_are_never_opened_as_checkpoints",
}


def test_catalogue_references_exist():
    for case, ref in ELSEWHERE.items():
        module, name = ref.split("::")
        assert callable(getattr(importlib.import_module(module[:-3]), name, None)), f"{case}: {ref} is gone"
    total = len(APP_UPLOADS) + len(APP_TASK) + 1 + len(CHECKPOINT_FOLDER) + 1 + len(CLI) + len(ELSEWHERE)
    assert total >= 40, total
