"""Photo mode in the Streamlit lab (``streamlit.testing.v1.AppTest``): the Build page's "Photos" switch, photo
uploads and the camera, every photo-mode method, the live MAML view and the embedding explorer on photos.

The photos are generated at test time (``fewshot.photo.synthetic_photo``); the fixtures (checkpoints in a
temporary folder, no Omniglot) are those of ``test_app.py``.
"""

from __future__ import annotations

import pytest

import fewshot
from fewshot.photo import PHOTO_METHODS, SYNTHETIC_OBJECTS, synthetic_photo
from test_app import app, checkpoint_dir, env, run_app_py_every_time, texts  # noqa: F401  (fixtures)


def photo_mode(page: str = "build"):
    at = app("build")
    at.radio(key="task_mode").set_value("photo").run()
    assert not at.exception, at.exception
    if page != "build":
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
    return at


def test_photo_example_task_is_classified_by_every_photo_method(env):
    at = photo_mode()
    assert "upload 1–5 photos" in texts(at)
    assert "n_shot" not in [s.key for s in at.slider]  # no canvases or pen in photo mode
    at.button(key="example_photos").click().run()
    assert not at.exception, at.exception
    assert [at.text_input(key=f"class_name_{i}").value for i in range(5)] == [k.capitalize() for k in SYNTHETIC_OBJECTS]
    assert at.selectbox(key="build_method").options[1:] == [fewshot.METHOD_TITLES[m] for m in PHOTO_METHODS]
    at.selectbox(key="build_method").set_value("all")
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    out = texts(at)
    for method in PHOTO_METHODS:
        for j in range(1, 6):
            assert f"Prediction for Query {j} ({fewshot.METHOD_TITLES[method]}):" in out, (method, j)
    accuracy = next(c.value for c in at.caption if c.value.startswith("Accuracy on the queries"))
    assert "Prototypical Networks 5/5" in accuracy, accuracy  # generated objects: ProtoNet gets them all
    assert not at.error


def test_photo_uploads_camera_and_a_bad_file(env):
    at = photo_mode()
    at.text_input(key="class_name_0").set_value("ball")
    at.text_input(key="class_name_1").set_value("tree")
    at.slider(key="n_way").set_value(2).run()
    at.file_uploader(key="upload_p0").upload("ball.jpg", synthetic_photo("ball", 1), "image/jpeg").run()
    at.file_uploader(key="upload_p1").set_value([("tree.jpg", synthetic_photo("tree", 2), "image/jpeg"),
                                                  ("notes.png", b"not a picture", "image/png")]).run()
    assert not at.exception, at.exception
    assert any("notes.png" in e.value and "not an image" in e.value for e in at.error)
    assert "1 photo(s) of class 1" in texts(at) and "1 photo(s) of class 2" in texts(at)
    # the camera: its picture goes to the chosen destination (here the queries)
    at.toggle(key="photo_camera").set_value(True).run()
    at.selectbox(key="photo_camera_target").set_value(-1).run()
    at.camera_input(key="photo_camera_input_0").upload("shot.jpg", synthetic_photo("tree", 77)).run()
    assert not at.exception, at.exception
    assert any("Picture added to the queries" in s.value for s in at.success)
    at.selectbox(key="build_method").set_value("protonet")
    at.button(key="classify").click().run()
    assert not at.exception, at.exception
    assert "Prediction for Query 1 (Prototypical Networks): **tree**" in texts(at)
    # the two tasks are kept apart: clearing the drawn task keeps the photos
    at.radio(key="task_mode").set_value("drawn").run()
    assert not at.exception, at.exception
    assert "n_shot" in [s.key for s in at.slider]
    at.button(key="clear_task").click().run()
    at.radio(key="task_mode").set_value("photo").run()
    assert not at.exception, at.exception
    assert "1 photo(s) of class 2" in texts(at) and "Query photos, as the model sees them:" in texts(at)


def test_maml_page_adapts_a_head_on_photo_features(env):
    at = photo_mode("maml")  # no photos yet: the page shows the photo example at once
    assert "Example task" in texts(at) and "generated photos" in texts(at) and not at.error
    assert "ANIL" in texts(at)
    at.slider(key="maml_steps").set_value(3)
    at.button(key="maml_play").click().run()
    assert not at.exception, at.exception
    assert "Adapted: step 3 of 3 (done)" in texts(at)
    steps = next(f.value for f in at.dataframe if "support loss" in f.value.columns)
    assert list(steps["step"]) == [0, 1, 2, 3]
    assert steps["support loss"].iloc[0] == pytest.approx(2.3026, abs=1e-3)  # zero head, 10 outputs: log 10
    assert steps["support loss"].iloc[-1] < steps["support loss"].iloc[0]
    assert "ProtoNet" in texts(at)


def test_embedding_page_maps_the_photos(env):
    at = photo_mode()
    at.button(key="example_photos").click().run()
    at.switch_page("pages/embeddings.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="emb_source").options == ["The current task (Build a task)"]
    assert "EfficientNet-Lite0" in texts(at)
    charts = at.get("plotly_chart")
    assert len(charts) == 1 and "t-SNE" in charts[0].proto.spec
    at.selectbox(key="emb_method").set_value("maml").run()
    assert not at.exception, at.exception
    assert "does not move" in texts(at)


def test_inside_page_explains_the_photo_task(env):
    at = photo_mode("inside")  # no photos yet: the generated photos, labelled as the example
    assert not at.exception, at.exception
    out = texts(at)
    assert "Example task" in out and "generated photos" in out and not at.error
    for method in PHOTO_METHODS:
        if method != "fomaml":  # (the MAML tab shows second-order MAML)
            assert f"Answer of {fewshot.METHOD_TITLES[method]} for Query 1:" in out, method
    assert "Siamese network has no photo mode" in out and "Memory-augmented network (MANN) has no photo mode" in out
