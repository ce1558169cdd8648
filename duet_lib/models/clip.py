"""The one wrapper around open_clip: load, save, preprocess, patch tokens, freezing.

Chapters never touch open_clip directly; they call :func:`load_clip` and work with
the returned :class:`ClipBundle`. Six small architectures ship with the book as
JSON files in ``duet_lib/configs/`` and are registered with open_clip on first use:

- ``duet-tiny-conv-96`` / ``duet-tiny-conv-128``: a tiny CLIP (joint width 128;
  text: context 32, width 128, 4 heads, 4 layers) whose vision transformer (width
  128, 4 layers, head width 32) reads a convolutional stem instead of a patch
  embedding (Xiao et al., "Early Convolutions Help Transformers See Better",
  NeurIPS 2021): four 3x3 convolutions with stride 2 and GELU (3 -> 16 -> 32 ->
  64 -> 128 channels; half the channels of the paper's stem, for CPU speed) and a
  1x1 convolution to the transformer width. The total stride is 16, so a 96 px
  image gives a 6x6 grid of tokens and 128 px an 8x8 grid.
- ``duet-tiny-patch``: the same transformer with a plain 16 px patch embedding,
  for comparison.
- ``duet-tiny-conv32-96``: a thinner stem with one more stride-2 layer (3 x 3
  grid) and a text MLP of ratio 2, chapter 02's fast convolutional backbone.
- ``duet-tiny-hog-96``: the same transformer reading fixed gradient histograms
  (:class:`HogStem`; Dalal and Triggs, CVPR 2005) through a small learned map, for
  chapter 02's short-budget comparison.
- ``duet-tiny-hog32-96``: the same histograms gathered 4 x 4 cells per token, a
  3 x 3 grid (10 tokens instead of 37), with the text MLP ratio 2 of
  ``duet-tiny-conv32-96``: chapter 02's fastest backbone.

The stem cannot be described inside an open_clip config (the constructor rejects
unknown keys), so its specification lives in ``duet_lib/configs/stems.json`` and
:func:`load_clip` swaps it in for ``model.visual.conv1`` after building the model.

``pretrained`` is ``None`` (random initialisation), a local checkpoint path (one
written by :func:`save_clip`, or an open_clip weights file), or an open_clip tag
such as ``"openai"``. Tags need the Hugging Face Hub; offline they fail within a
second with :class:`WeightsUnavailableError`, whose message says how to obtain the
file. Introduced in chapter 02 (tiny CLIP) and used by every later chapter.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import math
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip import constants as oc_constants
from PIL import Image
from torch import nn

from duet_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONFIG_DIR",
    "ClipBundle",
    "ConvStem",
    "HogStem",
    "WeightsUnavailableError",
    "available_models",
    "count_parameters",
    "duet_model_names",
    "block_normalize",
    "embedding_blocks",
    "encode_image_with_tokens",
    "freeze_for_duet",
    "set_embedding_blocks",
    "load_clip",
    "register_configs",
    "save_clip",
    "stem_kind",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CHECKPOINT_FORMAT = "duet_lib.clip/1"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_PROBE_TIMEOUT_S = 0.5


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights named by a tag are neither cached locally nor reachable."""


# --------------------------------------------------------------------------- configs


def _stem_specs() -> dict[str, dict[str, Any]]:
    with open(CONFIG_DIR / "stems.json", encoding="utf-8") as handle:
        return json.load(handle)["stems"]


def duet_model_names() -> list[str]:
    """Names of the architectures that ship with the book (``duet_lib/configs``)."""
    names = []
    for path in sorted(CONFIG_DIR.glob("*.json")):
        with open(path, encoding="utf-8") as handle:
            cfg = json.load(handle)
        if all(key in cfg for key in ("embed_dim", "vision_cfg", "text_cfg")):
            names.append(path.stem)
    return names


def stem_kind(model_name: str) -> str | None:
    """The kind of stem (one of :data:`STEM_KINDS`) that replaces the named
    architecture's patch embedding, or None where it keeps open_clip's own (web
    configs such as ViT-B-32, and ``duet-tiny-patch``)."""
    spec = _stem_specs().get(model_name)
    return None if spec is None else spec.get("kind", "conv")


def register_configs() -> None:
    """Make the book's JSON configs known to open_clip (idempotent)."""
    known = set(open_clip.list_models())
    if all(name in known for name in duet_model_names()):
        return
    open_clip.add_model_config(CONFIG_DIR)


def available_models() -> list[str]:
    """Every model name :func:`load_clip` accepts (open_clip's and the book's)."""
    register_configs()
    return list(open_clip.list_models())


