"""Photo mode: the RGB path, the frozen EfficientNet-Lite0 extractor, its cache, and the methods on its features.

The photos are drawn at test time by ``fewshot.photo.synthetic_photo`` (five kinds of everyday objects at
random places, sizes, colours and backgrounds), so nothing is downloaded or stored.
"""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import fewshot
from fewshot.photo import (PHOTO_FEATURE_DIM, PHOTO_METHODS, SYNTHETIC_OBJECTS, FeatureInput, PhotoBackendMissing,
                           PhotoFeatureExtractor, build_photo_model, synthetic_photo)
from fewshot.transforms import preprocess_photo

@pytest.fixture(scope="module")
def extractor() -> PhotoFeatureExtractor:
    torch.set_num_threads(1)
    return PhotoFeatureExtractor(image_size=128).load()


@pytest.fixture(scope="module")
def object_features(extractor) -> torch.Tensor:
    """Features ``(5 classes, 4 photos, 1280)`` of the generated objects."""
    photos = [synthetic_photo(kind, seed=100 * c + k) for c, kind in enumerate(SYNTHETIC_OBJECTS) for k in range(4)]
    return extractor.features(photos).view(len(SYNTHETIC_OBJECTS), 4, PHOTO_FEATURE_DIM)


def episode_accuracy(model, features: torch.Tensor, n_shot: int) -> float:
    """Mean accuracy over every rotation of which photos are support (each class: n_shot support, rest queries)."""
    n_way, n_photos, _ = features.shape
    accuracies = []
    for start in range(n_photos):
        order = [(start + k) % n_photos for k in range(n_photos)]
        support = features[:, order[:n_shot]].reshape(-1, PHOTO_FEATURE_DIM)
        query = features[:, order[n_shot:]].reshape(-1, PHOTO_FEATURE_DIM)
        task = fewshot.Task(support, torch.arange(n_way).repeat_interleave(n_shot), query,
                            torch.arange(n_way).repeat_interleave(n_photos - n_shot), torch.arange(n_way))
        accuracies.append(fewshot.evaluate(model, [task]).accuracy)
    return float(np.mean(accuracies))


# ---- the RGB path of the one transform module


def test_preprocess_photo_keeps_colour_and_crops_the_centre_square():
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, 99, 99), fill=(0, 0, 255))  # left third blue: cropped away
    out = preprocess_photo(image, 64)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 32, 32], torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)
    assert float(out[2].max()) < 0.05  # no blue left


def test_preprocess_photo_composites_transparency_over_white_and_handles_greyscale():
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((20, 20, 30, 30), fill=(0, 128, 0, 255))
    out = preprocess_photo(rgba, 50)
    torch.testing.assert_close(out[:, 2, 2], torch.ones(3))  # transparent corner -> white
    assert float(out[1, 25, 25]) == pytest.approx(128 / 255, abs=0.02)
    grey = preprocess_photo(Image.new("L", (40, 60), 77), 32)
    assert grey.shape == (3, 32, 32) and torch.allclose(grey[0], grey[2])


def test_preprocess_photo_applies_exif_rotation():
    image = Image.new("RGB", (80, 40), (0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, 39, 39), fill=(255, 255, 255))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = preprocess_photo(buf.getvalue(), 40)  # displayed 40 wide x 80 tall: the white half is on top
    assert float(out[:, :10].mean()) > 0.9 and float(out[:, -10:].mean()) < 0.1


def test_bad_photo_gives_a_clear_error(extractor):
    with pytest.raises(fewshot.ImageError, match="not an image"):
        extractor.features([b"this is not a photo"], names=["notes.txt"])
    with pytest.raises(fewshot.ImageError, match="RGB array"):
        preprocess_photo(np.zeros((4, 4)), 32)


# ---- the extractor: frozen, deterministic, cached


