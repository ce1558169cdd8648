"""The visual-to-word converter C_v2w and the learnable prompt P^L (chapter 03).

C_v2w turns a visual embedding from CLIP's joint space into one pseudo-word token
in the text encoder's word-embedding space. It is applied to the sketch embedding
s (giving the sketch word s^w) and to the difference Delta = p+ - s (giving the
stand-in text word Delta^w). P^L is a short sequence of free token vectors that
precedes the sketch word. Both are trained; the CLIP text encoder that reads them
stays frozen.

The paper leaves C_v2w's architecture open. Our default follows the phi network
of SEARLE (Baldrati et al., ICCV 2023): three linear layers, GELU and dropout,
hidden width four times the input (512 -> 2048 -> 2048 -> 512 for ViT-B/32).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LearnablePrompt", "VisualToWord"]


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


class VisualToWord(nn.Module):
    """C_v2w: a joint-space embedding (B, E) -> one pseudo-word token (B, d).

    Architecture (default, after SEARLE's phi)::

        Linear(E, H) - GELU - Dropout - Linear(H, H) - GELU - Dropout - Linear(H, d)

    with H = ``hidden`` (default 4 E: 2048 for ViT-B/32, 512 for the book's tiny
    CLIP with E = 128, about 0.4 M parameters).

    Output scale. The rows of a CLIP token table have a typical norm, and the
    frozen text transformer has only ever seen vectors of about that size. When
    ``token_norm`` is given, the MLP output is L2-normalised and multiplied by
    ``token_norm``, so every pseudo-word has the norm of a typical real word and
    only its direction is learned. We chose a fixed scale (the wrapper measures
    it as the mean norm of the token table) because a learnable one can drift
    away from the range the text encoder was trained on; ``learnable_scale=True``
    makes it a parameter initialised at ``token_norm`` for comparison. With
    ``token_norm=None`` the raw MLP output is returned, as in SEARLE.

    Args:
        embed_dim: E, width of the joint embedding space (the input).
        token_dim: d, width of the text encoder's token embeddings (the output).
        hidden: H, hidden width; None means 4 * embed_dim.
        dropout: dropout probability after each hidden layer.
        token_norm: target norm of the output tokens, or None for no rescaling.
        learnable_scale: learn the output norm (needs ``token_norm``).
        n_tokens: K, number of tokens per input. The paper maps a sketch to one
            word (K = 1, the default); K > 1 turns it into a short phrase of
            pseudo-words, our option for the tiny text encoder (chapter 09).
        seed: initialise the weights from this seed without touching the global
            random state; None uses PyTorch's default initialisation from the
            global generator (seed it with ``seed_everything``).

    Shapes:
        forward: (B, E) -> (B, d), or (E,) -> (d,); with K > 1 tokens
        (B, E) -> (B, K, d), or (E,) -> (K, d).
    """

    def __init__(
        self,
        embed_dim: int,
        token_dim: int,
        hidden: int | None = None,
        dropout: float = 0.1,
        *,
        token_norm: float | None = None,
        learnable_scale: bool = False,
        n_tokens: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_int("embed_dim", embed_dim)
        _check_int("token_dim", token_dim)
        _check_int("n_tokens", n_tokens)
        hidden = 4 * embed_dim if hidden is None else _check_int("hidden", hidden)
        if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if token_norm is not None:
            ok = isinstance(token_norm, int | float) and not isinstance(
                token_norm, bool
            )
            if not ok or not math.isfinite(token_norm) or token_norm <= 0:
                raise ValueError(
                    f"token_norm must be a positive finite number, got {token_norm!r}"
                )
        elif learnable_scale:
            raise ValueError("learnable_scale=True needs a token_norm to start from")
        self.embed_dim = embed_dim
        self.token_dim = token_dim
        self.n_tokens = n_tokens
        self.hidden = hidden
        self.token_norm = None if token_norm is None else float(token_norm)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_tokens * token_dim),
        )
        if learnable_scale:
            # log-parameterised so the norm stays positive
            self.log_scale: nn.Parameter | None = nn.Parameter(
                torch.tensor(math.log(self.token_norm))
            )
        else:
            self.log_scale = None
        generator = _generator(seed)
        if generator is not None:
            self._init_from(generator)

    def _init_from(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear initialisation, drawn from ``generator``."""
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                with torch.no_grad():
                    nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    @property
    def scale(self) -> float | None:
        """The current output norm, or None when outputs are not rescaled."""
        if self.log_scale is not None:
            return float(self.log_scale.detach().exp())
        return self.token_norm

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Map joint-space embeddings to pseudo-word tokens.

        Args:
            embedding: (B, E) or (E,) visual embeddings (s, or Delta = p+ - s).

        Returns:
            (B, d) or (d,) token vectors for the text encoder; with ``n_tokens``
            K > 1, (B, K, d) or (K, d) (each token rescaled on its own).
        """
        if not isinstance(embedding, torch.Tensor) or embedding.ndim not in (1, 2):
            shape = (
                tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else None
            )
            raise ValueError(f"embedding must be (B, E) or (E,), got {shape}")
        if embedding.shape[-1] != self.embed_dim:
            raise ValueError(
                f"embedding width {embedding.shape[-1]} does not match embed_dim "
                f"{self.embed_dim}"
            )
        out = self.mlp(embedding)
        if self.n_tokens > 1:
            out = out.unflatten(-1, (self.n_tokens, self.token_dim))
        if self.log_scale is not None:
            out = nn.functional.normalize(out, dim=-1) * self.log_scale.exp()
        elif self.token_norm is not None:
            out = nn.functional.normalize(out, dim=-1) * self.token_norm
        return out

    def extra_repr(self) -> str:
        learn = ", learnable" if self.log_scale is not None else ""
        return (
            f"embed_dim={self.embed_dim}, token_dim={self.token_dim}, "
            f"n_tokens={self.n_tokens}, "
            f"hidden={self.hidden}, token_norm={self.token_norm}{learn}"
        )


class LearnablePrompt(nn.Module):
    """P^L: ``n_tokens`` free token vectors placed before the sketch word (chapter 03).

    The paper fixes the length at three tokens. We initialise them either from
    the token embeddings of a real prompt (``init``, for example the three rows
    of "a photo of" from the frozen token table, which the wrapper looks up) or,
    without ``init``, from N(0, 0.02^2) like CLIP's own token table.

    Args:
        n_tokens: K, number of prompt tokens.
        token_dim: d, width of the token embeddings.
        init: (K, d) starting vectors, copied (not shared), or None.
        seed: seed of the random initialisation (ignored with ``init``); None
            draws from the global generator.

    Shapes:
        forward(): (K, d); forward(batch_size=B): (B, K, d), the same vectors
        for every row (an expanded view).
    """

    def __init__(
        self,
        n_tokens: int = 3,
        token_dim: int = 512,
        init: torch.Tensor | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_int("n_tokens", n_tokens)
        _check_int("token_dim", token_dim)
        if init is not None:
            if not isinstance(init, torch.Tensor) or tuple(init.shape) != (
                n_tokens,
                token_dim,
            ):
                shape = tuple(init.shape) if isinstance(init, torch.Tensor) else None
                raise ValueError(
                    f"init must be a ({n_tokens}, {token_dim}) tensor, got {shape}"
                )
            if not init.is_floating_point() or not bool(torch.isfinite(init).all()):
                raise ValueError("init must hold finite floating-point values")
            start = init.detach().clone().float()
        else:
            start = torch.empty(n_tokens, token_dim)
            nn.init.normal_(start, 0.0, 0.02, generator=_generator(seed))
        self.n_tokens = n_tokens
        self.token_dim = token_dim
        self.tokens = nn.Parameter(start)

    def forward(self, batch_size: int | None = None) -> torch.Tensor:
        """The prompt vectors, (K, d), or expanded to (B, K, d)."""
        if batch_size is None:
            return self.tokens
        _check_int("batch_size", batch_size)
        return self.tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def extra_repr(self) -> str:
        return f"n_tokens={self.n_tokens}, token_dim={self.token_dim}"
