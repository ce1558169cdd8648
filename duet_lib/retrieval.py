"""Top-k retrieval over a stored gallery of embeddings.

A :class:`GalleryIndex` holds the gallery as one float32 matrix (N, D) plus one id per
row. Photos are embedded once, saved with :meth:`GalleryIndex.save`, and every query
type (sketch, text, late fusion, composed) searches the same saved matrix.

Two backends answer :meth:`GalleryIndex.search`:

* ``"torch"`` (default): exact top-k by inner product. The gallery is processed in
  blocks of ``chunk_size`` rows (and queries in blocks of ``query_block`` rows), so
  the largest temporary score matrix is ``query_block x chunk_size`` floats whatever
  the gallery size; each block's top-k is merged into a running top-k.
* ``"faiss"`` (faiss-cpu): ``faiss_kind="flat"`` is ``IndexFlatIP``, exact and equal
  to the torch backend; ``"hnsw"`` is ``IndexHNSWFlat`` (graph search, no training,
  slow to build on large galleries) and ``"ivf"`` is ``IndexIVFFlat`` (k-means
  cells, fast to build, searches ``nprobe`` cells). Both approximate kinds use the
  inner-product metric and can miss true neighbours; measure their recall.

Scores are inner products. L2-normalise embeddings (or pass ``normalize=True``) to
get cosine similarity, which is what the book's metrics use. Introduced in
chapter 10.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from duet_lib.checkpoint import atomic_write

__all__ = [
    "FaissOptions",
    "GalleryIndex",
    "GalleryIndexError",
    "GalleryIndexNotFoundError",
]

_FORMAT = "duet-gallery-index"
_VERSION = 1
Backend = Literal["torch", "faiss"]
FaissKind = Literal["flat", "hnsw", "ivf"]


class GalleryIndexError(ValueError):
    """A gallery, query batch or index file that cannot be used as given."""


class GalleryIndexNotFoundError(GalleryIndexError, FileNotFoundError):
    """The index file does not exist (also a :class:`FileNotFoundError`)."""


@dataclass(frozen=True)
class FaissOptions:
    """Knobs of the approximate faiss indexes (ignored by the exact ones).

    Attributes:
        hnsw_m: graph degree of ``IndexHNSWFlat``.
        hnsw_ef_construction: candidate list size while building the graph.
        hnsw_ef_search: candidate list size while searching (raised to k if lower).
        ivf_nlist: number of k-means cells; ``None`` picks ``round(sqrt(N))``,
            capped so that each cell has at least 39 training points.
        ivf_nprobe: cells visited per query.
        ivf_train_size: gallery rows used to train the cells (sampled with
            ``seed``); ``None`` uses ``min(N, 64 * nlist)``.
        seed: seed of the training sample and of faiss' k-means.
    """

    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None
    ivf_nprobe: int = 16
    ivf_train_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("ivf_nlist", "ivf_train_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise GalleryIndexError(
                    f"FaissOptions.{f.name} must be an int, got {value!r}"
                )
            if value < (0 if f.name == "seed" else 1):
                raise GalleryIndexError(f"FaissOptions.{f.name} out of range: {value}")


def _as_matrix(x: Any, name: str) -> torch.Tensor:
    """(R, D) float32 contiguous CPU tensor, with a clear error for anything else."""
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise GalleryIndexError(
            f"{name} must be a torch tensor or numpy array, got {type(x).__name__}"
        )
    if t.ndim != 2:
        raise GalleryIndexError(
            f"{name} must have shape (rows, D), got {tuple(t.shape)}"
        )
    if t.is_complex() or t.dtype == torch.bool:
        raise GalleryIndexError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(t).all():
        raise GalleryIndexError(f"{name} contains NaN or infinite values")
    return t


def _l2_normalize(t: torch.Tensor, name: str) -> torch.Tensor:
    norms = t.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise GalleryIndexError(
            f"{name}: {int((norms == 0).sum())} row(s) have zero norm and cannot be "
            "L2-normalised"
        )
    return (t / norms).contiguous()


def _check_ids(ids: Sequence[Any] | None, n: int) -> list:
    if ids is None:
        return list(range(n))
    if isinstance(ids, np.ndarray | torch.Tensor):
        ids = ids.tolist()
    ids = list(ids)
    if len(ids) != n:
        raise GalleryIndexError(f"got {len(ids)} ids for {n} gallery rows")
    is_str = [isinstance(i, str) for i in ids]
    is_int = [isinstance(i, int | np.integer) and not isinstance(i, bool) for i in ids]
    if all(is_str):
        pass
    elif all(is_int):
        ids = [int(i) for i in ids]
    else:
        raise GalleryIndexError("ids must be all strings or all integers")
    if len(set(ids)) != n:
        raise GalleryIndexError("ids must be unique; found duplicates")
    return ids


def _import_faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a dependency
        raise GalleryIndexError(
            "backend='faiss' needs the faiss-cpu package (pip install faiss-cpu)"
        ) from err
    return faiss


class GalleryIndex:
    """A gallery embedding matrix with ids, searchable by exact or approximate top-k.

    Args:
        embeddings: (N, D) gallery embeddings (tensor or array; stored as float32).
        ids: N unique ids (all str or all int); ``None`` uses 0..N-1.
        normalize: L2-normalise the gallery now and every query batch in
            :meth:`search`, so scores are cosine similarities.
        backend: ``"torch"`` (exact, chunked matmul) or ``"faiss"``.
        faiss_kind: with ``backend="faiss"``: ``"flat"`` (exact), ``"hnsw"`` or
            ``"ivf"`` (approximate).
        chunk_size: gallery rows per matmul block of the torch backend.
        query_block: query rows per block of the torch backend.
        faiss_options: parameters of the approximate faiss indexes.

    Example:
        >>> index = GalleryIndex(photo_emb, ids=photo_ids, normalize=True)
        >>> scores, rows = index.search(sketch_emb, k=10)  # (Q, 10) each
    """

    def __init__(
        self,
        embeddings: torch.Tensor | np.ndarray,
        ids: Sequence[str] | Sequence[int] | None = None,
        *,
        normalize: bool = False,
        backend: Backend = "torch",
        faiss_kind: FaissKind = "flat",
        chunk_size: int = 32_768,
        query_block: int = 1_024,
        faiss_options: FaissOptions | None = None,
    ) -> None:
        if backend not in ("torch", "faiss"):
            raise GalleryIndexError(
                f"unknown backend {backend!r}; use 'torch' or 'faiss'"
            )
        if faiss_kind not in ("flat", "hnsw", "ivf"):
            raise GalleryIndexError(
                f"unknown faiss_kind {faiss_kind!r}; use 'flat', 'hnsw' or 'ivf'"
            )
        for name, value in (("chunk_size", chunk_size), ("query_block", query_block)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GalleryIndexError(f"{name} must be a positive int, got {value!r}")
        if faiss_options is not None and not isinstance(faiss_options, FaissOptions):
            raise GalleryIndexError("faiss_options must be a FaissOptions instance")
        matrix = _as_matrix(embeddings, "embeddings")
        if matrix.shape[0] == 0 or matrix.shape[1] == 0:
            raise GalleryIndexError(
                f"the gallery is empty: shape {tuple(matrix.shape)}"
            )
        self.normalize = bool(normalize)
        # Own the data: a later in-place change to the caller's array must not
        # silently change the gallery.
        if normalize:
            self.embeddings = _l2_normalize(matrix, "embeddings")
        else:
            self.embeddings = matrix.clone()
        self.ids = _check_ids(ids, matrix.shape[0])
        self.backend = backend
        self.faiss_kind = faiss_kind
        self.chunk_size = chunk_size
        self.query_block = query_block
        self.faiss_options = faiss_options or FaissOptions()
        self._faiss_index = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return self.embeddings.shape[1]

    @property
    def is_exact(self) -> bool:
        """True when :meth:`search` returns the exact top-k."""
        return self.backend == "torch" or self.faiss_kind == "flat"

    def __repr__(self) -> str:
        kind = "" if self.backend == "torch" else f", faiss_kind={self.faiss_kind!r}"
        return (
            f"GalleryIndex(N={len(self)}, D={self.dim}, normalize={self.normalize}, "
            f"backend={self.backend!r}{kind})"
        )

    # ------------------------------------------------------------------ faiss
    def build(self) -> GalleryIndex:
        """Build the faiss index now (otherwise the first search builds it).

        A no-op for the torch backend. Returns ``self`` so calls can be chained.
        """
        if self.backend == "faiss" and self._faiss_index is None:
            self._faiss_index = self._make_faiss_index()
        return self

    def _make_faiss_index(self):
        faiss = _import_faiss()
        opts = self.faiss_options
        data = self.embeddings.numpy()
        n, d = data.shape
        if self.faiss_kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif self.faiss_kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = opts.hnsw_ef_construction
        else:
            nlist = opts.ivf_nlist
            if nlist is None:
                nlist = max(1, min(round(math.sqrt(n)), n // 39))
            if nlist > n:
                raise GalleryIndexError(
                    f"ivf_nlist={nlist} exceeds the gallery size {n}"
                )
            train_size = opts.ivf_train_size or min(n, 64 * nlist)
            train_size = max(min(train_size, n), nlist)
            rng = np.random.default_rng(opts.seed)
            rows = np.sort(rng.choice(n, size=train_size, replace=False))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = opts.seed
            index.cp.spherical = self.normalize
            index.train(np.ascontiguousarray(data[rows]))
            index.nprobe = min(opts.ivf_nprobe, nlist)
        index.add(data)
        return index

    # ----------------------------------------------------------------- search
    def search(
        self, queries: torch.Tensor | np.ndarray, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k gallery rows for each query by inner product.

        Args:
            queries: (Q, D) query embeddings (normalised here if the index was
                built with ``normalize=True``).
            k: hits per query, ``1 <= k <= N``.

        Returns:
            ``(scores, indices)``: (Q, k) float32 scores, best first, and (Q, k)
            int64 gallery row indices (map them to ids with :meth:`ids_of`). The
            exact backends break exact score ties by the lower row index; which
            tied rows make the cut at position k is unspecified. Scores that are
            equal in exact arithmetic can differ in the last bit when computed in
            different blocks, so near-duplicates may not count as ties. The approximate
            faiss kinds may find fewer than k rows; missing slots hold index -1
            and score -inf.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise GalleryIndexError(f"k must be a positive int, got {k!r}")
        k = int(k)
        if k > len(self):
            raise GalleryIndexError(f"k={k} exceeds the gallery size N={len(self)}")
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise GalleryIndexError(
                f"queries have width {q.shape[1]}, the gallery has width {self.dim}"
            )
        if self.normalize:
            q = _l2_normalize(q, "queries")
        if q.shape[0] == 0:
            return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
        if self.backend == "torch":
            scores, indices = self._search_torch(q, k)
        else:
            scores, indices = self._search_faiss(q, k)
        return _order_ties(scores, indices)

    def _search_torch(
        self, q: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gallery = self.embeddings
        n = gallery.shape[0]
        out_scores, out_indices = [], []
        for q_start in range(0, q.shape[0], self.query_block):
            q_blk = q[q_start : q_start + self.query_block]  # (b, D)
            best_s = best_i = None
            for g_start in range(0, n, self.chunk_size):
                block = gallery[g_start : g_start + self.chunk_size]  # (C, D)
                s = q_blk @ block.T  # (b, C)
                top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
                top_i += g_start
                if best_s is None:
                    best_s, best_i = top_s, top_i
                    continue
                cat_s = torch.cat([best_s, top_s], dim=1)
                cat_i = torch.cat([best_i, top_i], dim=1)
                best_s, pos = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
                best_i = cat_i.gather(1, pos)
            out_scores.append(best_s)
            out_indices.append(best_i)
        return torch.cat(out_scores), torch.cat(out_indices)

    def _search_faiss(
        self, q: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.build()
        index = self._faiss_index
        if self.faiss_kind == "hnsw":
            index.hnsw.efSearch = max(self.faiss_options.hnsw_ef_search, k)
        scores, indices = index.search(q.numpy(), k)
        scores_t = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        indices_t = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
        scores_t[indices_t < 0] = -math.inf
        return scores_t, indices_t

    def ids_of(self, indices: torch.Tensor | np.ndarray) -> list[list[Any]]:
        """Map (Q, k) row indices from :meth:`search` to ids (``None`` for -1)."""
        rows = torch.as_tensor(indices)
        if rows.ndim != 2:
            raise GalleryIndexError(f"indices must be (Q, k), got {tuple(rows.shape)}")
        return [[self.ids[i] if i >= 0 else None for i in row] for row in rows.tolist()]

    # ------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the gallery to an ``.npz`` file atomically.

        The file holds ``embeddings`` (N, D) float32, ``ids`` (a unicode or int64
        array) and ``meta`` (JSON: format, version, normalize flag, id kind). It
        loads with ``allow_pickle=False``. Backend settings are not stored.
        """
        id_kind = "str" if self.ids and isinstance(self.ids[0], str) else "int"
        ids_arr = np.array(self.ids, dtype=str if id_kind == "str" else np.int64)
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "normalize": self.normalize,
            "id_kind": id_kind,
            "shape": list(self.embeddings.shape),
        }

        def write(handle) -> None:
            np.savez(
                handle,
                embeddings=self.embeddings.numpy(),
                ids=ids_arr,
                meta=np.array(json.dumps(meta)),
            )

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike, **options: Any) -> GalleryIndex:
        """Read a file written by :meth:`save`.

        Args:
            path: the ``.npz`` file.
            **options: constructor arguments other than ``embeddings``, ``ids`` and
                ``normalize`` (which come from the file), e.g. ``backend="faiss"``.

        Raises:
            GalleryIndexNotFoundError: ``path`` does not exist.
            GalleryIndexError: the file is not a readable gallery index.
        """
        for fixed in ("embeddings", "ids", "normalize"):
            if fixed in options:
                raise GalleryIndexError(
                    f"{fixed!r} is read from the file; do not pass it"
                )
        source = Path(path)
        if not source.exists():
            raise GalleryIndexNotFoundError(f"gallery index not found: {source}")
        if source.is_dir():
            raise GalleryIndexError(f"{source}: is a directory, expected an .npz file")
        try:
            with np.load(source, allow_pickle=False) as data:
                missing = {"embeddings", "ids", "meta"} - set(data.files)
                if missing:
                    raise GalleryIndexError(
                        f"{source}: not a gallery index (missing {sorted(missing)})"
                    )
                meta = json.loads(str(data["meta"]))
                embeddings = data["embeddings"]
                ids = data["ids"].tolist()
        except GalleryIndexError:
            raise
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
            raise GalleryIndexError(
                f"{source}: corrupt or truncated gallery index ({type(err).__name__}: "
                f"{err})"
            ) from err
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise GalleryIndexError(f"{source}: not a gallery index file (bad meta)")
        if meta.get("version") != _VERSION:
            raise GalleryIndexError(
                f"{source}: gallery index version {meta.get('version')!r} is not "
                f"supported (expected {_VERSION})"
            )
        if embeddings.dtype != np.float32 or list(embeddings.shape) != meta.get(
            "shape"
        ):
            raise GalleryIndexError(
                f"{source}: embeddings {embeddings.dtype} {embeddings.shape} do not match "
                f"the stored shape {meta.get('shape')}"
            )
        index = cls(embeddings, ids, normalize=False, **options)
        index.normalize = bool(meta.get("normalize", False))
        return index


def _order_ties(
    scores: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by score (descending), then by row index (ascending)."""
    missing = indices < 0
    key_idx = torch.where(missing, torch.iinfo(torch.int64).max, indices)
    by_idx = key_idx.argsort(dim=1, stable=True)
    scores, indices = scores.gather(1, by_idx), indices.gather(1, by_idx)
    by_score = scores.argsort(dim=1, descending=True, stable=True)
    return scores.gather(1, by_score), indices.gather(1, by_score)