def _check_model_name(model_name: str) -> None:
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    names = available_models()
    if model_name in names:
        return
    close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
    examples = list(
        dict.fromkeys(close + duet_model_names() + ["ViT-B-32", "ViT-B-16"])
    )
    raise ValueError(
        f"unknown model_name {model_name!r}; valid names include "
        f"{', '.join(examples[:8])} ({len(names)} in total, see "
        "duet_lib.models.clip.available_models())"
    )


# ------------------------------------------------------------------------------ stem


class ConvStem(nn.Module):
    """Convolutional stem replacing a ViT patch embedding (chapter 02).

    A stack of ``kernel_size`` x ``kernel_size`` convolutions with stride ``stride``,
    padding ``kernel_size // 2`` and GELU, followed by a 1x1 convolution to the
    transformer width. With four stride-2 layers the total stride is 16.

    Args:
        channels: output channels of the strided convolutions, e.g. (16, 32, 64, 128).
        width: transformer width (channels of the final 1x1 convolution).
        kernel_size: size of the strided convolutions.
        stride: stride of each strided convolution.
        activation: ``"gelu"`` or ``"relu"``.

    Shapes:
        input (B, 3, H, W) -> output (B, width, H / S, W / S), S = stride ** len(channels),
        for H and W divisible by S. Weights and activations use the channels-last
        memory layout (same values, faster convolutions).
    """

    def __init__(
        self,
        channels: Sequence[int],
        width: int,
        kernel_size: int = 3,
        stride: int = 2,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        acts = {"gelu": nn.GELU, "relu": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"stem activation must be one of {sorted(acts)}")
        if not channels or any(int(c) <= 0 for c in channels):
            raise ValueError(f"stem channels must be positive, got {list(channels)}")
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in channels:
            layers.append(
                nn.Conv2d(in_ch, int(out_ch), kernel_size, stride, kernel_size // 2)
            )
            layers.append(acts[activation]())
            in_ch = int(out_ch)
        layers.append(nn.Conv2d(in_ch, width, kernel_size=1, bias=False))
        self.layers = nn.Sequential(*layers)
        self.total_stride = stride ** len(channels)
        self.reset_parameters()
        # Channels-last convolutions are markedly faster on CPU (oneDNN) and on
        # tensor-core GPUs; the layout does not change any value.
        self.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Variance-preserving initialisation (He et al., 2015).

        PyTorch's default convolution initialisation shrinks activations by about
        half per layer; after four layers the stem's output would be ~100x smaller
        than the positional embedding it is added to, and the transformer would start
        out nearly blind to the image (measured: output std 0.008 vs 0.087). He
        initialisation keeps the output at roughly unit scale, like a patch embedding.
        """
        convs = [m for m in self.layers if isinstance(m, nn.Conv2d)]
        for conv in convs[:-1]:
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        last = convs[-1]
        nn.init.normal_(last.weight, std=last.in_channels**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.contiguous(memory_format=torch.channels_last))


class HogStem(nn.Module):
    """A stem of fixed gradient histograms and a learned per-token map (chapter 02).

    The fixed part computes, per ``cell`` x ``cell`` cell of the image, a histogram
    of unsigned gradient orientations in ``bins`` bins (each pixel votes its
    gradient magnitude into its two nearest bins; Dalal and Triggs, CVPR 2005) on
    the channel mean, takes the square root and divides by the local energy of the
    3 x 3 neighbouring cells, and appends the cell's mean of each input channel.
    Each token gathers ``group`` x ``group`` cells (2 x 2 by default); a 1x1
    convolution, GELU and a 1x1 convolution map its ``group**2 * (bins + 3)`` numbers
    to the transformer width. Only that map learns: shape edges are in the tokens
    from the first step, but which edges belong to the object and which to its
    pattern or background must still be learned. Our choice, for chapter 02's
    comparison of what a few minutes of pretraining buy, and the stem of the
    ``duet-tiny-hog-96`` preset; the book's default keeps the learned convolutional
    stem.

    Shapes:
        input (B, 3, H, W) -> output (B, width, H / S, W / S), S = ``group * cell``,
        for H and W divisible by S.
    """

    def __init__(
        self,
        width: int,
        bins: int = 9,
        cell: int = 8,
        hidden: int = 128,
        group: int = 2,
    ):
        super().__init__()
        if min(bins, cell, hidden, width, group) < 1:
            raise ValueError("HogStem sizes must be positive integers")
        self.bins, self.cell, self.group = int(bins), int(cell), int(group)
        self.total_stride = self.group * self.cell
        features = self.group**2 * (self.bins + 3)
        self.n_features = features
        self.proj = nn.Sequential(
            nn.Conv2d(features, hidden, 1),
            nn.GELU(),
            nn.Conv2d(hidden, width, 1, bias=False),
        )

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, group**2 (bins + 3), H / S, W / S) fixed features."""
        side = self.total_stride
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % side or x.shape[3] % side:
            raise ValueError(
                f"HogStem needs (B, 3, H, W) with H and W divisible by {side}, got "
                f"{tuple(x.shape)}"
            )
        x = x.float()
        n, _, h, w = x.shape
        c, bins = self.cell, self.bins
        grey = x.mean(1, keepdim=True)
        # central differences, one-sided at the border (a [-1, 0, 1] filter on a
        # replicate-padded image), by slicing: a 1 x 3 convolution is far slower
        gx = torch.cat(
            [
                grey[..., :, 1:2] - grey[..., :, :1],
                grey[..., :, 2:] - grey[..., :, :-2],
                grey[..., :, -1:] - grey[..., :, -2:-1],
            ],
            -1,
        )
        gy = torch.cat(
            [
                grey[..., 1:2, :] - grey[..., :1, :],
                grey[..., 2:, :] - grey[..., :-2, :],
                grey[..., -1:, :] - grey[..., -2:-1, :],
            ],
            -2,
        )
        magnitude = torch.sqrt(gx**2 + gy**2 + 1e-6)
        angle = torch.atan2(gy, gx) % math.pi  # unsigned orientation in [0, pi)
        # bin centres at (k + 1/2) pi / bins: each pixel votes into its two nearest
        # bins, linearly by distance, wrapping around at pi
        pos = angle * (bins / math.pi) - 0.5
        low = torch.floor(pos)
        frac = pos - low
        low = low.long() % bins
        # one flat histogram slot per (image, cell, bin); each pixel adds its votes
        cells = (
            torch.arange(h, device=x.device)[:, None] // c * (w // c)
            + torch.arange(w, device=x.device)[None, :] // c
        )
        n_cells = (h // c) * (w // c)
        base = (
            torch.arange(n, device=x.device).view(n, 1, 1, 1) * n_cells + cells
        ) * bins
        flat = torch.zeros(n * n_cells * bins, device=x.device)
        flat.index_add_(0, (base + low).flatten(), (magnitude * (1 - frac)).flatten())
        flat.index_add_(
            0, (base + (low + 1) % bins).flatten(), (magnitude * frac).flatten()
        )
        hist = flat.view(n, h // c, w // c, bins).permute(0, 3, 1, 2) / (c * c)
        hist = hist.sqrt()
        energy = F.avg_pool2d(
            hist.pow(2).sum(1, keepdim=True), 3, 1, 1, count_include_pad=False
        )
        hist = hist / torch.sqrt(energy + 1e-3)
        colour = F.avg_pool2d(x, self.cell)
        return F.pixel_unshuffle(torch.cat([hist, colour], 1), self.group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W), or their fixed features computed beforehand by
        :meth:`features` (B, ``n_features``, H / S, W / S): they have no parameters,
        so pretraining computes them once per corpus image, with the same result to
        the bit."""
        if x.ndim != 4 or x.shape[1] != self.n_features:
            x = self.features(x)
        return self.proj(x.to(self.proj[0].weight.dtype))


#: Stem kinds of ``stems.json`` (an entry without ``kind`` is a ``conv`` stem).
STEM_KINDS = ("conv", "hog")


def _build_stem(spec: dict[str, Any], width: int) -> nn.Module:
    kind = spec.get("kind", "conv")
    if kind == "hog":
        return HogStem(
            width,
            bins=spec.get("bins", 9),
            cell=spec.get("cell", 8),
            hidden=spec.get("hidden", 128),
            group=spec.get("group", 2),
        )
    if kind != "conv":
        raise ValueError(f"unknown stem kind {kind!r}; valid: {', '.join(STEM_KINDS)}")
    return ConvStem(
        channels=spec["channels"],
        width=width,
        kernel_size=spec.get("kernel_size", 3),
        stride=spec.get("stride", 2),
        activation=spec.get("activation", "gelu"),
    )


def _apply_stem(model: nn.Module, spec: dict[str, Any]) -> None:
    visual = model.visual
    width = visual.conv1.out_channels
    stem = _build_stem(spec, width)
    if stem.total_stride != visual.patch_size[0]:
        raise ValueError(
            f"stem stride {stem.total_stride} differs from the config's patch size "
            f"{visual.patch_size[0]}; the token grid would not match the positional "
            "embedding"
        )
    ref = visual.conv1.weight
    visual.conv1 = stem.to(device=ref.device, dtype=ref.dtype)


# ---------------------------------------------------------------------------- bundle


@dataclass
class ClipBundle:
    """A CLIP model with everything needed to feed it (chapter 02).

    Attributes:
        model: the open_clip ``CLIP`` module.
        tokenizer: open_clip tokenizer; ``tokenizer(list_of_str)`` gives (B, L) ids.
        model_name: registered architecture name, e.g. ``"duet-tiny-conv-96"``.
        pretrained: where the weights came from: None, a tag or a file path.
        image_size: input side in pixels (square inputs).
        context_length: L, the text context length (tokenizer and model agree).
        embed_dim: E, the joint embedding width.
        token_dim: d, the width of the text token embeddings.
        image_mean: per-channel normalisation mean (RGB).
        image_std: per-channel normalisation standard deviation (RGB).
        meta: extra facts: ``stem`` (spec or None), ``source`` ("random", "tag",
            "file"), ``n_params``, ``quick_gelu``, ``extra`` (from a checkpoint).
    """

    model: nn.Module
    tokenizer: Any
    model_name: str
    pretrained: str | None
    image_size: int
    context_length: int
    embed_dim: int
    token_dim: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Device of the model parameters."""
        return next(self.model.parameters()).device

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Plain tokenisation: (B, context_length) int64 ids on the model's device."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts)).to(self.device)

    def preprocess(
        self, images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray]
    ) -> torch.Tensor:
        """Resize, convert and CLIP-normalise images into one batch.

        Each image is resized so that its shorter side is ``image_size`` (bicubic),
        centre-cropped to a square, scaled to [0, 1] and normalised with
        ``image_mean`` / ``image_std``.

        Args:
            images: one PIL image or (H, W, 3) uint8 array, or a sequence of them.

        Returns:
            float32 tensor (B, 3, image_size, image_size) on the model's device.
        """
        if isinstance(images, Image.Image | np.ndarray):
            images = [images]
        if len(images) == 0:
            raise ValueError("preprocess needs at least one image")
        size = self.image_size
        arrays = [_to_square_rgb(img, size, i) for i, img in enumerate(images)]
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)  # (B, S, S, 3)
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.image_mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=batch.device).view(1, 3, 1, 1)
        return batch.sub_(mean).div_(std).contiguous()


def _to_square_rgb(
    image: Image.Image | np.ndarray, size: int, index: int
) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"image {index}: arrays must be (H, W, 3) uint8, got "
                f"{image.shape} {image.dtype}"
            )
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise ValueError(
            f"image {index}: expected a PIL image or uint8 array, got "
            f"{type(image).__name__}"
        )
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        if (new_w, new_h) != (size, size):
            image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------- offline-safe weights


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache as the environment names it right now."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _host_reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Try a TCP connection to the URL's host, bounded in total by ``timeout``.

    The lookup and connection run in a daemon thread, so a name lookup that hangs
    cannot hold the caller longer than ``timeout`` seconds.
    """
    parts = urllib.parse.urlparse(url)
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (80 if parts.scheme == "http" else 443)
    result: list[bool] = []

    def _connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=_connect, name="duet-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Set Hugging Face Hub offline mode for one call, then restore it.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once at import, so the module
    constant is set as well as the environment variable.
    """
    import huggingface_hub.constants as hf_constants

    old_env = os.environ.get("HF_HUB_OFFLINE")
    old_const = hf_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1" if offline else "0"
    hf_constants.HF_HUB_OFFLINE = offline
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _unavailable(model_name: str, tag: str, where: str, reason: str) -> str:
    return (
        f"pretrained weights {tag!r} for {model_name} are not available: {reason}. "
        f"Either download the weights file ({where}) on a machine with internet and "
        f"pass its local path as pretrained=..., or copy a Hugging Face cache that "
        f"already holds it and point HF_HOME at the copy (looked in "
        f"{_hf_cache_dir()}). On a machine with internet, "
        f"load_clip({model_name!r}, {tag!r}) downloads it into that cache."
    )