def test_extractor_is_frozen_and_deterministic(extractor):
    network = extractor.network
    before = {k: v.clone() for k, v in network.state_dict().items()}
    network.train()  # asked to train: stays in eval mode (BatchNorm keeps its ImageNet statistics)
    assert not network.training and not any(m.training for m in network.modules())
    assert not any(p.requires_grad for p in network.parameters())
    images = torch.rand(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    a, b = extractor.embed_images(images), extractor.embed_images(images)
    assert a.shape == (3, PHOTO_FEATURE_DIM) and not a.requires_grad
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(extractor.embed_images(images[1:2]), a[1:2], rtol=1e-4, atol=1e-4)  # batch-independent
    for k, v in network.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_feature_cache_hits_by_content_and_is_bounded():
    small = PhotoFeatureExtractor(image_size=64, cache_size=2)
    small._network = None
    photos = [synthetic_photo("ball", 1), synthetic_photo("mug", 2), synthetic_photo("tree", 3)]
    first = small.features(photos[:2])
    assert (small.hits, small.misses, small.cached) == (0, 2, 2)
    again = small.features([photos[1], photos[0]], names=["renamed.jpg", "other.jpg"])  # same bytes, other names
    assert (small.hits, small.misses) == (2, 2)
    torch.testing.assert_close(again, first.flip(0), rtol=0, atol=0)
    again[0].fill_(0.0)  # callers get copies: the cache cannot be corrupted
    torch.testing.assert_close(small.features([photos[1]])[0], first[1], rtol=0, atol=0)
    small.features([photos[2]])
    assert small.cached == 2  # least recently used (photos[0]) dropped
    misses = small.misses
    small.features([photos[0]])
    assert small.misses == misses + 1


def test_pretrained_weights_differ_from_the_random_control():
    pretrained = PhotoFeatureExtractor(image_size=64).network.net.state_dict()
    random = PhotoFeatureExtractor(image_size=64, pretrained=False).network.net.state_dict()
    random_again = PhotoFeatureExtractor(image_size=64, pretrained=False).network.net.state_dict()
    name = "_conv_stem.weight"
    assert not torch.equal(pretrained[name], random[name])
    torch.testing.assert_close(random[name], random_again[name], rtol=0, atol=0)  # the control is seeded


def test_missing_packages_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import now raises ImportError
    with pytest.raises(PhotoBackendMissing, match="pip install efficientnet-lite-pytorch"):
        PhotoFeatureExtractor().load()


# ---- the methods on photo features


def test_photo_protonet_recognises_generated_objects(object_features):
    model = build_photo_model("protonet")
    one_shot = episode_accuracy(model, object_features, 1)
    assert one_shot >= 0.8, f"5-way 1-shot accuracy {one_shot:.2f} (chance 0.2)"
    assert episode_accuracy(model, object_features, 2) >= 0.9
    # The control: the same network at random weights is far worse (0.28 when this test was written).
    control = PhotoFeatureExtractor(image_size=128, pretrained=False)
    photos = [synthetic_photo(kind, seed=100 * c + k) for c, kind in enumerate(SYNTHETIC_OBJECTS) for k in range(4)]
    random_features = control.features(photos).view(len(SYNTHETIC_OBJECTS), 4, PHOTO_FEATURE_DIM)
    assert episode_accuracy(model, random_features, 1) < one_shot - 0.3


@pytest.mark.parametrize("method", [m for m in PHOTO_METHODS if m != "protonet"])
def test_every_photo_method_beats_chance(object_features, method):
    accuracy = episode_accuracy(build_photo_model(method), object_features, 2)
    assert accuracy >= 0.7, f"{method}: 5-way 2-shot accuracy {accuracy:.2f} (chance 0.2)"


def test_photo_maml_adapts_only_a_head_and_its_live_view_works(object_features):
    model = build_photo_model("maml")
    assert set(model.meta_weights()) == {"head.weight", "head.bias"}  # ANIL: the features are frozen
    support = object_features[:, :1].reshape(-1, PHOTO_FEATURE_DIM)
    labels = torch.arange(len(SYNTHETIC_OBJECTS))
    query = object_features[:, 1:].reshape(-1, PHOTO_FEATURE_DIM)
    steps = list(model.adaptation(support, labels, query, inner_steps=4))
    assert [s.step for s in steps] == [0, 1, 2, 3, 4]
    assert steps[0].support_loss == pytest.approx(np.log(model.n_way), rel=1e-5)  # zero head: uniform
    assert steps[-1].support_loss < steps[1].support_loss < steps[0].support_loss
    query_labels = labels.repeat_interleave(3)
    assert float((steps[-1].query_logits[:, :5].argmax(1) == query_labels).float().mean()) >= 0.7
    assert float(model.net.head.weight.detach().abs().sum()) == 0.0  # the model itself never changes


def test_feature_input_rejects_images_with_a_clear_message():
    with pytest.raises(ValueError, match="PhotoFeatureExtractor"):
        FeatureInput()(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="no photo mode"):
        build_photo_model("siamese")
