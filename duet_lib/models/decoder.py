"""The reconstruction decoder G (chapter 08).

G is used only in training: it turns a text-side query embedding (s_L^T or
s_L^{T,Delta}) back into an image of the paired photo, which the reconstruction
loss L_rec compares with the photo. The paper calls G a UNet-style decoder and
leaves its architecture open; this module is our choice.

Architecture (ours)::

    z (B, E) -> unit vector * sqrt(E) -> Linear(E, hidden) -> GELU -> h
    h -> Linear -> (B, C0, 4, 4) -> GroupNorm -> GELU                 base map
    repeat log2(out_size / 4) times, resolution r -> 2r:
        nearest upsample x2
        concat [features, skip_k(h)]                                  "U" skip
        conv3x3 -> GroupNorm -> GELU -> conv3x3 -> AdaGN(h) -> GELU (+ residual)
    conv3x3 -> sigmoid -> (B, 3, out_size, out_size) in [0, 1]

A UNet's skip connections normally carry feature maps from an encoder path to
the decoder level of the same resolution. Here the input is a single vector and
there is no encoder, so each level's skip comes from the embedding instead:
``skip_k`` is a linear projection of h to a small 4x4 map with a few channels,
bilinearly upsampled to the level's resolution and concatenated with its
features. Every scale thus sees the query directly rather than only through the
bottleneck of the base map. In addition, the second normalisation of each block
takes its scale and shift from h (adaptive GroupNorm), so that per-image global
properties such as a flat colour survive the normalisation.

Size and speed. The widths shrink as the resolution grows (64 channels at 4x4
down to 8 at 64x64), because the convolutions at the largest maps dominate the
cost. With the defaults G has about 0.50 M parameters for E = 128 and 0.60 M for
E = 512 at 64 px; forward plus backward for a batch of 32 at 64 px took about
0.12-0.16 s on one CPU thread in our measurements (about 0.5-0.6 s at 128 px).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_WIDTHS", "ImageDecoder"]

#: Channel widths: the 4x4 base map, then the output of each upsampling block.
DEFAULT_WIDTHS: tuple[int, ...] = (64, 32, 16, 8, 8, 8)
_OUT_SIZES = (32, 64, 128)
_BASE = 4


class _UpBlock(nn.Module):
    """x2 upsampling, concatenation with a skip map, two conv-GroupNorm-GELU.

    The second GroupNorm is adaptive: its scale and shift come from the shared
    embedding feature h (as in the "AdaGN" of diffusion UNets), because a plain
    GroupNorm removes per-image means, and with them global information such
    as the colour of a flat region.
    """

    def __init__(
        self, in_ch: int, skip_ch: int, out_ch: int, groups: int, cond_dim: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch + skip_ch, out_ch, 3, padding=1)
        self.norm1 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_ch, affine=False)
        self.film = nn.Linear(cond_dim, 2 * out_ch)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor, cond: torch.Tensor
    ) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # (B, C_in, 2r, 2r)
        x = torch.cat([x, skip], dim=1)
        x = F.gelu(self.norm1(self.conv1(x)))  # (B, C_out, 2r, 2r)
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        y = self.norm2(self.conv2(x)) * (1.0 + scale) + shift
        return x + F.gelu(y)


class ImageDecoder(nn.Module):
    """G: a joint-space embedding (B, E) -> an RGB image (B, 3, S, S) in [0, 1].

    Args:
        embed_dim: E, width of the joint embedding space.
        out_size: S, output side in pixels: 32, 64 or 128.
        hidden: width of the shared first layer h.
        widths: channels of the 4x4 base map followed by those of each
            upsampling block; needs at least log2(S / 4) + 1 entries (extra ones
            are ignored), each divisible by ``groups``. None uses
            :data:`DEFAULT_WIDTHS`.
        skip_channels: channels of each embedding skip map (0 disables the skips).
        groups: GroupNorm groups.
        normalize_input: L2-normalise the input and scale it by sqrt(E), so only
            its direction matters (the text encoder's output norm carries no
            meaning for retrieval) and the first layer sees unit-variance inputs.
        seed: initialise weights from this seed without touching the global
            random state (same scheme as PyTorch's defaults); None uses the
            global generator.

    Shapes:
        forward: (B, E) -> (B, 3, S, S).
    """

    def __init__(
        self,
        embed_dim: int,
        out_size: int = 64,
        *,
        hidden: int = 256,
        widths: tuple[int, ...] | None = None,
        skip_channels: int = 8,
        groups: int = 8,
        normalize_input: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("embed_dim", embed_dim, 1),
            ("hidden", hidden, 1),
            ("skip_channels", skip_channels, 0),
            ("groups", groups, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"{name} must be an integer >= {minimum}, got {value!r}"
                )
        if out_size not in _OUT_SIZES:
            raise ValueError(
                f"out_size must be one of {list(_OUT_SIZES)}, got {out_size!r}"
            )
        n_blocks = int(math.log2(out_size // _BASE))
        widths = tuple(DEFAULT_WIDTHS if widths is None else widths)
        if len(widths) < n_blocks + 1:
            raise ValueError(
                f"out_size {out_size} needs {n_blocks + 1} widths (base + {n_blocks} "
                f"blocks), got {len(widths)}"
            )
        widths = widths[: n_blocks + 1]
        for w in widths:
            if isinstance(w, bool) or not isinstance(w, int) or w < 1 or w % groups:
                raise ValueError(
                    f"every width must be a positive integer divisible by groups="
                    f"{groups}, got {list(widths)}"
                )
        self.embed_dim = embed_dim
        self.out_size = out_size
        self.widths = widths
        self.skip_channels = skip_channels
        self.normalize_input = normalize_input

        self.inp = nn.Linear(embed_dim, hidden)
        self.base = nn.Linear(hidden, widths[0] * _BASE * _BASE)
        self.base_norm = nn.GroupNorm(groups, widths[0])
        self.skips = nn.ModuleList(
            nn.Linear(hidden, skip_channels * _BASE * _BASE)
            for _ in range(n_blocks if skip_channels else 0)
        )
        self.blocks = nn.ModuleList(
            _UpBlock(widths[k], skip_channels, widths[k + 1], groups, hidden)
            for k in range(n_blocks)
        )
        self.head = nn.Conv2d(widths[-1], 3, 3, padding=1)
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"seed must be an integer or None, got {seed!r}")
            self._init_from(torch.Generator().manual_seed(seed))

    def _init_from(self, generator: torch.Generator) -> None:
        """PyTorch's default init (uniform +-1/sqrt(fan_in)) drawn from ``generator``."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                with torch.no_grad():
                    nn.init.uniform_(module.weight, -bound, bound, generator=generator)
                    nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Decode embeddings (B, E) into images (B, 3, S, S) with values in [0, 1]."""
        if not isinstance(embedding, torch.Tensor) or embedding.ndim != 2:
            shape = (
                tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else None
            )
            raise ValueError(f"embedding must be (B, E), got {shape}")
        if embedding.shape[1] != self.embed_dim:
            raise ValueError(
                f"embedding width {embedding.shape[1]} does not match embed_dim "
                f"{self.embed_dim}"
            )
        z = embedding
        if self.normalize_input:
            z = F.normalize(z, dim=-1) * math.sqrt(self.embed_dim)
        h = F.gelu(self.inp(z))  # (B, hidden)
        batch = h.shape[0]
        x = self.base(h).view(batch, self.widths[0], _BASE, _BASE)
        x = F.gelu(self.base_norm(x))  # (B, C0, 4, 4)
        for k, block in enumerate(self.blocks):
            side = x.shape[-1] * 2
            if self.skip_channels:
                skip = self.skips[k](h).view(batch, self.skip_channels, _BASE, _BASE)
                skip = F.interpolate(
                    skip, size=(side, side), mode="bilinear", align_corners=False
                )
            else:
                skip = x.new_zeros(batch, 0, side, side)
            x = block(x, skip, h)  # (B, C_k+1, side, side)
        return torch.sigmoid(self.head(x))

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, out_size={self.out_size}, "
            f"widths={list(self.widths)}, skip_channels={self.skip_channels}"
        )