def _resolve_tag(model_name: str, tag: str) -> tuple[dict[str, Any], str | None]:
    """Return open_clip's tag config and the cache folder to pass to create_model.

    Raises WeightsUnavailableError quickly when the file is neither cached nor
    reachable.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        listed = ", ".join(tags) if tags else "none (pass None or a checkpoint path)"
        raise ValueError(
            f"pretrained={tag!r} is neither an existing file nor a known tag for "
            f"{model_name}; known tags: {listed}"
        )
    if cfg.get("file"):
        return cfg, None
    offline_env = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    if cfg.get("hf_hub"):
        cache_dir = _hf_cache_dir()
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or oc_constants.HF_WEIGHTS_NAME
        candidates = [filename]
        if filename == oc_constants.HF_WEIGHTS_NAME:
            candidates.insert(0, oc_constants.HF_SAFE_WEIGHTS_NAME)
        from huggingface_hub import try_to_load_from_cache

        cached = any(
            isinstance(
                try_to_load_from_cache(repo_id, name, cache_dir=str(cache_dir)), str
            )
            for name in candidates
        )
        where = f"https://huggingface.co/{repo_id}/resolve/main/{filename}"
        # A cached file loads without the network; otherwise ask the Hub only if
        # offline mode is off and a bounded probe reaches it.
        offline = cached or offline_env
        if not offline:
            endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
            offline = not _host_reachable(endpoint)
        return dict(cfg, _offline=offline, _cached=cached, _where=where), str(cache_dir)
    url = cfg.get("url", "")
    target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    if target.is_file():
        return cfg, None
    if offline_env:
        reason = "HF_HUB_OFFLINE is set and the file is not cached"
        raise WeightsUnavailableError(_unavailable(model_name, tag, url, reason))
    if not _host_reachable(url):
        reason = f"{urllib.parse.urlparse(url).hostname} cannot be reached"
        raise WeightsUnavailableError(_unavailable(model_name, tag, url, reason))
    return cfg, None


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _quiet_open_clip(level: int = logging.WARNING) -> Iterator[None]:
    """Silence open_clip's root-logger messages up to ``level`` for one call.

    Used for the expected "initialised randomly" warning and for the download
    error that :class:`WeightsUnavailableError` replaces with its own message.
    """
    previous = logging.root.manager.disable
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(previous)


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith((".", "~"))
        or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def _peek(path: Path) -> Any:
    """Cheap look at a torch file (memory-mapped, weights only); None if unreadable."""
    if path.suffix == ".safetensors":
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any failure means "not ours"; open_clip decides
        return None


def _is_duet_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _is_raw_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _build(
    model_name: str,
    image_size: int | None,
    quick_gelu: bool,
    pretrained: str | None = None,
    cache_dir: str | None = None,
) -> nn.Module:
    kwargs: dict[str, Any] = {
        "precision": "fp32",
        "device": "cpu",
        "force_quick_gelu": quick_gelu,
        "force_image_size": image_size,
    }
    if pretrained is None:
        with _quiet_open_clip():
            return open_clip.create_model(model_name, pretrained=None, **kwargs)
    return open_clip.create_model(
        model_name, pretrained=pretrained, cache_dir=cache_dir, **kwargs
    )


def _check_image_size(model_name: str, image_size: int | None) -> None:
    if image_size is None:
        return
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    cfg = open_clip.get_model_config(model_name) or {}
    patch = cfg.get("vision_cfg", {}).get("patch_size")
    if isinstance(patch, int) and image_size % patch:
        raise ValueError(
            f"image_size {image_size} is not divisible by the patch size (or stem "
            f"stride) {patch} of {model_name}"
        )


def _load_duet_checkpoint(
    model_name: str, path: Path, image_size: int | None, quick_gelu: bool
) -> tuple[nn.Module, dict[str, Any]]:
    ckpt = load_checkpoint(path)
    stored_name = ckpt.get("model_name")
    if stored_name != model_name:
        raise ValueError(
            f"{path} holds a {stored_name!r} model, not {model_name!r}; "
            f"call load_clip({stored_name!r}, ...) to load it"
        )
    stored_size = int(ckpt["image_size"])
    if image_size is not None and image_size != stored_size:
        raise ValueError(
            f"{path} was saved at image_size={stored_size}; pass image_size=None or "
            f"{stored_size} (the positional embedding fixes the token grid)"
        )
    stored_gelu = bool(ckpt.get("quick_gelu", False))
    model = _build(model_name, stored_size, quick_gelu or stored_gelu)
    stem = ckpt.get("stem")
    if stem is not None:
        _apply_stem(model, stem)
    blocks = ckpt.get("embedding_blocks")
    if blocks is not None:
        set_embedding_blocks(model, int(blocks["dims"]), float(blocks["share"]))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit {model_name}: {str(err).splitlines()[0]}"
        ) from err
    extra = ckpt.get("extra") or {}
    return model, {
        "stem": stem,
        "extra": extra,
        "quick_gelu": quick_gelu or stored_gelu,
    }


def load_clip(
    model_name: str,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
    quick_gelu: bool | None = None,
    seed: int | None = None,
) -> ClipBundle:
    """Build a CLIP model, its tokenizer and its preprocessing (chapter 02).

    Args:
        model_name: registered architecture, e.g. ``"duet-tiny-conv-96"`` or
            ``"ViT-B-32"`` (see :func:`available_models`).
        pretrained: None for random initialisation; a local file (a
            :func:`save_clip` checkpoint or an open_clip weights file); or an
            open_clip tag such as ``"openai"``, which needs the Hugging Face Hub or
            a cache that already holds the file.
        device: where the model is moved.
        image_size: input side in pixels; None keeps the config's (or the
            checkpoint's) size. Must be divisible by the patch size / stem stride.
        quick_gelu: use QuickGELU activations (OpenAI weights need them); None
            takes the tag's setting, or the checkpoint's, else False. Pass True
            when ``pretrained`` is a downloaded file of OpenAI weights.
        seed: seed for the random initialisation (None uses torch's global RNG).

    Returns:
        A :class:`ClipBundle`.

    Raises:
        ValueError: unknown model name, unknown tag, bad image size, or a
            checkpoint saved for another model name or image size.
        FileNotFoundError: a path-like ``pretrained`` that does not exist.
        WeightsUnavailableError: a tag whose file is not cached and cannot be
            downloaded (offline); fails within about a second.
        duet_lib.checkpoint.CheckpointError: a corrupt or mismatching checkpoint.
    """
    _check_model_name(model_name)
    _check_image_size(model_name, image_size)
    stems = _stem_specs()
    stem_spec = stems.get(model_name)
    meta: dict[str, Any] = {"stem": stem_spec, "extra": {}}
    gelu = bool(quick_gelu)
    fork = torch.random.fork_rng(devices=[]) if seed is not None else None
    with fork or contextlib.nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        if pretrained is None:
            model = _build(model_name, image_size, gelu)
            if stem_spec is not None:
                _apply_stem(model, stem_spec)
            meta["source"] = "random"
            source_label = None
        else:
            model, source_label = _load_pretrained(
                model_name, pretrained, image_size, quick_gelu, stem_spec, meta
            )
    model = model.to(device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    context_length = int(model.context_length)
    if getattr(tokenizer, "context_length", context_length) != context_length:
        tokenizer.context_length = context_length
    visual = model.visual
    pp_cfg = getattr(visual, "preprocess_cfg", {}) or {}
    mean = tuple(float(v) for v in pp_cfg.get("mean", oc_constants.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in pp_cfg.get("std", oc_constants.OPENAI_DATASET_STD))
    meta["n_params"] = count_parameters(model)
    meta.setdefault("quick_gelu", gelu)
    return ClipBundle(
        model=model,
        tokenizer=tokenizer,
        model_name=model_name,
        pretrained=source_label,
        image_size=int(visual.image_size[0]),
        context_length=context_length,
        embed_dim=int(visual.output_dim),
        token_dim=int(model.token_embedding.weight.shape[1]),
        image_mean=mean,  # type: ignore[arg-type]
        image_std=std,  # type: ignore[arg-type]
        meta=meta,
    )


def _load_pretrained(
    model_name: str,
    pretrained: str | os.PathLike,
    image_size: int | None,
    quick_gelu: bool | None,
    stem_spec: dict[str, Any] | None,
    meta: dict[str, Any],
) -> tuple[nn.Module, str]:
    text = os.fspath(pretrained)
    if not text.strip():
        raise ValueError("pretrained must be None, a file path or a tag, got ''")
    path = Path(text).expanduser()
    if isinstance(pretrained, os.PathLike) or path.exists() or _looks_like_path(text):
        if not path.exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if path.is_dir():
            raise ValueError(f"pretrained={path} is a folder; pass the weights file")
        meta["source"] = "file"
        peek = _peek(path)
        if _is_duet_checkpoint(peek):
            model, info = _load_duet_checkpoint(
                model_name, path, image_size, bool(quick_gelu)
            )
            meta.update(info)
            return model, str(path)
        if stem_spec is not None:
            if peek is None:
                # Let the shared loader produce its precise error message.
                load_checkpoint(path)
            if not _is_raw_state_dict(peek):
                raise CheckpointError(
                    f"{path}: not a state dict or a save_clip checkpoint of {model_name}"
                )
            model = _build(model_name, image_size, bool(quick_gelu))
            _apply_stem(model, stem_spec)
            try:
                model.load_state_dict(peek, strict=True)
            except RuntimeError as err:
                raise CheckpointError(
                    f"{path}: weights do not fit {model_name}: "
                    f"{str(err).splitlines()[0]}"
                ) from err
            meta["quick_gelu"] = bool(quick_gelu)
            return model, str(path)
        del peek
        try:
            model = _build(model_name, image_size, bool(quick_gelu), str(path))
        except Exception as err:
            raise CheckpointError(
                f"{path}: open_clip could not load it into {model_name} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})."
                " OpenAI's TorchScript archives are not accepted; use the open_clip "
                "weights file of the same model (open_clip_pytorch_model.bin or "
                "open_clip_model.safetensors from its Hugging Face repository)"
            ) from err
        meta["quick_gelu"] = bool(quick_gelu)
        return model, str(path)
    # A tag such as "openai".
    if stem_spec is not None:
        raise ValueError(
            f"{model_name} has no published weights; pass pretrained=None or the "
            "path of a checkpoint written by save_clip"
        )
    cfg, cache_dir = _resolve_tag(model_name, text)
    gelu = bool(cfg.get("quick_gelu", False)) if quick_gelu is None else quick_gelu
    offline = bool(cfg.get("_offline", False))
    where = cfg.get("_where", "")
    try:
        if cache_dir is not None:
            quiet = (
                _quiet_open_clip(logging.ERROR) if offline else contextlib.nullcontext()
            )
            with _hub_offline(offline), quiet:
                model = _build(model_name, image_size, gelu, text, cache_dir)
        else:
            model = _build(model_name, image_size, gelu, text)
    except Exception as err:  # noqa: BLE001 - open_clip raises many kinds here
        if cfg.get("_cached"):
            raise CheckpointError(
                f"the cached weights of {model_name} / {text} could not be loaded "
                f"({type(err).__name__}); delete them from {cache_dir} and download "
                "again, or pass the path of a good copy"
            ) from err
        reason = (
            "offline (HF_HUB_OFFLINE is set or the Hub cannot be reached) and the "
            "file is not in the local cache"
            if offline
            else f"download failed ({type(err).__name__})"
        )
        raise WeightsUnavailableError(
            _unavailable(model_name, text, where, reason)
        ) from err
    meta["source"] = "tag"
    meta["quick_gelu"] = gelu
    return model, text


def save_clip(
    bundle: ClipBundle, path: str | os.PathLike, extra: dict | None = None
) -> Path:
    """Write the bundle's weights and identity to one weights-only checkpoint.

    The file records ``model_name``, ``image_size``, ``context_length``, the stem
    specification and the state dict; :func:`load_clip` with the same
    ``model_name`` and ``pretrained=path`` restores it exactly. The write is atomic.

    Args:
        bundle: the model to save.
        path: destination file (parent folders are created).
        extra: optional plain metadata (numbers, strings, lists, dicts, tensors),
            returned later as ``bundle.meta["extra"]``.

    Returns:
        The destination path.
    """
    if extra is not None and not isinstance(extra, dict):
        raise ValueError(f"extra must be a dict or None, got {type(extra).__name__}")
    state = {k: v.detach().cpu() for k, v in bundle.model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": bundle.model_name,
        "image_size": int(bundle.image_size),
        "context_length": int(bundle.context_length),
        "quick_gelu": bool(bundle.meta.get("quick_gelu", False)),
        "stem": bundle.meta.get("stem"),
        "embedding_blocks": embedding_blocks(bundle.model),
        "pretrained": None if bundle.pretrained is None else str(bundle.pretrained),
        "open_clip_version": open_clip.__version__,
        "state_dict": state,
        "extra": dict(extra or {}),
    }
    return save_checkpoint(payload, path)


# ----------------------------------------------------------------- embedding blocks


def block_normalize(x: torch.Tensor, dims: int, share: float) -> torch.Tensor:
    """Give the first ``dims`` dimensions a fixed share of a unit vector (chapter 02).

    Each block of the last axis, ``x[..., :dims]`` (the shape block) and
    ``x[..., dims:]`` (the rest), is L2-normalised on its own; the first is scaled
    by sqrt(share), the second by sqrt(1 - share). The result has unit norm and
    the shape block holds exactly ``share`` of its squared norm, so the cosine of
    two such vectors is ``share`` x (shape-block cosine) + (1 - share) x (rest
    cosine).

    Shapes: (..., E) -> (..., E).
    """
    _check_blocks(x.shape[-1], dims, share)
    head = torch.nn.functional.normalize(x[..., :dims], dim=-1) * math.sqrt(share)
    tail = torch.nn.functional.normalize(x[..., dims:], dim=-1) * math.sqrt(1 - share)
    return torch.cat([head, tail], dim=-1)


def _check_blocks(width: int, dims: Any, share: Any) -> None:
    if isinstance(dims, bool) or not isinstance(dims, int) or not 0 < dims < width:
        raise ValueError(f"block dims must be an int in [1, {width - 1}], got {dims!r}")
    if isinstance(share, bool) or not isinstance(share, int | float):
        raise ValueError(f"block share must be a number in (0, 1), got {share!r}")
    if not 0.0 < float(share) < 1.0:
        raise ValueError(f"block share must lie in (0, 1), got {share!r}")


def embedding_blocks(model: nn.Module) -> dict[str, Any] | None:
    """The image embedding's block layout set by :func:`set_embedding_blocks`,
    as ``{"dims": int, "share": float}``, or None (a plain embedding)."""
    spec = getattr(model.visual, "duet_blocks", None)
    return None if spec is None else dict(spec)


def set_embedding_blocks(model: nn.Module, dims: int, share: float) -> None:
    """Make the image tower's output block-normalised (:func:`block_normalize`).

    The layout is a fixed part of the architecture, not a parameter: it is
    applied by a forward hook on ``model.visual`` (so ``encode_image`` and
    :func:`encode_image_with_tokens` agree), saved by :func:`save_clip` and
    restored by :func:`load_clip`. Calling it again replaces the layout.

    Args:
        model: an open_clip CLIP.
        dims: size of the first block, 0 < dims < E.
        share: the first block's share of the squared norm, 0 < share < 1.
    """
    visual = model.visual
    _check_blocks(int(visual.output_dim), dims, share)
    old = getattr(visual, "_duet_blocks_hook", None)
    if old is not None:
        old.remove()
    visual.duet_blocks = {"dims": int(dims), "share": float(share)}

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        spec = visual.duet_blocks
        return block_normalize(output, spec["dims"], spec["share"])

    visual._duet_blocks_hook = visual.register_forward_hook(hook)


# --------------------------------------------------------------------- vision tokens


@contextlib.contextmanager
def fast_attention(device: str | torch.device) -> Iterator[None]:
    """Pick the quickest scaled-dot-product attention kernel for the device.

    On CPU, at the book's short sequences (10 image tokens, up to 32 text tokens),
    PyTorch's plain "math" kernel beats its flash kernel (measured in
    ``benchmarks/bench_pretrain.py``); on other devices PyTorch keeps its own
    choice. The kernels compute the same attention up to float rounding.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


