"""Pseudo-word tokens through the frozen CLIP text encoder (chapter 03).

The duet feeds the text transformer token sequences in which some positions hold
learned vectors instead of word embeddings: the continuous prompt P^L, the sketch
word s^w, the difference word Delta^w. We write a template with a placeholder
symbol at each such position, tokenise it, embed the ids with the frozen token
table, overwrite the placeholder rows (out of place, left to right) with the
learned vectors, and run the rest of the text tower ourselves: positional
embedding, transformer, final LayerNorm, the row at the end-of-text token, text
projection. Parameters of the tower stay frozen, but nothing runs under
``no_grad``, so gradients reach the inserted vectors and whatever produced them.

When an inserted vector equals the token embedding of a real word, the result
equals ``model.encode_text`` on the sentence that contains that word.

Because the text tower is causal, positions after the end-of-text token never
influence it; :func:`encode_token_embeddings` therefore trims the batch to its
longest sequence (``trim=True``), which is exact and much cheaper for short
captions in a long context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PLACEHOLDER",
    "encode_text",
    "encode_text_with_pseudo_tokens",
    "encode_token_embeddings",
    "encode_token_ids",
    "insert_pseudo_tokens",
    "placeholder_id",
    "placeholders",
    "pseudo_rows",
    "tokenize_templates",
]

PLACEHOLDER = "$"


def _text_tower(model: nn.Module) -> nn.Module:
    """The module that owns token_embedding ... text_projection (CLIP or its .text)."""
    if hasattr(model, "token_embedding") and hasattr(model, "ln_final"):
        tower = model
    elif hasattr(model, "text") and hasattr(model.text, "token_embedding"):
        tower = model.text
    else:
        raise TypeError(
            f"{type(model).__name__} has no open_clip text transformer "
            "(token_embedding, positional_embedding, transformer, ln_final)"
        )
    if getattr(tower, "cls_emb", None) is not None:
        raise NotImplementedError("text towers with a class token are not supported")
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
    if pool != "argmax":
        raise NotImplementedError(
            f"text pooling {pool!r} is not supported; only end-of-text ('argmax')"
        )
    return tower


def placeholders(n: int) -> str:
    """``n`` placeholder symbols separated by spaces: the slots of an n-word phrase."""
    return " ".join([PLACEHOLDER] * n)


def pseudo_rows(words: torch.Tensor) -> torch.Tensor:
    """Pseudo-words as per-row placeholder vectors: (B, d) -> (B, 1, d) for one
    word per row; (B, K, d) phrases pass unchanged."""
    return words.unsqueeze(1) if words.ndim == 2 else words


def _tokenizer_of(bundle_or_tokenizer: Any) -> Any:
    return getattr(bundle_or_tokenizer, "tokenizer", bundle_or_tokenizer)


def placeholder_id(bundle_or_tokenizer: Any, placeholder: str = PLACEHOLDER) -> int:
    """The single token id the tokenizer gives to ``placeholder``.

    Args:
        bundle_or_tokenizer: a ClipBundle or an open_clip tokenizer.
        placeholder: the placeholder symbol.

    Raises:
        ValueError: the symbol does not map to exactly one ordinary token.
    """
    tokenizer = _tokenizer_of(bundle_or_tokenizer)
    if not hasattr(tokenizer, "encode"):
        raise TypeError(f"{type(tokenizer).__name__} has no encode(); not supported")
    ids = tokenizer.encode(placeholder)
    if len(ids) != 1:
        raise ValueError(
            f"placeholder {placeholder!r} tokenises to {len(ids)} tokens; choose a "
            "symbol that is a single token"
        )
    special = set(getattr(tokenizer, "all_special_ids", []))
    if ids[0] in special:
        raise ValueError(f"placeholder {placeholder!r} is a special token")
    return int(ids[0])


def tokenize_templates(
    bundle: Any, texts: Sequence[str], placeholder: str = PLACEHOLDER
) -> torch.Tensor:
    """Tokenise templates that hold placeholder symbols (chapter 03).

    Every occurrence of ``placeholder`` becomes exactly one placeholder token
    (neighbouring punctuation is split off first), so ``"$ $ $ $ in red"`` has four.

    Args:
        bundle: a ClipBundle (for its tokenizer, context length and device).
        texts: B templates.
        placeholder: the placeholder symbol.

    Returns:
        int64 ids (B, context_length) on the bundle's device: start token, the
        template, end token, zero padding.

    Raises:
        ValueError: an empty template, or one longer than the context length.
    """
    tokenizer = _tokenizer_of(bundle)
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("tokenize_templates needs at least one template")
    pid = placeholder_id(tokenizer, placeholder)
    length = int(bundle.context_length)
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"template {i} is empty")
        spaced = text.replace(placeholder, f" {placeholder} ")
        ids = [
            tokenizer.sot_token_id,
            *tokenizer.encode(spaced),
            tokenizer.eot_token_id,
        ]
        if len(ids) > length:
            raise ValueError(
                f"template {i} ({text!r}) needs {len(ids)} tokens, more than the "
                f"context length {length}"
            )
        expected = text.count(placeholder)
        if ids.count(pid) != expected:
            raise ValueError(
                f"template {i} ({text!r}): {expected} placeholder symbols became "
                f"{ids.count(pid)} placeholder tokens"
            )
        rows.append(ids + [0] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long, device=bundle.device)


def insert_pseudo_tokens(
    token_embeddings: torch.Tensor,
    ids: torch.Tensor,
    pseudo: torch.Tensor,
    placeholder_id: int,
) -> torch.Tensor:
    """Replace placeholder rows with given vectors, out of place (left to right).

    Args:
        token_embeddings: (B, L, d) embedded ids.
        ids: (B, L) token ids.
        pseudo: (B, K, d) per-row vectors, or (K, d) shared by all rows.
        placeholder_id: id of the placeholder token.

    Returns:
        (B, L, d): the k-th placeholder of row b holds ``pseudo[b, k]``.

    Raises:
        ValueError: a row does not contain exactly K placeholders, or shapes differ.
    """
    batch, _, dim = token_embeddings.shape
    if pseudo.ndim == 2:
        pseudo = pseudo.unsqueeze(0).expand(batch, -1, -1)
    if pseudo.ndim != 3 or pseudo.shape[0] != batch or pseudo.shape[2] != dim:
        raise ValueError(
            f"pseudo must be (B={batch}, K, d={dim}) or (K, d={dim}), got "
            f"{tuple(pseudo.shape)}"
        )
    k = pseudo.shape[1]
    mask = ids == placeholder_id  # (B, L)
    counts = mask.sum(dim=1)
    if bool((counts != k).any()):
        bad = int(torch.nonzero(counts != k)[0, 0])
        raise ValueError(
            f"every row must hold exactly K={k} placeholder tokens (id "
            f"{placeholder_id}); row {bad} holds {int(counts[bad])}"
        )
    if k == 0:
        return token_embeddings
    slot = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L): index into K
    gathered = torch.gather(
        pseudo.to(token_embeddings.dtype), 1, slot.unsqueeze(-1).expand(-1, -1, dim)
    )  # (B, L, d)
    return torch.where(mask.unsqueeze(-1), gathered, token_embeddings)


def encode_token_embeddings(
    model: nn.Module,
    token_embeddings: torch.Tensor,
    ids: torch.Tensor,
    normalize: bool = False,
    trim: bool = True,
    buckets: int = 1,
) -> torch.Tensor:
    """Run the text tower from token embeddings, pooled at the end-of-text token.

    Args:
        model: an open_clip CLIP (parameters may be frozen).
        token_embeddings: (B, L, d) token embeddings, L <= the model's context.
        ids: (B, L) ids; the end-of-text token has the largest id in each row.
        normalize: L2-normalise the output.
        trim: drop the positions after the last end-of-text token of the batch
            (exact under the causal mask).
        buckets: with ``trim``, sort the rows by length and run them through the
            tower in this many groups, each trimmed to its own longest row, so
            short sentences do not pay for the batch's longest (same values up to
            float rounding; 1: one pass).

    Returns:
        (B, E) text embeddings in the joint space.
    """
    tower = _text_tower(model)
    if ids.ndim != 2 or token_embeddings.shape[:2] != ids.shape:
        raise ValueError(
            f"ids (B, L) and token_embeddings (B, L, d) disagree: {tuple(ids.shape)} "
            f"vs {tuple(token_embeddings.shape)}"
        )
    if not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets must be a positive integer, got {buckets!r}")
    if buckets > 1 and trim and tower.attn_mask is not None and len(ids) > 1:
        order = torch.argsort(ids.argmax(dim=-1), stable=True)
        parts = [
            encode_token_embeddings(
                model, token_embeddings[rows], ids[rows], normalize, trim=True
            )
            for rows in order.chunk(buckets)
        ]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return torch.cat(parts)[inverse]
    n_pos = tower.positional_embedding.shape[0]
    if ids.shape[1] > n_pos:
        raise ValueError(f"sequence length {ids.shape[1]} exceeds the context {n_pos}")
    eot = ids.argmax(dim=-1)  # (B,)
    attn_mask = tower.attn_mask
    length = ids.shape[1]
    if trim and attn_mask is not None:
        length = int(eot.max()) + 1
    transformer = tower.transformer
    cast = transformer.get_cast_dtype()
    x = token_embeddings[:, :length].to(cast)
    x = x + tower.positional_embedding[:length].to(cast)
    mask = attn_mask[:length, :length] if attn_mask is not None else None
    if getattr(transformer, "batch_first", True):
        x = transformer(x, attn_mask=mask)
    else:  # sequence-first transformers of older open_clip releases
        x = transformer(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    x = tower.ln_final(x)  # (B, L', d)
    x = x[torch.arange(x.shape[0], device=x.device), eot]  # (B, d)
    proj = tower.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x, dim=-1) if normalize else x


def encode_token_ids(
    model: nn.Module,
    ids: torch.Tensor,
    normalize: bool = False,
    trim: bool = True,
    buckets: int = 1,
) -> torch.Tensor:
    """Text embeddings of tokenised plain text, (B, L) ids -> (B, E).

    Same result as ``model.encode_text(ids)``; with ``trim=True`` only the
    positions up to the batch's last end-of-text token are computed, and with
    ``buckets > 1`` only up to each length group's last one
    (:func:`encode_token_embeddings`).
    """
    tower = _text_tower(model)
    return encode_token_embeddings(
        model,
        tower.token_embedding(ids),
        ids,
        normalize=normalize,
        trim=trim,
        buckets=buckets,
    )


def encode_text_with_pseudo_tokens(
    model: nn.Module,
    ids: torch.Tensor,
    pseudo: torch.Tensor,
    placeholder_id: int,
    normalize: bool = False,
    trim: bool = True,
) -> torch.Tensor:
    """Encode templates whose placeholder tokens receive given vectors (chapter 03).

    Args:
        model: an open_clip CLIP; its text tower may be frozen (gradients still
            flow through it to ``pseudo``).
        ids: (B, L) ids from :func:`tokenize_templates`; every row holds exactly K
            placeholder tokens.
        pseudo: (B, K, d) vectors, one set per row, or (K, d) shared by all rows;
            the k-th placeholder of a row (left to right) receives the k-th vector.
        placeholder_id: id of the placeholder token (see :func:`placeholder_id`).
        normalize: L2-normalise the output.
        trim: compute only up to the batch's last end-of-text token (exact).

    Returns:
        (B, E) text embeddings in the joint space.

    Raises:
        ValueError: a row does not hold exactly K placeholders, or shapes differ.
    """
    tower = _text_tower(model)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (B, L), got {tuple(ids.shape)}")
    embedded = tower.token_embedding(ids)  # (B, L, d)
    embedded = insert_pseudo_tokens(embedded, ids, pseudo, placeholder_id)
    return encode_token_embeddings(model, embedded, ids, normalize=normalize, trim=trim)


def encode_text(
    bundle: Any, texts: Sequence[str], normalize: bool = False
) -> torch.Tensor:
    """Embed plain sentences with the bundle's text tower, (B,) strings -> (B, E).

    Raises:
        ValueError: an empty list or an empty string.
    """
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise ValueError("encode_text needs at least one sentence")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"sentence {i} is empty")
    ids = bundle.tokenize(texts)
    return encode_token_ids(bundle.model, ids, normalize=normalize)
