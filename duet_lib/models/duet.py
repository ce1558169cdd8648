"""The duet model: one shared image encoder, a sketch word and a frozen text tower.

Introduced piece by piece in chapters 03-08 and assembled for training in chapter 09.
:class:`DuetModel` holds every module of the method (method notes, section 2):

========  =====================================================  ==================
symbol    module                                                 trained?
========  =====================================================  ==================
V         the CLIP image encoder, shared by sketches and photos  LayerNorms only
C_v2w     :class:`~duet_lib.models.converter.VisualToWord`        yes
P^L       :class:`~duet_lib.models.converter.LearnablePrompt`     yes
T_w, T_t  CLIP's token table and text transformer                 frozen
G         :class:`~duet_lib.models.decoder.ImageDecoder`          yes (training only)
========  =====================================================  ==================

Queries are token sequences read by the frozen text tower. Each kind is written as
a template with one placeholder symbol per learned vector (three for P^L, one for
the sketch word s^w, one for the difference word Delta^w), followed by real words
where the kind has them. With ``sketch_tokens=K_s`` each word becomes a phrase of
K_s placeholders (the table shows K_s = 1, the paper's setting):

=================  =============================  ==========================
kind               sequence                       template (K = 3 prompt tokens)
=================  =============================  ==========================
``sketch``         [P^L ; s^w]                    ``"$ $ $ $"``
``fixed``          [P^F ; s^w]                    ``"a photo of $"``
``delta``          [P^L ; s^w ; Delta^w]          ``"$ $ $ $ $"``
``neutral``        [P^L ; s^w ; N^w]              ``"$ $ $ $ drawn by hand"``
``text``           [P^L ; s^w ; t^w]              ``"$ $ $ $ in shiny red"``
=================  =============================  ==========================

A :class:`QuerySpec` holds the token ids of such rows and the vectors that fill
their placeholders. :meth:`DuetModel.encode_queries` concatenates the rows of any
number of specs, pads them to the longest and runs the text tower **once**, then
splits the result back by kind; a training step therefore pays for one text
batch, not one per query kind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from duet_lib.losses import load_fixed_prompts, load_neutral_texts
from duet_lib.models.clip import (
    ClipBundle,
    encode_image_with_tokens,
    freeze_for_duet,
)
from duet_lib.models.converter import LearnablePrompt, VisualToWord
from duet_lib.models.decoder import ImageDecoder
from duet_lib.models.text_encoding import (
    PLACEHOLDER,
    encode_token_embeddings,
    placeholder_id,
    placeholders,
    pseudo_rows,
    tokenize_templates,
)

__all__ = [
    "DELTA_SPACES",
    "DeltaOptions",
    "DuetModel",
    "QuerySpec",
]

#: How Delta = p+ - s is formed: "unit" (difference of L2-normalised embeddings)
#: or "raw" (difference of the raw encoder outputs).
DELTA_SPACES = ("unit", "raw")


@dataclass(frozen=True)
class DeltaOptions:
    """How the stand-in text Delta = p+ - s is computed (method notes, section 4.2).

    All three choices are open in the paper; the defaults are ours.

    Attributes:
        space: "unit" subtracts the L2-normalised embeddings (default), "raw"
            subtracts the raw encoder outputs.
        normalize: L2-normalise Delta itself before C_v2w.
        detach: stop gradients through Delta into V (default True), so the image
            encoder is not trained to make Delta easy to read.
    """

    space: str = "unit"
    normalize: bool = False
    detach: bool = True

    def __post_init__(self) -> None:
        if self.space not in DELTA_SPACES:
            raise ValueError(
                f"unknown delta space {self.space!r}; choose one of {list(DELTA_SPACES)}"
            )
        for name in ("normalize", "detach"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DeltaOptions.{name} must be a bool")


@dataclass
class QuerySpec:
    """Rows for the text tower: token ids and the vectors for their placeholders.

    Attributes:
        ids: (N, L) int64 token ids; every row holds exactly K placeholder tokens.
        pseudo: (N, K, d) vectors; the k-th placeholder of row n receives
            ``pseudo[n, k]``.
        shape: leading shape of the encoded output, with prod(shape) == N; for
            example (B,) for one query per sample, (B, F) for F prompts per sample.
    """

    ids: torch.Tensor
    pseudo: torch.Tensor
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.pseudo.ndim != 3:
            raise ValueError(
                f"QuerySpec needs ids (N, L) and pseudo (N, K, d), got "
                f"{tuple(self.ids.shape)} and {tuple(self.pseudo.shape)}"
            )
        if self.ids.shape[0] != self.pseudo.shape[0]:
            raise ValueError(
                f"ids has {self.ids.shape[0]} rows but pseudo has {self.pseudo.shape[0]}"
            )
        if math.prod(self.shape) != self.ids.shape[0]:
            raise ValueError(
                f"shape {self.shape} does not hold the {self.ids.shape[0]} rows"
            )

    @property
    def rows(self) -> int:
        """N, number of text-tower rows."""
        return int(self.ids.shape[0])


def _template(n_slots: int, words: str = "") -> str:
    """``n_slots`` placeholders followed by optional real words."""
    return f"{placeholders(n_slots)} {words}".strip()


class DuetModel(nn.Module):
    """The sketch + text duet: V, C_v2w, P^L, the frozen text tower and G.

    Building the model freezes the CLIP model of ``bundle`` **in place** with
    :func:`~duet_lib.models.clip.freeze_for_duet`: only the LayerNorms of the
    image encoder stay trainable (plus every parameter of the last
    ``unfreeze_last_visual_blocks`` visual blocks, a labelled deviation for the
    tiny backbone). Load a fresh bundle for each model you build.

    Args:
        bundle: the CLIP model, tokenizer and preprocessing.
        n_prompt_tokens: K, length of the learned prompt P^L (3 in the paper).
        prompt_init: words whose token embeddings initialise P^L (they must give
            exactly K tokens; default "a photo of"), or None for N(0, 0.02^2).
        converter_hidden: hidden width of C_v2w; None means 4 E.
        converter_dropout: dropout inside C_v2w.
        decoder_size: side in pixels of G's output (32, 64 or 128).
        unfreeze_last_visual_blocks: train the last k visual blocks fully too.
        delta: how Delta = p+ - s is formed (:class:`DeltaOptions`).
        fixed_prompts: P^F, the fixed prompts of L_TT; None reads the committed list.
        neutral_texts: N, the neutral texts of L_reg; None reads the committed list.
        sketch_tokens: tokens C_v2w emits per input. 1 (the paper): s^w and
            Delta^w are single words. K_s > 1: each becomes a phrase of K_s
            pseudo-words (our option for the tiny text encoder); words are then
            (B, K_s, d) wherever this class says (B, d).
        token_scale: norm of the pseudo-words C_v2w writes, as a multiple of
            ``token_norm`` (1: the size of a typical real word; our option).
        words_scale: factor on s^w in the query with real words, [P^L ; s^w ;
            words] (the test-time duet query, and our L_words); 1 uses s^w as
            the sketch-only query does. Below 1 the user's words weigh more
            against louder pseudo-words (our option; ``token_scale`` sets the
            norm of s^w everywhere, this only where real words follow it).
        seed: seed of the initialisation of C_v2w, P^L (random init) and G.

    Attributes:
        clip: the open_clip CLIP module (V and the text tower).
        converter: C_v2w.
        prompt: P^L.
        decoder: G.
        token_norm: mean norm of the rows of the token table; C_v2w scales its
            outputs to ``token_scale`` times this norm.
    """

    def __init__(
        self,
        bundle: ClipBundle,
        *,
        n_prompt_tokens: int = 3,
        prompt_init: str | None = "a photo of",
        converter_hidden: int | None = None,
        converter_dropout: float = 0.1,
        decoder_size: int = 64,
        unfreeze_last_visual_blocks: int = 0,
        delta: DeltaOptions | None = None,
        fixed_prompts: Sequence[str] | None = None,
        neutral_texts: Sequence[str] | None = None,
        sketch_tokens: int = 1,
        token_scale: float = 1.0,
        words_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(bundle, ClipBundle):
            raise ValueError(
                f"bundle must be a ClipBundle, got {type(bundle).__name__}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if (
            isinstance(sketch_tokens, bool)
            or not isinstance(sketch_tokens, int)
            or sketch_tokens < 1
        ):
            raise ValueError(
                f"sketch_tokens must be an integer >= 1, got {sketch_tokens!r}"
            )
        self.sketch_tokens = sketch_tokens
        self.bundle = bundle
        self.clip = bundle.model
        self.delta_options = delta if delta is not None else DeltaOptions()
        if not isinstance(self.delta_options, DeltaOptions):
            raise ValueError("delta must be a DeltaOptions or None")
        self.unfreeze_last_visual_blocks = unfreeze_last_visual_blocks
        freeze_for_duet(self.clip, unfreeze_last_visual_blocks)

        ok = isinstance(token_scale, int | float) and not isinstance(token_scale, bool)
        if not ok or not 0 < token_scale < 100:
            raise ValueError(f"token_scale must be in (0, 100), got {token_scale!r}")
        table = self.clip.token_embedding.weight.detach()
        self.token_norm = float(table.norm(dim=1).mean())
        self.token_scale = float(token_scale)
        ok = isinstance(words_scale, int | float) and not isinstance(words_scale, bool)
        if not ok or not 0 < words_scale <= 10:
            raise ValueError(f"words_scale must be in (0, 10], got {words_scale!r}")
        self.words_scale = float(words_scale)
        embed_dim, token_dim = int(bundle.embed_dim), int(bundle.token_dim)
        self.converter = VisualToWord(
            embed_dim,
            token_dim,
            hidden=converter_hidden,
            dropout=converter_dropout,
            token_norm=self.token_norm * self.token_scale,
            n_tokens=sketch_tokens,
            seed=seed,
        )
        init = None
        if prompt_init is not None:
            if not isinstance(prompt_init, str) or not prompt_init.strip():
                raise ValueError("prompt_init must be a non-empty string or None")
            ids = bundle.tokenizer.encode(prompt_init)
            if len(ids) != n_prompt_tokens:
                raise ValueError(
                    f"prompt_init {prompt_init!r} gives {len(ids)} tokens, but "
                    f"n_prompt_tokens is {n_prompt_tokens}"
                )
            init = table[torch.tensor(ids, device=table.device)].cpu()
        self.prompt = LearnablePrompt(n_prompt_tokens, token_dim, init, seed=seed + 1)
        self.decoder = ImageDecoder(embed_dim, out_size=decoder_size, seed=seed + 2)
        self.prompt_init = prompt_init
        self.n_prompt_tokens = n_prompt_tokens
        self.to(bundle.device)

        self.placeholder = placeholder_id(bundle)
        self.fixed_prompts = list(
            load_fixed_prompts() if fixed_prompts is None else fixed_prompts
        )
        self.neutral_texts = list(
            load_neutral_texts() if neutral_texts is None else neutral_texts
        )
        for name, texts in (
            ("fixed_prompts", self.fixed_prompts),
            ("neutral_texts", self.neutral_texts),
        ):
            if not texts or any(
                not isinstance(t, str) or not t.strip() or PLACEHOLDER in t
                for t in texts
            ):
                raise ValueError(
                    f"{name} must be a non-empty list of non-empty strings without "
                    f"the placeholder {PLACEHOLDER!r}"
                )
        k, ns = n_prompt_tokens, sketch_tokens
        # Token id tables, (rows, L) int64, kept as non-persistent buffers so they
        # follow the model across devices but stay out of checkpoints.
        self.register_buffer(
            "_ids_sketch", tokenize_templates(bundle, [_template(k + ns)]), False
        )
        self.register_buffer(
            "_ids_delta", tokenize_templates(bundle, [_template(k + 2 * ns)]), False
        )
        self.register_buffer(
            "_ids_fixed",
            tokenize_templates(
                bundle, [f"{p} {placeholders(ns)}" for p in self.fixed_prompts]
            ),
            False,
        )
        self.register_buffer(
            "_ids_neutral",
            tokenize_templates(
                bundle, [_template(k + ns, t) for t in self.neutral_texts]
            ),
            False,
        )

    # ----------------------------------------------------------------- parameters

    def trainable_parameter_names(self) -> list[str]:
        """Sorted names of the parameters with ``requires_grad``.

        Exactly the LayerNorms of V (``clip.visual...``), C_v2w (``converter.*``),
        P^L (``prompt.tokens``) and G (``decoder.*``); with
        ``unfreeze_last_visual_blocks`` also those blocks' parameters.
        """
        return sorted(n for n, p in self.named_parameters() if p.requires_grad)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters split into ``"visual"`` (V) and ``"modules"``.

        The two groups get different learning rates (method notes, section 5).
        """
        visual = [p for p in self.clip.parameters() if p.requires_grad]
        own = [
            p
            for m in (self.converter, self.prompt, self.decoder)
            for p in m.parameters()
            if p.requires_grad
        ]
        return {"visual": visual, "modules": own}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Detached CPU copies of the trainable parameters, by name."""
        params = dict(self.named_parameters())
        return {
            n: params[n].detach().cpu().clone()
            for n in self.trainable_parameter_names()
        }

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned (names must match).

        Raises:
            ValueError: missing or unexpected names, or a shape mismatch.
        """
        names = set(self.trainable_parameter_names())
        missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
        if missing or unexpected:
            raise ValueError(
                f"trainable state does not fit this model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]} (was it saved with other settings, "
                "e.g. unfreeze_last_visual_blocks?)"
            )
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name in names:
                value = state[name]
                if tuple(value.shape) != tuple(params[name].shape):
                    raise ValueError(
                        f"{name}: stored shape {tuple(value.shape)} differs from "
                        f"{tuple(params[name].shape)}"
                    )
                params[name].copy_(value.to(params[name].device))

    # --------------------------------------------------------------------- images

    def encode_images(
        self, images: torch.Tensor, with_tokens: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global embeddings and patch tokens of preprocessed images (V).

        Args:
            images: (B, 3, S, S) CLIP-normalised sketches or photos.
            with_tokens: also return the projected patch tokens.

        Returns:
            pooled (B, E) and tokens (B, N, E) (or None), not normalised.
        """
        if with_tokens:
            return encode_image_with_tokens(self.clip, images)
        return self.clip.encode_image(images), None

    def encode_sketch(self, images: torch.Tensor) -> torch.Tensor:
        """Sketch embeddings s = V(sketch): (B, 3, S, S) -> (B, E)."""
        return self.clip.encode_image(images)

    def encode_photo(self, images: torch.Tensor) -> torch.Tensor:
        """Photo embeddings p = V(photo): (B, 3, S, S) -> (B, E)."""
        return self.clip.encode_image(images)

    def encode_photo_tokens(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled (B, E) and projected patch tokens (B, N, E) of photos, for L_RT."""
        pooled, tokens = encode_image_with_tokens(self.clip, images)
        return pooled, tokens

    # ---------------------------------------------------------------------- words

    def sketch_word(self, sketch_emb: torch.Tensor) -> torch.Tensor:
        """s^w = C_v2w(s / |s|): (B, E) -> (B, d)."""
        return self.converter(F.normalize(sketch_emb, dim=-1))

    def delta(self, sketch_emb: torch.Tensor, photo_emb: torch.Tensor) -> torch.Tensor:
        """Delta = p+ - s as set by :attr:`delta_options`: (B, E), (B, E) -> (B, E)."""
        opts = self.delta_options
        s, p = sketch_emb, photo_emb
        if opts.space == "unit":
            s, p = F.normalize(s, dim=-1), F.normalize(p, dim=-1)
        out = p - s
        if opts.normalize:
            out = F.normalize(out, dim=-1)
        return out.detach() if opts.detach else out

    def delta_word(
        self, sketch_emb: torch.Tensor, photo_emb: torch.Tensor
    ) -> torch.Tensor:
        """Delta^w = C_v2w(Delta): (B, E), (B, E) -> (B, d)."""
        return self.converter(self.delta(sketch_emb, photo_emb))

    def _prompt_rows(self, batch: int) -> torch.Tensor:
        return self.prompt(batch_size=batch)  # (B, K, d)

    def _rows(self, word: torch.Tensor) -> int:
        """B of a batch of words: (B, d) for one token, (B, K_s, d) for K_s."""
        ns = self.sketch_tokens
        want = "(B, d)" if ns == 1 else f"(B, {ns}, d)"
        ok = isinstance(word, torch.Tensor) and (
            word.ndim == 2 if ns == 1 else word.ndim == 3 and word.shape[1] == ns
        )
        if not ok:
            shape = tuple(word.shape) if isinstance(word, torch.Tensor) else None
            raise ValueError(f"sketch words must be {want}, got {shape}")
        if word.shape[0] == 0:
            raise ValueError("empty batch of sketch words")
        return int(word.shape[0])

    # ---------------------------------------------------------------- query specs

    def spec_sketch(self, sketch_word: torch.Tensor) -> QuerySpec:
        """[P^L ; s^w] for s^w (B, d): B rows, output (B, E)."""
        b = self._rows(sketch_word)
        pseudo = torch.cat([self._prompt_rows(b), pseudo_rows(sketch_word)], dim=1)
        return QuerySpec(self._ids_sketch.expand(b, -1), pseudo, (b,))

    def spec_fixed(
        self, sketch_word: torch.Tensor, prompt_index: int | torch.Tensor | None = None
    ) -> QuerySpec:
        """[P^F ; s^w] with the committed fixed prompts.

        Args:
            sketch_word: (B, d) sketch words.
            prompt_index: None for every prompt (B * F rows, output (B, F, E)); an
                int for one prompt (output (B, E)); a (B,) tensor for one prompt
                per row (output (B, E)).
        """
        b = self._rows(sketch_word)
        n_fixed = len(self.fixed_prompts)
        if prompt_index is None:
            ids = self._ids_fixed.repeat(b, 1)  # (B * F, L), row b*F + f
            pseudo = pseudo_rows(sketch_word).repeat_interleave(n_fixed, dim=0)
            return QuerySpec(ids, pseudo, (b, n_fixed))
        index = _index_tensor(prompt_index, b, n_fixed, "prompt_index", self._ids_fixed)
        return QuerySpec(self._ids_fixed[index], pseudo_rows(sketch_word), (b,))

    def spec_delta(
        self, sketch_word: torch.Tensor, delta_word: torch.Tensor
    ) -> QuerySpec:
        """[P^L ; s^w ; Delta^w] for (B, d) words: B rows, output (B, E)."""
        b = self._rows(sketch_word)
        if tuple(delta_word.shape) != tuple(sketch_word.shape):
            raise ValueError(
                f"delta_word {tuple(delta_word.shape)} must match sketch_word "
                f"{tuple(sketch_word.shape)}"
            )
        pseudo = torch.cat(
            [self._prompt_rows(b), pseudo_rows(sketch_word), pseudo_rows(delta_word)],
            dim=1,
        )
        return QuerySpec(self._ids_delta.expand(b, -1), pseudo, (b,))

    def spec_neutral(
        self, sketch_word: torch.Tensor, neutral_index: int | torch.Tensor
    ) -> QuerySpec:
        """[P^L ; s^w ; N^w] with neutral texts from :attr:`neutral_texts`.

        Args:
            sketch_word: (B, d).
            neutral_index: an int (one text for all rows, output (B, E)), a (B,)
                tensor (output (B, E)) or a (B, M) tensor (M texts per row,
                output (B, M, E)).
        """
        b = self._rows(sketch_word)
        n_texts = len(self.neutral_texts)
        device = self._ids_neutral.device
        if isinstance(neutral_index, torch.Tensor) and neutral_index.ndim == 2:
            if neutral_index.shape[0] != b:
                raise ValueError(
                    f"neutral_index must be (B={b}, M), got {tuple(neutral_index.shape)}"
                )
            m = int(neutral_index.shape[1])
            flat = _index_tensor(
                neutral_index.reshape(-1),
                b * m,
                n_texts,
                "neutral_index",
                self._ids_neutral,
            )
            word = sketch_word.repeat_interleave(m, dim=0)
            shape: tuple[int, ...] = (b, m)
        else:
            flat = _index_tensor(
                neutral_index, b, n_texts, "neutral_index", self._ids_neutral
            )
            word, shape = sketch_word, (b,)
        rows = word.shape[0]
        pseudo = torch.cat([self._prompt_rows(rows), pseudo_rows(word)], dim=1)
        return QuerySpec(self._ids_neutral[flat.to(device)], pseudo, shape)

    def spec_text(self, sketch_word: torch.Tensor, texts: Sequence[str]) -> QuerySpec:
        """[P^L ; s^w ; t^w] with real user text, one text per row (test time).

        Args:
            sketch_word: (B, d).
            texts: B strings, e.g. "in shiny red"; a single string is used for
                every row.

        Raises:
            ValueError: an empty text, a text holding the placeholder symbol, a
                count that differs from B, or a text too long for the context.
        """
        b = self._rows(sketch_word)
        if isinstance(texts, str):
            texts = [texts] * b
        texts = list(texts)
        if len(texts) != b:
            raise ValueError(f"got {len(texts)} texts for {b} sketches")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"text {i} is empty; a composed query needs words after the "
                    "sketch (use query_sketch for the sketch alone)"
                )
            if PLACEHOLDER in text:
                raise ValueError(
                    f"text {i} ({text!r}) contains the placeholder symbol "
                    f"{PLACEHOLDER!r}, which is reserved for learned tokens"
                )
        k = self.n_prompt_tokens
        ns = self.sketch_tokens
        ids = tokenize_templates(self.bundle, [_template(k + ns, t) for t in texts])
        word = sketch_word * self.words_scale  # exact when 1
        pseudo = torch.cat([self._prompt_rows(b), pseudo_rows(word)], dim=1)
        return QuerySpec(ids.to(self._ids_sketch.device), pseudo, (b,))

    # -------------------------------------------------------------- text encoding

    def encode_queries(
        self, specs: Mapping[str, QuerySpec], normalize: bool = False
    ) -> dict[str, torch.Tensor]:
        """Encode several query kinds with ONE pass through the text tower.

        The rows of all specs are concatenated (every row is already padded to
        the context length; the tower trims to the longest end-of-text token of
        the whole batch, which is exact under its causal mask), the placeholder
        rows are overwritten in left-to-right, row-major order with the specs'
        vectors, and the output is split back by kind.

        Args:
            specs: kind name -> :class:`QuerySpec`.
            normalize: L2-normalise the outputs.

        Returns:
            kind name -> embeddings of shape ``spec.shape + (E,)``.

        Raises:
            ValueError: no spec, or rows whose placeholder counts do not match
                their vectors.
        """
        if not specs:
            raise ValueError("encode_queries needs at least one QuerySpec")
        names = list(specs)
        ids = torch.cat([specs[n].ids for n in names], dim=0)  # (N, L)
        tower = self.clip
        dim = tower.token_embedding.weight.shape[1]
        flat = torch.cat([specs[n].pseudo.reshape(-1, dim) for n in names], dim=0)
        mask = ids == self.placeholder  # (N, L)
        expected = sum(
            specs[n].pseudo.shape[0] * specs[n].pseudo.shape[1] for n in names
        )
        found = int(mask.sum())
        if found != expected:
            raise ValueError(
                f"the token rows hold {found} placeholders but {expected} vectors "
                "were given; each row needs exactly K placeholders for its K vectors"
            )
        embedded = tower.token_embedding(ids)  # (N, L, d)
        embedded = embedded.masked_scatter(mask.unsqueeze(-1), flat.to(embedded.dtype))
        out = encode_token_embeddings(tower, embedded, ids, normalize=normalize)
        result: dict[str, torch.Tensor] = {}
        start = 0
        for n in names:
            spec = specs[n]
            part = out[start : start + spec.rows]
            result[n] = part.reshape(*spec.shape, part.shape[-1])
            start += spec.rows
        return result

    def _encode_one(self, spec: QuerySpec) -> torch.Tensor:
        return self.encode_queries({"q": spec})["q"]

    # ------------------------------------------------------------------- queries

    def query_sketch(self, sketch_emb: torch.Tensor) -> torch.Tensor:
        """s_L^T = T([P^L ; s^w]): sketch embeddings (B, E) -> queries (B, E)."""
        return self._encode_one(self.spec_sketch(self.sketch_word(sketch_emb)))

    def query_fixed(
        self,
        sketch_emb: torch.Tensor,
        prompt_index: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """s_F^T = T([P^F ; s^w]): (B, E) -> (B, F, E) for all prompts (None) or
        (B, E) for one prompt (int) or one per row ((B,) tensor)."""
        word = self.sketch_word(sketch_emb)
        return self._encode_one(self.spec_fixed(word, prompt_index))

    def query_delta(
        self, sketch_emb: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """s_L^{T,Delta} = T([P^L ; s^w ; Delta^w]).

        Args:
            sketch_emb: (B, E) sketch embeddings s.
            delta: (B, E) stand-in text Delta, usually :meth:`delta` (s, p+).

        Returns:
            (B, E) composed queries.
        """
        word = self.sketch_word(sketch_emb)
        return self._encode_one(self.spec_delta(word, self.converter(delta)))

    def query_neutral(
        self, sketch_emb: torch.Tensor, neutral_ids: int | torch.Tensor
    ) -> torch.Tensor:
        """s_L^{T,N} = T([P^L ; s^w ; N^w]): (B, E) -> (B, E) or (B, M, E).

        ``neutral_ids`` indexes :attr:`neutral_texts` (int, (B,) or (B, M)).
        """
        word = self.sketch_word(sketch_emb)
        return self._encode_one(self.spec_neutral(word, neutral_ids))

    def query_text(
        self, sketch_emb: torch.Tensor, texts: Sequence[str]
    ) -> torch.Tensor:
        """s_L^{T,q} = T([P^L ; s^w ; t^w]): (B, E) and B texts -> (B, E).

        Raises:
            ValueError: an empty text (see :meth:`spec_text`).
        """
        word = self.sketch_word(sketch_emb)
        return self._encode_one(self.spec_text(word, texts))

    # -------------------------------------------------------------- training pass

    def forward(
        self,
        sketch: torch.Tensor,
        photo: torch.Tensor,
        negatives: torch.Tensor | None = None,
        *,
        fixed_index: torch.Tensor | str | None = None,
        neutral_index: torch.Tensor | None = None,
        with_delta: bool = True,
        with_tokens: bool = True,
        decode: bool = True,
        memory: torch.Tensor | None = None,
        texts: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every forward computation of one training step (chapter 09).

        One image-tower pass over [sketches ; photos ; negatives], one C_v2w pass
        over [s ; Delta], one text-tower pass over all query kinds, one decoder
        pass over [s_L^{T,Delta} ; s_L^T]. Losses are computed by the caller from
        the returned tensors (so this also runs under DistributedDataParallel).

        Args:
            sketch: (B, 3, S, S) sketches.
            photo: (B, 3, S, S) paired photos p+.
            negatives: (B, M, 3, S, S) negative photos, or None.
            fixed_index: (B,) fixed-prompt index per row, "all", or None (skip
                s_F^T).
            neutral_index: (B,) or (B, M) neutral-text indices, or None (skip
                s_L^{T,N}).
            with_delta: compute Delta and s_L^{T,Delta}.
            with_tokens: return patch tokens of photos and negatives.
            decode: run G on s_L^{T,Delta} (when computed) and s_L^T.
            memory: (N, E) remembered sketch embeddings (detached, from earlier
                steps) whose sketch-only queries are encoded too, in the same
                C_v2w and text-tower passes (``TrainConfig.trip_memory``).
            texts: B phrases, one per row, for the composed query
                [P^L ; s^w ; words] of the optional L_words (self-labelled words),
                encoded in the same text-tower pass; None skips it.

        Returns:
            Dict with ``s`` (B, E), ``p`` (B, E), ``n`` (B, M, E) when negatives
            are given, ``p_tokens`` (B, N, E) and ``n_tokens`` (B, M, N, E) with
            tokens, ``q_sketch`` (B, E), and as requested ``q_fixed`` ((B, E) or
            (B, F, E)), ``q_neutral`` ((B, E) or (B, M, E)), ``q_delta`` (B, E),
            ``g_sketch`` and ``g_delta`` (B, 3, R, R) decoder images in [0, 1];
            ``q_memory`` (N, E) with ``memory``, ``q_words`` (B, E) with ``texts``.
        """
        b = sketch.shape[0]
        if memory is not None and (
            memory.ndim != 2 or memory.shape[1] != self.bundle.embed_dim
        ):
            raise ValueError(
                f"memory must be (N, E={self.bundle.embed_dim}), got "
                f"{tuple(memory.shape)}"
            )
        if photo.shape != sketch.shape:
            raise ValueError(
                f"photo {tuple(photo.shape)} must match sketch {tuple(sketch.shape)}"
            )
        parts = [sketch, photo]
        m = 0
        if negatives is not None:
            if negatives.ndim != 5 or negatives.shape[0] != b:
                raise ValueError(
                    f"negatives must be (B={b}, M, 3, S, S), got {tuple(negatives.shape)}"
                )
            m = int(negatives.shape[1])
            if m:
                parts.append(negatives.flatten(0, 1))
        images = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        pooled, tokens = self.encode_images(images, with_tokens=with_tokens)
        out: dict[str, torch.Tensor] = {"s": pooled[:b], "p": pooled[b : 2 * b]}
        if m:
            out["n"] = pooled[2 * b :].view(b, m, -1)
        if tokens is not None:
            out["p_tokens"] = tokens[b : 2 * b]
            if m:
                out["n_tokens"] = tokens[2 * b :].view(b, m, *tokens.shape[1:])

        s_unit = F.normalize(out["s"], dim=-1)
        inputs = [s_unit]
        if with_delta:
            inputs.append(self.delta(out["s"], out["p"]))
        if memory is not None:
            inputs.append(F.normalize(memory.to(s_unit.dtype), dim=-1))
        words = self.converter(torch.cat(inputs, dim=0))
        s_word = words[:b]
        d_word = words[b : 2 * b] if with_delta else None
        m_word = words[len(words) - len(memory) :] if memory is not None else None

        specs: dict[str, QuerySpec] = {"q_sketch": self.spec_sketch(s_word)}
        if m_word is not None:
            specs["q_memory"] = self.spec_sketch(m_word)
        if fixed_index is not None:
            index = (
                None
                if isinstance(fixed_index, str) and fixed_index == "all"
                else fixed_index
            )
            specs["q_fixed"] = self.spec_fixed(s_word, index)
        if d_word is not None:
            specs["q_delta"] = self.spec_delta(s_word, d_word)
        if neutral_index is not None:
            specs["q_neutral"] = self.spec_neutral(s_word, neutral_index)
        if texts is not None:
            specs["q_words"] = self.spec_text(s_word, texts)
        out.update(self.encode_queries(specs))

        if decode:
            if "q_delta" in out:
                images_g = self.decoder(torch.cat([out["q_delta"], out["q_sketch"]], 0))
                out["g_delta"], out["g_sketch"] = images_g[:b], images_g[b:]
            else:
                out["g_sketch"] = self.decoder(out["q_sketch"])
        return out

    def extra_repr(self) -> str:
        return (
            f"prompt_tokens={self.n_prompt_tokens}, sketch_tokens={self.sketch_tokens}, "
            f"token_norm={self.token_norm:.4g}, words_scale={self.words_scale:g}, "
            f"fixed_prompts={len(self.fixed_prompts)}, "
            f"neutral_texts={len(self.neutral_texts)}, delta={self.delta_options}"
        )


def _index_tensor(
    index: int | torch.Tensor, rows: int, n_items: int, name: str, like: torch.Tensor
) -> torch.Tensor:
    """An int or (rows,) index tensor validated against ``n_items``, on like's device."""
    if isinstance(index, bool):
        raise ValueError(f"{name} must be an int or a tensor, got a bool")
    if isinstance(index, int):
        if not 0 <= index < n_items:
            raise ValueError(f"{name}={index} outside [0, {n_items})")
        return torch.full((rows,), index, dtype=torch.long, device=like.device)
    if not isinstance(index, torch.Tensor) or index.shape != (rows,):
        shape = tuple(index.shape) if isinstance(index, torch.Tensor) else None
        raise ValueError(f"{name} must be an int or a ({rows},) tensor, got {shape}")
    if index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError(f"{name} must hold integers, got {index.dtype}")
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= n_items:
        raise ValueError(f"{name} values must lie in [0, {n_items}), got [{lo}, {hi}]")
    return index.to(device=like.device, dtype=torch.long)