def encode_image_with_tokens(
    model: nn.Module, images: torch.Tensor, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global image embedding and patch tokens, both in the joint space (chapter 07).

    Runs the vision transformer step by step (stem or patch embedding, class
    token, positional embedding, ``ln_pre``, blocks, ``ln_post``) and multiplies
    both the class token and the patch tokens by ``visual.proj``. The pooled
    output equals ``model.encode_image(images)``.

    Args:
        model: an open_clip CLIP with a ``VisionTransformer`` tower.
        images: (B, 3, H, W) preprocessed images.
        normalize: L2-normalise both outputs along the last axis.

    Returns:
        pooled (B, E) and patches (B, N, E), N = (H / P) * (W / P) grid tokens in
        row-major order.
    """
    visual = model.visual
    if not isinstance(visual, open_clip.transformer.VisionTransformer):
        raise TypeError(
            f"encode_image_with_tokens needs a VisionTransformer tower, got "
            f"{type(visual).__name__}"
        )
    if visual.attn_pool is not None or visual.pool_type != "tok":
        raise NotImplementedError("only class-token pooling without attention pooling")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    x = visual.conv1(images)  # (B, width, g, g)
    batch, width = x.shape[:2]
    x = x.reshape(batch, width, -1).permute(0, 2, 1)  # (B, N, width)
    n_pos = visual.positional_embedding.shape[0]
    if x.shape[1] + 1 != n_pos:
        raise ValueError(
            f"images of {tuple(images.shape[2:])} px give {x.shape[1]} tokens, but the "
            f"model expects {n_pos - 1}; resize to {visual.image_size}"
        )
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(batch, -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    x = visual.ln_pre(x)
    x = visual.transformer(x)  # (B, 1 + N, width), batch-first in open_clip 3.x
    if visual.final_ln_after_pool:
        pooled, tokens = visual.ln_post(x[:, 0]), x[:, 1:]
    else:
        x = visual.ln_post(x)
        pooled, tokens = x[:, 0], x[:, 1:]
    if visual.proj is not None:
        pooled = pooled @ visual.proj
        tokens = tokens @ visual.proj
    blocks = embedding_blocks(model)
    if blocks is not None:
        pooled = block_normalize(pooled, blocks["dims"], blocks["share"])
        tokens = block_normalize(tokens, blocks["dims"], blocks["share"])
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        tokens = torch.nn.functional.normalize(tokens, dim=-1)
    return pooled, tokens


# ------------------------------------------------------------------------- freezing


def freeze_for_duet(
    model: nn.Module, unfreeze_last_visual_blocks: int = 0
) -> list[str]:
    """Freeze everything except the LayerNorms of the image encoder (chapter 03).

    The paper trains only the LayerNorm parameters of the CLIP image encoder. With
    ``unfreeze_last_visual_blocks = k > 0`` every parameter of the last k visual
    transformer blocks is trained too, a labelled deviation for the tiny backbone.

    Args:
        model: an open_clip CLIP.
        unfreeze_last_visual_blocks: k, between 0 and the number of visual blocks.

    Returns:
        Sorted names (as in ``model.named_parameters()``) of the trainable parameters.
    """
    blocks = model.visual.transformer.resblocks
    k = unfreeze_last_visual_blocks
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(blocks):
        raise ValueError(
            f"unfreeze_last_visual_blocks must be an int in [0, {len(blocks)}], got {k!r}"
        )
    model.requires_grad_(False)
    for module in model.visual.modules():
        if isinstance(module, nn.LayerNorm):
            module.requires_grad_(True)
    if k:
        for block in blocks[len(blocks) - k :]:
            block.requires_grad_(True)
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (all, or only those with ``requires_grad``)."""
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )
