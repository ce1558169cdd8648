"""Tests for duet_lib.retrieval: chunked exact search, faiss backends, index files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duet_lib.retrieval import (
    FaissOptions,
    GalleryIndex,
    GalleryIndexError,
    GalleryIndexNotFoundError,
)


def _normed(rows: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def _clustered(
    n: int, q: int, dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A gallery around 20 centres and queries that are noisy copies of gallery rows."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, dim, generator=gen)
    gallery = centres[torch.randint(0, 20, (n,), generator=gen)]
    gallery = gallery + 0.5 * torch.randn(n, dim, generator=gen)
    picks = torch.randint(0, n, (q,), generator=gen)
    queries = gallery[picks] + 0.1 * torch.randn(q, dim, generator=gen)
    return gallery, queries


def _recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = [
        len(set(a) & set(b))
        for a, b in zip(found.tolist(), truth.tolist(), strict=True)
    ]
    return sum(hits) / truth.numel()


# ------------------------------------------------------------------ exact search
@pytest.mark.parametrize(
    ("chunk_size", "query_block"), [(7, 3), (64, 1000), (10_000, 5)]
)
def test_chunked_search_equals_full_matmul(chunk_size, query_block):
    gallery, queries = _normed(150, 16, 0), _normed(11, 16, 1)
    index = GalleryIndex(gallery, chunk_size=chunk_size, query_block=query_block)
    scores, rows = index.search(queries, k=12)
    full = queries @ gallery.T
    ref_scores, ref_rows = full.sort(dim=1, descending=True)
    assert rows.shape == (11, 12) and rows.dtype == torch.int64
    assert torch.equal(rows, ref_rows[:, :12])
    torch.testing.assert_close(scores, ref_scores[:, :12])


def test_normalize_option_gives_cosine_scores_and_scale_invariance():
    gallery, queries = _clustered(200, 9, 8, 2)
    index = GalleryIndex(gallery * 5.0, normalize=True)
    scores, rows = index.search(queries, k=5)
    scores_scaled, rows_scaled = index.search(queries * 0.01, k=5)
    assert torch.equal(rows, rows_scaled)
    torch.testing.assert_close(scores, scores_scaled)
    g = gallery / gallery.norm(dim=1, keepdim=True)
    q = queries / queries.norm(dim=1, keepdim=True)
    torch.testing.assert_close(scores[:, 0], (q @ g.T).max(dim=1).values)
    assert bool((scores <= 1.0 + 1e-6).all())


def test_exact_ties_are_ordered_by_row_index_in_both_backends():
    # Small integers keep every dot product exact, so duplicates tie exactly
    # whatever block or kernel computes them.
    gen = torch.Generator().manual_seed(3)
    base = torch.randint(-3, 4, (5, 8), generator=gen).float()
    gallery = torch.cat([base, base[[2, 0]]])  # rows 5, 6 duplicate rows 2, 0
    queries = torch.randint(-3, 4, (4, 8), generator=gen).float()
    for backend in ("torch", "faiss"):
        index = GalleryIndex(gallery, backend=backend, chunk_size=3)
        scores, rows = index.search(queries, k=7)
        for s, r in zip(scores.tolist(), rows.tolist(), strict=True):
            pos = {row: i for i, row in enumerate(r)}
            assert pos[2] + 1 == pos[5] and pos[0] + 1 == pos[6]
            assert s == sorted(s, reverse=True)


def test_index_owns_its_copy_of_the_gallery():
    gallery = np.asarray(_normed(30, 4, 5))
    index = GalleryIndex(gallery)
    before = index.search(gallery[:3], k=2)
    gallery[:] = 0.0
    after = index.search(np.asarray(_normed(30, 4, 5))[:3], k=2)
    assert torch.equal(before[1], after[1])


# --------------------------------------------------------------------------- faiss
@pytest.mark.parametrize("k", [1, 10, 300])
def test_faiss_flat_agrees_with_torch_exact(k):
    gallery, queries = _normed(300, 32, 6), _normed(25, 32, 7)
    s_torch, r_torch = GalleryIndex(gallery, chunk_size=64).search(queries, k)
    flat = GalleryIndex(gallery, backend="faiss", faiss_kind="flat")
    s_faiss, r_faiss = flat.search(queries, k)
    assert flat.is_exact
    assert torch.equal(r_torch, r_faiss)
    torch.testing.assert_close(s_torch, s_faiss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_faiss_finds_most_true_neighbours(kind):
    gallery, queries = _clustered(2000, 50, 32, 8)
    exact = GalleryIndex(gallery, normalize=True).search(queries, 10)[1]
    approx = GalleryIndex(gallery, normalize=True, backend="faiss", faiss_kind=kind)
    assert not approx.is_exact
    found = approx.search(queries, 10)[1]
    assert _recall(found, exact) >= 0.9


def test_ivf_probing_every_cell_is_exact():
    gallery, queries = _normed(500, 16, 9), _normed(20, 16, 10)
    options = FaissOptions(ivf_nlist=8, ivf_nprobe=8)
    ivf = GalleryIndex(
        gallery, backend="faiss", faiss_kind="ivf", faiss_options=options
    )
    exact = GalleryIndex(gallery).search(queries, 15)[1]
    assert torch.equal(ivf.search(queries, 15)[1], exact)


def test_ivf_with_one_probe_marks_missing_hits():
    gallery, queries = _normed(400, 16, 11), _normed(5, 16, 12)
    options = FaissOptions(ivf_nlist=10, ivf_nprobe=1)
    index = GalleryIndex(
        gallery, backend="faiss", faiss_kind="ivf", faiss_options=options
    )
    scores, rows = index.search(queries, k=200)
    missing = rows < 0
    assert bool(missing.any())
    assert bool(torch.isneginf(scores[missing]).all())
    assert bool(torch.isfinite(scores[~missing]).all())
    names = index.ids_of(rows)
    assert names[0].count(None) == int(missing[0].sum())


def test_faiss_options_are_validated():
    with pytest.raises(GalleryIndexError, match="ivf_nprobe"):
        FaissOptions(ivf_nprobe=0)
    with pytest.raises(GalleryIndexError, match="hnsw_m"):
        FaissOptions(hnsw_m=2.5)


# ---------------------------------------------------------------------------- I/O
@pytest.mark.parametrize("ids", [None, ["p-3", "p-1", "p-2", "p-0"] * 10, "ints"])
def test_save_load_round_trip(tmp_path, ids):
    gallery, queries = _clustered(40, 6, 8, 13)
    if ids == "ints":
        ids = list(range(100, 140))
    elif ids is not None:
        ids = [f"{name}-{i}" for i, name in enumerate(ids)]
    index = GalleryIndex(gallery, ids=ids, normalize=True)
    path = index.save(tmp_path / "sub" / "gallery.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["gallery.npz"]
    loaded = GalleryIndex.load(path, backend="faiss")
    assert loaded.normalize and loaded.backend == "faiss"
    assert loaded.ids == index.ids and type(loaded.ids[0]) is type(index.ids[0])
    torch.testing.assert_close(loaded.embeddings, index.embeddings, rtol=0, atol=0)
    a, b = index.search(queries, 5), loaded.search(queries, 5)
    assert index.ids_of(a[1]) == loaded.ids_of(b[1])
    with np.load(path, allow_pickle=False) as data:
        assert data["embeddings"].dtype == np.float32
        assert data["embeddings"].shape == (40, 8)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "version"])
def test_load_rejects_damaged_or_foreign_files(tmp_path, damage):
    path = tmp_path / "g.npz"
    GalleryIndex(_normed(10, 4, 14)).save(path)
    if damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "foreign":
        np.savez(path, embeddings=np.zeros((2, 2), np.float32))
    else:
        text = '{"format": "duet-gallery-index", "version": 99}'
        np.savez(
            path,
            embeddings=np.zeros((2, 2), np.float32),
            ids=np.arange(2),
            meta=np.array(text),
        )
    with pytest.raises(GalleryIndexError, match="g.npz"):
        GalleryIndex.load(path)


def test_load_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(GalleryIndexNotFoundError) as info:
        GalleryIndex.load(tmp_path / "absent.npz")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(GalleryIndexError, match="read from the file"):
        GalleryIndex.load(tmp_path / "absent.npz", normalize=True)


# ----------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embeddings": torch.zeros(3)}, "shape"),
        ({"embeddings": torch.tensor([[0.0, float("nan")]])}, "NaN"),
        ({"embeddings": torch.zeros(0, 4)}, "empty"),
        ({"embeddings": [[1.0, 2.0]]}, "tensor or numpy"),
        ({"ids": ["a", "a", "b"]}, "unique"),
        ({"ids": ["a", 1, "b"]}, "all strings or all integers"),
        ({"ids": ["a", "b"]}, "2 ids for 3"),
        ({"normalize": True, "embeddings": torch.zeros(3, 2)}, "zero norm"),
        ({"backend": "annoy"}, "unknown backend"),
        ({"faiss_kind": "pq"}, "unknown faiss_kind"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_constructor_rejects_bad_input(kwargs, message):
    args = {"embeddings": torch.eye(3)} | kwargs
    with pytest.raises(GalleryIndexError, match=message):
        GalleryIndex(**args)


def test_search_rejects_bad_queries_and_k():
    index = GalleryIndex(torch.eye(3))
    with pytest.raises(GalleryIndexError, match="exceeds the gallery size"):
        index.search(torch.eye(3), k=4)
    with pytest.raises(GalleryIndexError, match="width"):
        index.search(torch.zeros(2, 5), k=1)
    with pytest.raises(GalleryIndexError, match="positive int"):
        index.search(torch.eye(3), k=0)
    with pytest.raises(GalleryIndexError, match="shape"):
        index.search(torch.ones(3), k=1)
