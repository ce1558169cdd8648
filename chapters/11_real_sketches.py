# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11. Real sketches: QMUL-Chair-V2
#
# Everything so far ran on a procedural world; this pipeline chapter takes the same
# backbone, the same baseline and the same duet to 1,275 real free-hand chair sketches
# and reports fine-grained sketch-based image retrieval (FG-SBIR) on the real test
# split, next to chance and a published reference. It then looks at the queries that
# fail worst and measures what holds a tiny CLIP with no web-pretrained weights back on
# real data. Its defaults run on a CPU in a few minutes; the `paper` profile runs the
# same cells on ShoeV2 with ViT-B-32 and OpenAI weights on a GPU.

# %%
import dataclasses
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from duet_lib.baselines import (
    BaselineConfig,
    evaluate_bclip,
    train_bclip,
)
from duet_lib.book import chapter_card
from duet_lib.checkpoint import config_hash
from duet_lib.classic import (
    TEST_VIEWS,
    TRAIN_VIEWS,
    HogConfig,
    MetricConfig,
    hog_split,
    train_hog_metric,
    view_similarity,
)
from duet_lib.config import validate_params
from duet_lib.data.framing import content_box, framed
from duet_lib.data.loaders import DatasetNotFoundError, load_dataset
from duet_lib.data.records import SPLITS
from duet_lib.data.strokes import split_strokes
from duet_lib.failures import cumulative_match, failure_gallery, worst_queries
from duet_lib.losses import LOSS_NAMES, LossWeights
from duet_lib.metrics import (
    bootstrap_rate,
    chance_acc_at_k,
    ranks_pessimistic,
    retrieval_report,
)
from duet_lib.models.clip import count_parameters
from duet_lib.models.pretrain import chapter_backbone
from duet_lib.paths import data_dir, shared_chairv2
from duet_lib.plotting import use_book_style
from duet_lib.probes import photo_arrays, sketch_arrays
from duet_lib.repro import env_report, resolve_device, seed_everything
from duet_lib.results import resolve_output_dir, save_figure, save_metrics
from duet_lib.tasks import retrieval_task
from duet_lib.train import (
    TrainConfig,
    bundle_fingerprint,
    evaluate_duet,
    load_trained_duet,
    plot_history,
    run_dir,
    train_duet,
)

use_book_style()
display(Markdown(chapter_card("11_real_sketches")))

# %% tags=["parameters"]
profile = "teach"  # run profile: smoke, teach (default) or paper
seed = 0  # random seed of initialisation, data order, augmentation and the val split
device = "auto"  # auto, cpu, cuda or mps
dataset = "chairv2"  # real FG-SBIR data: chairv2 (default) or shoev2 (paper profile)
data_root = None  # dataset folder; None looks beside the book, then in DUET_DATA_DIR
model_name = "duet-tiny-conv-96"  # backbone; the paper profile uses ViT-B-32
pretrained = None  # None -> the book tiny CLIP of chapter 2; or a tag or weights file
subset_size = None  # keep at most this many photos per split with their sketches
max_steps = 100  # duet training steps
baseline_steps = 100  # B-CLIP training steps
deviation_blocks = 4  # experiment 3 also trains V's last k blocks (0 skips it)
deviation_steps = 300  # training steps of experiment 3
hog_steps = 400  # steps of the classic HOG reference, experiment 4 (0 skips it)
hog_seeds = 3  # metrics of the classic reference (seeds seed, seed + 1, ...), averaged
framing = 0.7  # crop sketch and photo to their content at this fill (None: as given)
test_shift = 2  # pixels of chapter 09's test-time shifted views (0 skips them)
batch_size = 32  # sketches per step
lr_visual = 1e-3  # learning rate of the LayerNorms of V, for the duet and B-CLIP
lr_modules = 1e-3  # learning rate of C_v2w, P^L and G
trip_form = "infonce"  # L_trip over the batch (our choice for the tiny CLIP); hinge in the paper
sketch_tokens = 8  # pseudo-words per sketch; the paper uses 1 (our choice)
token_scale = 3.0  # norm of each pseudo-word in units of a real word norm (our choice)
ema_decay = 0.95  # moving average of the weights (our choice, ch. 09); None: off
tau_trip = 0.15  # temperature of L_trip alone (our choice, ch. 09); None: 0.07
loss_weights = {"trip": 1, "comp": 1, "reg": 1, "tt": 0.25, "rt": 1, "rec": 1}  # λs
eval_every = 20  # validation every N steps; the best validation state is kept
text = None  # generic words after the sketch word; None -> a chair or a shoe
split = "test"  # split of the results table and the failure gallery
n_show = 6  # rows of the example and failure figures
quiet = False  # silence progress bars
output_dir = None  # None -> build/outputs/<chapter>/<profile>

# %%
validate_params(
    profile=profile,
    seed=seed,
    device=device,
    dataset=dataset,
    data_root=data_root,
    model_name=model_name,
    pretrained=pretrained,
    subset_size=subset_size,
    max_steps=max_steps,
    baseline_steps=baseline_steps,
    deviation_blocks=deviation_blocks,
    deviation_steps=deviation_steps,
    hog_steps=hog_steps,
    hog_seeds=hog_seeds,
    framing=framing,
    test_shift=test_shift,
    batch_size=batch_size,
    lr_visual=lr_visual,
    lr_modules=lr_modules,
    trip_form=trip_form,
    sketch_tokens=sketch_tokens,
    token_scale=token_scale,
    ema_decay=ema_decay,
    tau_trip=tau_trip,
    loss_weights=loss_weights,
    eval_every=eval_every,
    text=text,
    split=split,
    n_show=n_show,
    quiet=quiet,
    output_dir=output_dir,
)
if dataset not in ("chairv2", "shoev2"):
    raise ValueError(
        f"chapter 11 is about real sketches: dataset must be 'chairv2' or 'shoev2', "
        f"got {dataset!r} (chapter 09 trains on the procedural world)"
    )
rng = seed_everything(seed)
torch_device = resolve_device(device)
out_dir = resolve_output_dir(output_dir, "11_real_sketches", profile)
env = env_report(seed=seed, device=device, profile=profile)
query_text = text or {"chairv2": "a chair", "shoev2": "a shoe"}[dataset]
# The smoke profile sets max_steps only; B-CLIP then takes as few steps as the duet.
bclip_steps = min(baseline_steps, max_steps) if profile == "smoke" else baseline_steps
dev_steps = min(deviation_steps, max_steps) if profile == "smoke" else deviation_steps
hog_train_steps = min(hog_steps, max_steps) if profile == "smoke" else hog_steps
t_chapter = time.perf_counter()


def fresh_bundle():
    """A newly loaded backbone (a DuetModel freezes its bundle in place)."""
    return chapter_backbone(profile, model_name, pretrained, device)


# %% [markdown]
# ## The data
#
# QMUL-Chair-V2 (Yu et al., 2016; the V2 release by SketchX) pairs 400 product photos
# of chairs with 1,275 sketches drawn from memory by people who saw the photo briefly.
# We read the "Coordinate" layout the SketchX code uses: one pickle of stroke arrays
# keyed `/train/<photo>_<n>` or `/test/<photo>_<n>`, and `photo/<photo>.png`. The data
# has no stated licence and is for research only, so the book never ships it: you
# place it yourself, and the chapter stops at once with one message if it is missing.
# The published split is by photo (300 train, 100 test); we carve a **validation**
# split of 10 % of the training photos out of train, with a fixed seed, and choose
# every kept state on it.

# %%
if dataset == "chairv2":
    root = data_root or shared_chairv2()
    where = (
        f"{data_dir('chairv2')} (or ../shared/data/qmul-chairv2 beside the book, or "
        "the folder named by DUET_CHAIRV2_ROOT)"
    )
else:
    root = data_root or data_dir("shoev2")
    where = str(data_dir("shoev2"))
if root is None or not any(Path(root).glob("*_Coordinate")):
    raise DatasetNotFoundError(
        f"{dataset} not found{f' in {root}' if root else ''}: put its "
        "'<Name>_Coordinate' pickle and its photo/ "
        f"folder in {where}, or pass data_root=<folder>; data_manifests/{dataset}.yaml "
        "says where the data comes from"
    )
data = load_dataset("coordinate", root, seed=seed, quiet=True)
if subset_size is not None:
    # the first photos of each split (in key order) with all their sketches
    keep = {p for s in SPLITS for p in data.photo_ids(s)[:subset_size]}
    data = dataclasses.replace(
        data,
        sketches=[r for r in data.sketches if r.photo_id in keep],
        photos={p: path for p, path in data.photos.items() if p in keep},
        photo_split={p: s for p, s in data.photo_split.items() if p in keep},
    )
raw_data = data  # as the release frames it (the framing section compares the two)
if framing is not None:
    data = framed(raw_data, framing)  # sketches now; photos as they are loaded
# The trainers get the data WITHOUT its test split, so no choice they make can read it.
train_view = dataclasses.replace(
    data,
    sketches=[r for r in data.sketches if r.split != "test"],
    photo_split={p: s for p, s in data.photo_split.items() if s != "test"},
)
assert not train_view.sketches_in("test") and train_view.sketches_in("val")

rows = ["| split | sketches | photos | sketches per photo | strokes (median) |"]
rows.append("|---|---:|---:|---:|---:|")
for s in SPLITS:
    recs, photos_s = data.sketches_in(s), data.photo_ids(s)
    strokes = [len(split_strokes(r.strokes)) for r in recs]
    rows.append(
        f"| {s} | {len(recs)} | {len(photos_s)} | {len(recs) / len(photos_s):.2f} | "
        f"{np.median(strokes):.0f} |"
    )
display(Markdown("\n".join(rows)))
print(f"{len(data.skipped)} items skipped by the loader; root {root}")

# %% [markdown]
# A few pairs of the report split: each sketch (top) and the photo it was drawn from
# (bottom).

# %%
pairs = data.sketches_in(split)[:: max(1, len(data.sketches_in(split)) // n_show)]
pairs = pairs[:n_show]
sk_img = sketch_arrays(pairs, 128)
ph_img = photo_arrays(data, [r.photo_id for r in pairs], 128)
fig, axes = plt.subplots(2, len(pairs), figsize=(1.8 * len(pairs), 3.8), squeeze=False)
for i, rec in enumerate(pairs):
    axes[0, i].imshow(sk_img[i])
    axes[1, i].imshow(ph_img[i])
    axes[0, i].set_title(rec.photo_id, fontsize=7)
for ax in axes.ravel():
    ax.set_axis_off()
fig.suptitle(f"{dataset}: {split} sketches and their photos")
save_figure(fig, out_dir, "examples")
plt.show()

# %% [markdown]
# The sketches keep the chair's outline and a few parts (the back's shape, the legs,
# the armrests) in a few strokes, with distorted proportions and, at most, some
# hatching for texture; the
# photos are clean studio shots on white. Nothing here looks like the rendered world
# the backbone was pretrained on.
#
# ## Framing: one scale for both sides
#
# Look at the pairs of the release (`framing=None`) and a difference shows that has
# nothing to do with shape: a sketch covers less of its canvas than the chair covers
# of its photo. A matcher that
# compares the two position by position, a grid of HOG cells (experiment 4) or the
# token grid of our vision transformer, pays for that offset as if it were a
# difference of shape. `duet_lib.data.framing.framed` removes it: it crops each
# sketch to the box around its strokes and each photo to the box around its
# non-white pixels, and centres the box in a square so that its longer side spans
# `framing` of the side (the aspect ratio is kept: a wide sofa stays wide). Cropping
# to the object is a common preprocessing step in sketch-based retrieval; this form
# and the value 0.7 are our choices, made on the validation split (see below). The
# cell measures the side of each drawing's and each chair's box on the training
# pairs, before and after.

# %%
frame_fill = framing if framing is not None else 0.7
boxed = {
    "as released": raw_data,
    f"framed at {frame_fill}": data
    if framing is not None
    else framed(raw_data, frame_fill),
}
train_pairs = raw_data.sketches_in("train")[
    :: max(1, len(raw_data.sketches_in("train")) // 200)
]


def same_records(d, records):
    """The records of ``d`` with the keys of ``records``, in their order."""
    by_key = {r.key: r for r in d.sketches}
    return [by_key[r.key] for r in records]


box_side = {}
for name, d in boxed.items():
    recs = same_records(d, train_pairs)
    sides = [
        [max(b[2] - b[0], b[3] - b[1]) for b in map(content_box, arrays)]
        for arrays in (
            sketch_arrays(recs, 128),
            photo_arrays(d, [r.photo_id for r in recs], 128),
        )
    ]
    box_side[name] = np.array(sides, dtype=float)  # (2, pairs): sketch, photo
rows = [
    "| framing | sketch box side (px of 128) | photo box side | mean abs. difference |"
]
rows.append("|---|---:|---:|---:|")
box_gap = {name: float(np.abs(sk - ph).mean()) for name, (sk, ph) in box_side.items()}
for name, (sk, ph) in box_side.items():
    rows.append(
        f"| {name} | {sk.mean():.1f} ± {sk.std():.1f} | {ph.mean():.1f} ± {ph.std():.1f}"
        f" | {box_gap[name]:.1f} |"
    )
display(Markdown("\n".join(rows)))
released_gap, framed_gap = box_gap.values()
# framing puts both sides at one scale: the gap between them shrinks to a few pixels
assert framed_gap < min(4.0, 0.25 * released_gap), box_gap

show = train_pairs[:: max(1, len(train_pairs) // n_show)][:n_show]
fig, axes = plt.subplots(4, len(show), figsize=(1.8 * len(show), 7.4), squeeze=False)
for r, (name, d) in enumerate(boxed.items()):
    recs = same_records(d, show)
    for i, (sk, ph) in enumerate(
        zip(
            sketch_arrays(recs, 128),
            photo_arrays(d, [x.photo_id for x in recs], 128),
            strict=True,
        )
    ):
        axes[2 * r, i].imshow(sk)
        axes[2 * r + 1, i].imshow(ph)
    axes[2 * r, 0].set_title(name, fontsize=8, loc="left")
for ax in axes.ravel():
    ax.set_axis_off()
fig.suptitle("training pairs as released (top two rows) and framed (bottom two)")
save_figure(fig, out_dir, "framing")
plt.show()

# %% [markdown]
# As released, the sketches were scaled by their makers so that the longer side of
# every drawing spans about three quarters of its canvas (97 of 128 pixels, with
# almost no spread), while the chairs fill their photos more and unevenly (115 ± 10
# pixels); framed, both span the same share, and what still differs between a
# sketch and its photo is the drawing itself. Everything below (the backbone's
# queries, B-CLIP, the duet, the classic reference) sees the data framed with
# `framing`; set it to `None` to rerun the chapter on the release's framing.
#
# **How we chose 0.7** (validation only, 101 sketches of 30 photos). The classic
# reference of experiment 4, mean validation Acc@1 over three seeds: 0.52 as released,
# 0.55 / 0.60 / 0.59 / 0.57 framed at 0.6 / 0.7 / 0.8 / 0.9 (with the soft sketch
# lines chosen later in experiment 4: 0.54 as released, 0.63 / 0.65 / 0.61 at 0.6 /
# 0.7 / 0.8; with all of experiment 4's final settings: 0.59 as released, 0.64 /
# 0.77 / 0.64). The chapter's own runs, validation Acc@1 as released, framed at 0.7
# and at 0.8: B-CLIP 0.14 / 0.19 / 0.23, the duet's sketch-only query 0.18 / 0.17 /
# 0.21, experiment 3's deviation 0.35 / 0.36 / 0.31. No query lost more than one
# validation sketch to framing at 0.7; 0.7 and 0.8 tie on the sum, and we took 0.7,
# the better setting for the two best queries of the table (the deviation and the
# classic reference).
#
# ## The idea: the FG-SBIR protocol
#
# Each query sketch $q_i$ is ranked against the gallery, the unique photos paired with
# the split's sketches ($N = 100$ on the ChairV2 test split). With L2-normalised
# embeddings, the pessimistic rank of the true photo $g(i)$ is (Prior: the SketchX
# protocol, with ties counted against the query as in chapter 10)
#
# $$r_i = \#\{\,j : \cos(q_i, x_j) \ge \cos(q_i, x_{g(i)})\,\},\qquad
#   \mathrm{Acc@}K = \frac{1}{Q}\sum_{i=1}^{Q} [\,r_i \le K\,],\qquad
#   \text{chance} = \frac{K}{N}.$$
#
# We compare five queries (and two diagnostic rows) on the same gallery: the
# **zero-shot** image encoder $V(\text{sketch})$ of the embedded backbone, never
# trained on a human sketch (only on the world's clean line drawings); **B-CLIP**, the
# same encoder with its LayerNorms tuned by a triplet loss (after Sain et al., 2023);
# the duet's sketch-only query $s_L^T = T_t([P^L; s^w])$; the duet with
# **generic text**, $T_t([P^L; s^w; t^w])$ with $t$ = "a chair" (our choice of words:
# ChairV2 has no per-photo text, so the only honest text is one that says nothing
# about the instance; alternatives are a neutral phrase such as "drawn by hand", or
# hand-written descriptions of a few test photos); and the late fusion of $s_L^T$ with
# that text. As a **reference**, not reproduced here, we quote Triplet-SN (Yu et al.,
# 2016), a Sketch-a-Net triplet network that started from ImageNet pretraining: about
# 45 % Acc@1 and 84 % Acc@10 on ChairV2 as reported by the SketchX group. Our backbone
# has seen no web image at all.

# %% [markdown]
# ## Build it: zero-shot FG-SBIR from scratch
#
# We embed the split's sketches and gallery photos with the untouched backbone, take
# cosine similarities and count, for each sketch, the photos that score at least as
# high as its own.

# %%
bundle0 = fresh_bundle()  # zero-shot; train_bclip below tunes a copy of it
task = retrieval_task(
    data,
    split,
    image_size=bundle0.image_size,
    mean=bundle0.image_mean,
    std=bundle0.image_std,
)
n_query, n_gallery = len(task.records), len(task.gallery)


def chunks(n, size=128):
    """Index lists of consecutive chunks (the evaluators' batch size)."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


@torch.no_grad()
def embed_split(encode):
    """Unit embeddings of the split's sketches (Q, E) and gallery photos (N, E)."""
    sketches = [
        encode(task.data.sketch_tensor(idx).to(torch_device)) for idx in chunks(n_query)
    ]
    photos = [
        encode(task.data.photo_tensor([task.gallery[i] for i in idx]).to(torch_device))
        for idx in chunks(n_gallery)
    ]
    return (
        F.normalize(torch.cat(sketches).float(), dim=-1).cpu(),
        F.normalize(torch.cat(photos).float(), dim=-1).cpu(),
    )


bundle0.model.eval()
sketch_emb0, photo_emb0 = embed_split(bundle0.model.encode_image)
sim0 = sketch_emb0 @ photo_emb0.T  # (Q, N) cosine similarities
true0 = sim0[torch.arange(n_query), task.target]  # (Q,) score of the true photo
rank0 = (sim0 >= true0[:, None]).sum(dim=1)  # ties count against the query
acc0 = {k: float((rank0 <= k).double().mean()) for k in (1, 5, 10)}
print(f"{n_query} queries, gallery of {n_gallery}; zero-shot Acc@K {acc0}")
assert sim0.shape == (n_query, n_gallery)
assert int(rank0.min()) >= 1 and int(rank0.max()) <= n_gallery

# %% [markdown]
# ## Check against `duet_lib`
#
# The library's B-CLIP evaluator, given the untuned backbone, is exactly this zero-shot
# query; its pessimistic ranks and Acc@K must agree with ours, and
# `duet_lib.failures.worst_queries` must find the same worst ranks as sorting ours.

# %%
zero_shot = evaluate_bclip(bundle0, data, split)
torch.testing.assert_close(rank0, ranks_pessimistic(sim0, task.target))
torch.testing.assert_close(
    torch.tensor([acc0[k] for k in (1, 5, 10)], dtype=torch.float64),
    torch.tensor(
        [zero_shot[f"bclip_fg_acc@{k}"] for k in (1, 5, 10)], dtype=torch.float64
    ),
)
worst0 = worst_queries(sim0, task.target, k=n_show)
torch.testing.assert_close(
    torch.tensor([f.rank for f in worst0]),
    rank0.sort(descending=True).values[: len(worst0)],
)
print("zero-shot numbers agree with duet_lib")

# %% [markdown]
# ## Experiment 1: B-CLIP
#
# B-CLIP tunes only the LayerNorms of $V$ with a cosine triplet loss (margin 0.2), on
# augmented training sketches, with a random other photo as the negative (ChairV2 has
# no attributes for harder negatives). The state with the best validation Acc@1,
# checked every `eval_every` steps (and before training), is kept.

# %%
bclip_cfg = BaselineConfig(
    seed=seed,
    device=str(torch_device),
    quiet=quiet,
    steps=bclip_steps,
    batch_size=batch_size,
    eval_every=min(eval_every, bclip_steps),
    lr=lr_visual,
    negatives=("random",),
)
bclip_name = config_hash(
    {
        "bclip": bclip_cfg.identity("bclip"),
        "backbone": bundle_fingerprint(bundle0),
        "data": train_view.counts(),
    }
    | ({"framing": framing} if framing is not None else {})
)
t0 = time.perf_counter()
bclip = train_bclip(bundle0, train_view, bclip_cfg, out_dir / f"bclip-{bclip_name}")
bclip_s = time.perf_counter() - t0
bclip_test = evaluate_bclip(bclip.bundle, data, split)
print(
    f"B-CLIP {'trained' if bclip.trained_now else 'loaded'} in {bclip_s:.1f} s; kept "
    f"step {bclip.best_step} (val {bclip.select_metric} = {bclip.best_value:.3f}); "
    f"{split} Acc@1 {bclip_test['bclip_fg_acc@1']:.3f}"
)

# %% [markdown]
# ## Experiment 2: the duet on ChairV2
#
# The duet trains as in chapter 9: one stage, the six losses with the weights of
# `loss_weights`, LayerNorms of $V$ plus $C_{v2w}$, $P^L$ and $G$. Two choices differ
# for real data (ours): the negatives of $\mathcal{L}_{trip}$, $\mathcal{L}_{RT}$ and
# $\mathcal{L}_{comp}$ are random other photos, because the world's hard kinds ("same
# shape", "same appearance") need attributes ChairV2 lacks; and the kept state is the
# one with the best validation Acc@1 of the sketch-only query. The text side is never
# shown a word about chairs in training: the stand-in text is $\Delta = p^+ - s$.
#
# Two more choices come from chapter 9 (ours, made on validation, on the release's
# framing, before we framed the data). The state that is
# evaluated and kept is a moving average of the trained weights, here with decay 0.95
# (about the last 20 steps, one evaluation interval; chapter 9's 0.99 would average
# most of a 100-step run), and $\mathcal{L}_{trip}$ has its own temperature, 0.15.
# Against the same runs without them, validation Acc@1 of the sketch-only query rose
# from 0.158 to 0.178 for the duet and from 0.257 to 0.347 for experiment 3's deviation
# (101 validation sketches); `ema_decay=None, tau_trip=None` restores the earlier
# recipe. Two variations did not clear our bar for a change (a gain of at least two
# validation queries, since one query is within the curve's noise): decay 0.98 (validation 0.178 for the duet, 0.337 for
# the deviation) and 600 steps for the deviation (0.356). Their test rows, which chose
# nothing, show how noisy Acc@1 is on 100 photos: the deviation's sketch-only query
# read 12.1 % and 13.6 % there, against 9.0 % for the kept recipe (Acc@10 57.6 %, 57.3 %
# and 54.5 %). Read the table's Acc@1 column with a spread of a few points in mind.

# %%
cfg = TrainConfig(
    seed=seed,
    device=str(torch_device),
    max_steps=max_steps,
    batch_size=batch_size,
    eval_every=min(eval_every, max_steps),
    lr_visual=lr_visual,
    lr_modules=lr_modules,
    trip_form=trip_form,
    sketch_tokens=sketch_tokens,
    token_scale=token_scale,
    ema_decay=ema_decay,
    tau_trip=tau_trip,
    weights=LossWeights.from_dict(
        {name: float(loss_weights.get(name, 0.0)) for name in LOSS_NAMES}
    ),
    trip_negatives=("random",),
    comp_negatives=("random",),
)


def train_and_load(run_cfg, name):
    """Train (or load from ``out_dir``) one duet run; return it, its kept model and
    the seconds it took, with a one-line report."""
    bundle = fresh_bundle()
    t0 = time.perf_counter()
    run = train_duet(
        run_cfg,
        bundle,
        train_view,
        run_dir(out_dir, name, run_cfg, bundle, train_view),
        quiet=quiet,
    )
    seconds = time.perf_counter() - t0
    report = (
        f"{'trained' if run.trained_now else 'loaded'}: {run.step} steps in "
        f"{seconds:.1f} s; kept step {run.best_step} (val {run.select_metric} = "
        f"{run.best_value:.3f})"
    )
    return run, load_trained_duet(fresh_bundle(), run.best_checkpoint), seconds, report


result, model, duet_s, report = train_and_load(cfg, "duet")
print(f"duet {report}")

# %%
fig = plot_history(result.history, smooth=max(1, min(10, result.step // 10)))
save_figure(fig, out_dir, "duet_training")
fig

# %% [markdown]
# Left: the six unweighted loss terms and their total per step; right: validation
# Acc@1 of the sketch-only query at each evaluation, which picks the kept state. On
# about 850 training sketches the validation curve is noisy: with about 100 validation
# sketches, one query is worth about one percentage point.
#
# ## Experiment 3: a labelled deviation, more of $V$ trained
#
# The paper trains only the LayerNorms of $V$; that suits a backbone whose features
# already tell real chairs apart. Ours has never seen a real chair, so we suspect
# that the frozen weights are what holds it back. To test the suspicion we train the
# same duet once more with the last `deviation_blocks` transformer blocks of $V$
# trained as well (`unfreeze_last_visual_blocks` in `TrainConfig`), for
# `deviation_steps` steps, everything else unchanged and the kept state again chosen
# on validation. This is **our deviation, not the paper's method**; its rows in the
# table below say so. (We chose all four blocks and 300 steps on validation, on the
# release's framing: 300 steps
# with LayerNorms only reached validation Acc@10 of 59 to 68 % across its evaluations,
# with all four blocks trained 68 to 80 %; going on to 600 steps, at the same or a
# three times lower learning rate, stayed between 73 and 82 %, so the extra minutes
# bought nothing we could tell from noise on 101 validation sketches.)

# %%
if deviation_blocks:
    dev_cfg = dataclasses.replace(
        cfg,
        max_steps=dev_steps,
        eval_every=min(eval_every, dev_steps),
        unfreeze_last_visual_blocks=deviation_blocks,
    )
    dev_result, dev_model, dev_s, report = train_and_load(dev_cfg, "duet-deviation")
    n_trained = count_parameters(dev_model.clip.visual, trainable_only=True)
    n_visual = count_parameters(dev_model.clip.visual)
    print(
        f"deviation run ({deviation_blocks} blocks of V trained, {n_trained:,} of "
        f"{n_visual:,} visual weights) {report}"
    )
else:
    dev_result, dev_model, dev_s = None, None, 0.0
    print("experiment 3 skipped (deviation_blocks = 0)")

# %% [markdown]
# ## Experiment 4: a classic reference without deep features
#
# Is it the number of real sketches that holds these rows down, or the embedded
# backbone's features? A reference that uses the same sketches but no network at all
# separates the two. Before deep features, fine-grained SBIR compared histograms of
# oriented gradients (HOG; Dalal and Triggs, 2005) of sketch and photo and learned a
# ranking on top; Yu et al. (2016) report such a row, dense HOG with a ranking SVM,
# beside their Triplet-SN. Ours (`duet_lib.classic`, our construction, not theirs):
# HOG of the grayscale photo and of the sketch at 128 px in 16-pixel cells
# (1764 numbers each, scikit-image), one linear map to 256 dimensions shared by both,
# trained for `hog_steps` steps with an InfoNCE in which each training sketch must
# pick its photo among all training photos, and the state with the best validation
# Acc@1 kept. It takes about half a minute. We picked its settings on validation
# (three seeds each): cells of 8 or 16 pixels at 64-160 px, 64-512 output dimensions,
# temperatures 0.05-0.1 and weight decays up to 0.1 all reached a mean validation
# Acc@1 between 0.44 and 0.54 on the 30-photo validation gallery (as released), so we
# kept a small, plain one. What did matter, besides the framing above, is how the sketch is drawn:
# drawn at 128 px its lines are hard-edged, one or two pixels wide, while a photo's
# edges are soft; drawn at twice the size and resized down
# (`HogConfig.supersample=2`) they are soft as well, and the mean validation Acc@1 of
# the framed data rose from 0.60 to 0.65 (four times the size: 0.65 as well; thicker
# hard lines: 0.59). Edge maps of the photos instead of their grayscale (Canny at
# three scales, Sobel) did not help, and 18 orientation bins instead of 9 gained
# three points with one seed in three unchanged.
#
# Training on more views of the same sketches did help. `TRAIN_VIEWS` adds five
# copies of every training sketch and photo, transformed alike: mirrored, zoomed by
# 0.9 and by 1.1 about the centre, and both; each sketch must find its photo in its
# own view among all the copies. Mean validation Acc@1 over three seeds: 0.65 with
# the images as they are, 0.69 with the mirror alone, 0.73 with the six views; ten
# views (zooms 0.8-1.2) gave 0.72, and eighteen (rotations by ±6° as well) 0.73 again,
# so we kept six. Last, with the six views, thinner strokes (`HogConfig.line_width`
# 2 pixels of the 256-pixel canvas instead of the book's usual 3, one soft pixel at
# 128 px) raised it to 0.77 (1 pixel: 0.76). The output dimension (128 or 512: 0.75
# both) and the weight decay (0.05: 0.73) were left as they were; a temperature of
# 0.05 lost three points.
#
# Each of those choices rests on 101 validation sketches and 30 photos, where one
# query is a point. For the last two we used a sturdier protocol, still blind to the
# test split: five-fold cross-validation over the 300 training and validation photos
# (each fold holds out 60 photos with their sketches and trains on the other 240, for
# 300 steps), pooling the 952 held-out queries. *Test-time views.* A HOG cell is 16
# pixels wide, and a line the drawer put a few pixels away from the edge it traces
# lands in the next cell. Seeing sketch and photos in several views alike and
# averaging the cosine similarities over the views (`view_similarity`) tolerates
# that. Pooled Acc@1 with one metric: 0.505 on the images as they are, 0.539 averaged
# over the six training views, 0.566 with the images shifted by 6 pixels left, right,
# up and down as well; averaging the embeddings over the views instead of the
# similarities did worse (0.483 and 0.524). *Several metrics.* Averaging the
# similarities of metrics trained from three seeds: 0.513 on the images as they are,
# 0.563 over the six views, 0.583 with the four shifts and 0.602 with eight (the
# diagonals too). We kept the last, `TEST_VIEWS`: the six training views and shifts
# of 6 pixels in eight directions, fourteen in all, with `hog_seeds = 3` metrics.
# Shifts of 10 pixels (0.596) or training on shifted views too (0.605, three more
# queries of 952) were not worth a change. The three metrics take three times as long
# to train, about a minute in all.

# %%
if hog_train_steps:
    t0 = time.perf_counter()
    hog_cfg = HogConfig()
    hog_train = hog_split(data, "train", hog_cfg, views=TRAIN_VIEWS)
    hog_val = hog_split(data, "val", hog_cfg)
    hog_report = hog_split(
        data, split, hog_cfg, task.records, task.gallery, views=TEST_VIEWS
    )
    hog_models = [
        train_hog_metric(
            hog_train, hog_val, MetricConfig(max_steps=hog_train_steps, seed=seed + i)
        )
        for i in range(hog_seeds)
    ]
    hog_model = hog_models[0]
    sim_hog = view_similarity(hog_models, hog_report)
    hog_eval = {
        f"hog_{k}": v for k, v in retrieval_report(sim_hog, task.target).items()
    }
    hog_s = time.perf_counter() - t0
    for i, m in enumerate(hog_models):
        print(
            f"HOG metric, seed {seed + i}: kept step {m.best_step} of "
            f"{hog_train_steps} (validation Acc@1 "
            f"{max(h['val_acc@1'] for h in m.history):.3f})"
        )
    print(
        f"HOG reference: {hog_cfg.dim} numbers per image and view, "
        f"{len(TEST_VIEWS)} test views, {hog_seeds} metrics; {hog_s:.1f} s"
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for i, m in enumerate(hog_models):
        line = ax.plot(
            [h["step"] for h in m.history],
            [h["val_acc@1"] for h in m.history],
            marker=".",
            label=f"seed {seed + i}",
        )
        ax.axvline(m.best_step, color=line[0].get_color(), linestyle=":")
    ax.set_xlabel("step")
    ax.set_ylabel("validation Acc@1")
    ax.set_title("classic reference: dense HOG + linear metric (dotted: kept)")
    ax.legend()
    save_figure(fig, out_dir, "hog_validation")
    plt.show()
else:
    hog_model, sim_hog, hog_eval, hog_s = None, None, None, 0.0
    print("experiment 4 skipped (hog_steps = 0)")

# %% [markdown]
# How much do the views and the extra metrics add? The same report split, ranked
# by the first metric on the images as they are, by the first metric averaged over
# the fourteen views, and by all the metrics over the fourteen views (the results
# table below uses the last).

# %%
hog_ladder = {}
if hog_model:
    plain_view = hog_report.view(TEST_VIEWS.index((False, 1.0, 0.0, 0.0)))
    ladder_sims = {
        "one metric, the images as they are": view_similarity(hog_model, plain_view),
        f"one metric, {len(TEST_VIEWS)} views": view_similarity(hog_model, hog_report),
        f"{hog_seeds} metrics, {len(TEST_VIEWS)} views": sim_hog,
    }
    rows = ["| classic reference | Acc@1 % | Acc@10 % | MRR |", "|---|---|---|---|"]
    for name, sim in ladder_sims.items():
        hog_ladder[name] = retrieval_report(sim, task.target)
        r = hog_ladder[name]
        rows.append(
            f"| {name} | {100 * r['acc@1']:.1f} | {100 * r['acc@10']:.1f} "
            f"| {r['mrr']:.3f} |"
        )
    display(Markdown("\n".join(rows)))

# %% [markdown]
# The validation curves climb for a while and then fall: a linear map with
# 1764 × 256 weights memorises the 270 training photos (in six views) well before
# the last step, which is why the kept states are not the last ones. In our run the
# three metrics kept steps 170, 170 and 210 (validation Acc@1 0.772, 0.762 and 0.772,
# against 0.356 for experiment 3's deviation on the same 30 photos). On the test split
# the first metric on the images as they are ranks at 39.6 % / 82.0 % Acc@1 / Acc@10;
# the fourteen views take it to 44.9 % / 87.3 %, and the three metrics to
# **45.5 % / 87.0 %**, mean rank 5.2, in about a minute. With seeds 1 and 2 (metrics
# of seeds 1-3 and 2-4) the reference read 43.3 % / 86.4 % and 44.6 % / 87.6 % (mean
# 44.5 % / 87.0 %, a measurement after the choices, not used for them). The views
# moved the test split about as much as they moved the pooled held-out folds of the
# cross-validation (five to six points of Acc@1); the two extra metrics added less
# (0.6 points here, about two in the folds). On the release's framing, with one
# view and 3-pixel hard lines, the same reference read 27.2 % / 71.5 % (three seeds:
# 26.1 % / 73.6 %); framing alone took that run to 37.2 % / 80.8 %. Each test number
# is a single look with a standard error of about three points (below). The
# reference has about four times the best Acc@1 of the embedded backbone (11.8 % /
# 55.7 %, experiment 3's image side), from the same 850 training sketches, and
# stands level with the ImageNet-pretrained Triplet-SN at Acc@1 (about 45 %) and
# above it at Acc@10 (about 84 %), with no pretrained network at all.

# %% [markdown]
# ## Results
#
# We evaluate the kept duet on the report split with `duet_lib.train.evaluate_duet`,
# giving every sketch the same generic text, and recompute the similarity matrices of
# the duet and of B-CLIP ourselves for the curves and the failure gallery; the
# numbers must agree.

# %%
texts = [query_text] * n_query
duet_eval = evaluate_duet(model, data, split, texts=texts)
dev_eval = evaluate_duet(dev_model, data, split, texts=texts) if dev_model else None


@torch.no_grad()
def duet_similarities(model, with_text):
    """(Q, N) similarities of s_L^T (or of [P^L; s^w; t^w]) to the gallery photos."""
    model.eval()
    photo = torch.cat(
        [
            model.encode_photo(
                task.data.photo_tensor([task.gallery[i] for i in idx]).to(torch_device)
            )
            for idx in chunks(n_gallery)
        ]
    )
    sketch = torch.cat(
        [
            model.encode_sketch(task.data.sketch_tensor(idx).to(torch_device))
            for idx in chunks(n_query)
        ]
    )
    words = torch.cat([model.sketch_word(sketch[idx]) for idx in chunks(n_query)])
    parts = []
    for idx in chunks(n_query):
        spec = (
            model.spec_text(words[idx], [texts[i] for i in idx])
            if with_text
            else model.spec_sketch(words[idx])
        )
        parts.append(model.encode_queries({"q": spec})["q"])
    query = F.normalize(torch.cat(parts).float(), dim=-1)
    return (query @ F.normalize(photo.float(), dim=-1).T).cpu()


sim_duet = duet_similarities(model, with_text=False)
sim_text = duet_similarities(model, with_text=True)
sim_dev = duet_similarities(dev_model, with_text=False) if dev_model else None
bclip.bundle.model.eval()
sketch_emb_b, photo_emb_b = embed_split(bclip.bundle.model.encode_image)
sim_bclip = sketch_emb_b @ photo_emb_b.T
cross_checks = [
    (sim_duet, duet_eval, "fgsbir"),
    (sim_text, duet_eval, "duet"),
    (sim_bclip, bclip_test, "bclip_fg"),
]
if dev_model:
    cross_checks.append((sim_dev, dev_eval, "fgsbir"))
for sim, reference_metrics, key in cross_checks:
    mine = retrieval_report(sim, task.target)
    for k in (1, 5, 10):
        torch.testing.assert_close(
            mine[f"acc@{k}"], reference_metrics[f"{key}_acc@{k}"]
        )
print("our similarity matrices agree with evaluate_duet and evaluate_bclip")

# %%
reference = {"chairv2": (0.45, 0.84)}.get(dataset)  # Triplet-SN, reported, approx.
methods = [
    ("zero-shot V(sketch), embedded backbone", zero_shot, "bclip_fg"),
    ("B-CLIP: V with tuned LayerNorms", bclip_test, "bclip_fg"),
    ("duet: image side V'(sketch)", duet_eval, "visual"),
    ("duet: sketch only, s_L^T", duet_eval, "fgsbir"),
    (f"duet: sketch + '{query_text}'", duet_eval, "duet"),
    (f"late fusion: s_L^T + '{query_text}'", duet_eval, "fusion"),
    (f"text only: '{query_text}'", duet_eval, "text"),
]
if hog_model:
    methods.append(
        ("*reference, no network:* dense HOG + linear metric", hog_eval, "hog")
    )
if dev_model:
    methods += [
        (
            f"*deviation:* duet, {deviation_blocks} blocks of V trained: image side",
            dev_eval,
            "visual",
        ),
        (
            f"*deviation:* duet, {deviation_blocks} blocks of V trained: s_L^T",
            dev_eval,
            "fgsbir",
        ),
    ]
table = [f"| {split} query (N = {n_gallery}) | Acc@1 | Acc@5 | Acc@10 | mean rank |"]
table.append("|---|---:|---:|---:|---:|")
table.append(
    "| chance | "
    + " | ".join(f"{100 * chance_acc_at_k(n_gallery, k):.1f}" for k in (1, 5, 10))
    + f" | {(n_gallery + 1) / 2:.1f} |"
)
for label, m, prefix in methods:
    cells = [f"{100 * m[f'{prefix}_acc@{k}']:.1f}" for k in (1, 5, 10)]
    table.append(f"| {label} | {' | '.join(cells)} | {m[f'{prefix}_mean_rank']:.1f} |")
if reference:
    table.append(
        f"| *reference:* Triplet-SN, ImageNet-pretrained (Yu et al., 2016) | "
        f"*≈{100 * reference[0]:.0f}* | – | *≈{100 * reference[1]:.0f}* | – |"
    )
display(Markdown("\n".join(table)))

# %% [markdown]
# Acc@K in percent on the report split; the reference row is quoted, not run. The
# text-only row shows what the generic words alone can do (one query for every
# sketch, so it ranks every sketch's gallery the same way), and the image side
# $V'(\text{sketch})$ is the duet's tuned encoder used as a B-CLIP-style query.
#
# The cumulative match curves show the whole ranking, not three cut-offs.

# %%
curves = {
    "zero-shot V": sim0,
    "B-CLIP": sim_bclip,
    "duet s_L^T": sim_duet,
    f"duet + {query_text}": sim_text,
}
if dev_model:
    curves[f"deviation s_L^T ({deviation_blocks} blocks)"] = sim_dev
if hog_model:
    curves["dense HOG + linear metric"] = sim_hog
fig, ax = plt.subplots(figsize=(6.5, 4.2))
k_axis = np.arange(1, n_gallery + 1)
ax.plot(k_axis, 100 * k_axis / n_gallery, "k--", linewidth=1, label="chance")
ranks = {}
for name, sim in curves.items():
    ranks[name] = ranks_pessimistic(sim, task.target)
    ax.plot(k_axis, 100 * cumulative_match(ranks[name], n_gallery), label=name)
if reference:
    ax.plot(
        [1, 10],
        [100 * reference[0], 100 * reference[1]],
        "k*",
        markersize=10,
        label="Triplet-SN (reference)",
    )
ax.set_xscale("log")
ax.set_xlabel("K (photos inspected, log scale)")
ax.set_ylabel("Acc@K (% of queries)")
ax.set_title(f"{dataset} {split}: cumulative match, gallery of {n_gallery}")
ax.legend(loc="lower right")
save_figure(fig, out_dir, "cumulative_match")
plt.show()

# %% [markdown]
# Each curve gives the share of sketches whose photo is among the first K; the dashed
# line is a random ranking. The zero-shot curve's lead over the dashed line is what
# transfers from the world without any real sketch; the trained curves' lead over the
# zero-shot curve, where there is one, is what training on about 850 real sketches
# bought; the distance to the reference stars is what the missing pretraining costs.
#
# How far apart must two rows be? The 323 test sketches depict only 100 photos, and
# sketches of one photo share its difficulty, so the photos are the independent
# draws. The cell below gives Acc@1 and Acc@10 a standard error over the test photos
# (a bootstrap over photos, `bootstrap_rate`, as chapters 09 and 10 do over shapes).

# %%
rows = ["| query | Acc@1 % (± SE) | Acc@10 % (± SE) |", "|---|---:|---:|"]
photo_of = [task.gallery[t] for t in task.target.tolist()]
photo_se = {}
for name, r in ranks.items():
    at1 = bootstrap_rate(r <= 1, photo_of)
    at10 = bootstrap_rate(r <= 10, photo_of)
    photo_se[name] = (at1, at10)
    rows.append(
        f"| {name} | {100 * at1['rate']:.1f} ± {100 * at1['se']:.1f} "
        f"| {100 * at10['rate']:.1f} ± {100 * at10['se']:.1f} |"
    )
display(Markdown("\n".join(rows)))

# %% [markdown]
# In our run the standard errors are 1.5-3 points at Acc@1 and about 2.5-3.5 at
# Acc@10: rows within a few points of each other (zero-shot, B-CLIP and the duet's
# LayerNorm-only queries) are not told apart by 100 photos, while the classic
# reference's lead over the best curve of the embedded backbone (45.5 ± 3.3 % against
# 8.4 ± 1.6 % at Acc@1) is about ten standard errors wide. Against the quoted
# Triplet-SN, our 45.5 ± 3.3 % is level with 45 % and 87.0 ± 2.0 % one and a half
# standard errors above 84 %: on 100 test photos the two are not told apart at Acc@1;
# the quoted row has its own sampling error, which we do not know.
#
# ### Test-time shifts (chapter 09's addition)
#
# Chapter 09 found on the world's validation split that seeing every sketch and photo
# in nine views, as they are and shifted by `test_shift` pixels in eight directions,
# and averaging the similarities helps the duet's queries (`evaluate_duet(...,
# test_shift=k)`); the classic reference above already averages its own fourteen
# views. Here the duet's and the deviation's queries are ranked in the nine views on
# ChairV2's validation split and on the report split, with the weights kept above;
# the table above stays on the paper's protocol.

# %%
shift_acc = {}  # (model, query, split) -> (as they are, nine views) Acc@1
if test_shift:
    t0 = time.perf_counter()
    # the report split as it is was ranked above (duet_eval, dev_eval)
    shift_models = {"duet": (model, duet_eval), "deviation": (dev_model, dev_eval)}
    shift_queries = {"fgsbir": "s_L^T", "visual": "image side V'(sketch)"}
    lines = [
        "| query, Acc@1 % | val, as they are | val, 9 views "
        f"| {split}, as they are | {split}, 9 views |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (m, report_eval) in shift_models.items():
        if m is None:
            continue
        evals = {}
        for sp in ("val", split):
            words = [query_text] * len(data.sketches_in(sp))
            plain = (
                report_eval if sp == split else evaluate_duet(m, data, sp, texts=words)
            )
            views = evaluate_duet(m, data, sp, texts=words, test_shift=test_shift)
            evals[sp] = (plain, views)
        for key, label in shift_queries.items():
            cells = []
            for sp in ("val", split):
                pair = tuple(e[f"{key}_acc@1"] for e in evals[sp])
                shift_acc[(name, key, sp)] = pair
                cells += [f"{100 * v:.1f}" for v in pair]
            lines.append(f"| {name}: {label} | {' | '.join(cells)} |")
    display(Markdown("\n".join(lines)))
    print(f"shifted evaluations in {time.perf_counter() - t0:.1f} s")
else:
    print("test-time shifts skipped (test_shift = 0)")

# %% [markdown]
# In our run (21 s for the eight evaluations) the views lift three of the four queries
# on validation by 2 to 4 points (the deviation's image side stays at 36.6 %) and three
# of the four on the test split: the duet's $s_L^T$ 6.2 → 8.7 %, its image side
# 8.4 → 9.3 %, the deviation's $s_L^T$ 8.4 → 12.1 %, while the deviation's image side,
# the best row as they are, falls 11.8 → 10.5 %. Each change is within one or two of
# the standard errors above, and the best row stays at about a quarter of the classic
# reference's 45.5 %. Where the lines of a real sketch fall is a small part of what
# holds the embedded backbone back on real chairs; what its features carry is the
# large part (next section but one).
#
# ## Failure gallery
#
# The sketches whose true photo the duet's sketch-only query ranks worst, with the
# photos it put first.

# %%
fails = worst_queries(sim_duet, task.target, k=n_show, top=3)
fig = failure_gallery(
    fails,
    sketch_arrays([task.records[f.query] for f in fails], 128),
    photo_arrays(data, task.gallery, 128),
    n_gallery=n_gallery,
    title=f"worst {len(fails)} {split} queries of the duet (s_L^T)",
)
save_figure(fig, out_dir, "failure_gallery")
fig

# %% [markdown]
# Each row is one sketch, its true photo (green frame) with the rank the duet gave it,
# and the three photos ranked first. Several sketches of one photo often fail
# together, so the failures are mostly about photos, not drawers. Two patterns stood
# out in a shorter run we inspected (20 duet steps); look for them in yours: wide objects (sofas, benches) whose sketches fill the canvas
# retrieve narrow stools and side tables, so the query has kept neither width nor
# proportion; and dense hatching, which a drawer uses for a wire-mesh or woven chair,
# retrieves solid, brightly coloured chairs, because the backbone has never learned
# that many crossing strokes mean a see-through texture.
#
# ## What limits the embedded backbone on real sketches
#
# Three numbers per encoder help read the table. If the backbone saw all real photos
# as alike, their embeddings would crowd together (a high mean cosine between
# different photos; likewise for sketches). How far a sketch's own photo stands out
# from the rest we measure as a z-score: the mean cosine of true sketch–photo pairs
# minus that of all other pairs, in units of the other pairs' standard deviation
# (0 means the true photo is no closer than any other; the unit makes encoders with
# different cosine scales comparable).

# %%
true_pair = torch.zeros_like(sim0, dtype=torch.bool)  # (Q, N), True at (i, g(i))
true_pair[torch.arange(n_query), task.target] = True


def spread(emb):
    """Mean cosine between different rows of unit embeddings (N, E)."""
    g = emb @ emb.T
    n = len(emb)
    return float((g.sum() - g.diagonal().sum()) / (n * (n - 1)))


def pair_z(sim):
    """(mean true-pair cosine - mean other cosine) / std of the other cosines."""
    true, other = sim[true_pair], sim[~true_pair]
    return float((true.mean() - other.mean()) / other.std())


diag = {
    "zero-shot V": (spread(photo_emb0), spread(sketch_emb0), pair_z(sim0)),
    "B-CLIP": (spread(photo_emb_b), spread(sketch_emb_b), pair_z(sim_bclip)),
}
rows = ["| encoder | photo–photo cos | sketch–sketch cos | true-pair z-score |"]
rows.append("|---|---:|---:|---:|")
for name, (pp, ss, z) in diag.items():
    rows.append(f"| {name} | {pp:.3f} | {ss:.3f} | {z:+.2f} |")
rows.append(f"| duet s_L^T against V'(photo) | – | – | {pair_z(sim_duet):+.2f} |")
if dev_model:
    rows.append(
        f"| deviation s_L^T against its V'(photo) | – | – | {pair_z(sim_dev):+.2f} |"
    )
display(Markdown("\n".join(rows)))

best_name = max(curves, key=lambda n: float((ranks[n] <= 1).double().mean()))
best_acc1 = float((ranks[best_name] <= 1).double().mean())
best_acc10 = float((ranks[best_name] <= 10).double().mean())
ref_text = (
    f"; the ImageNet-pretrained Triplet-SN reference is about {100 * reference[0]:.0f}"
    f" % / {100 * reference[1]:.0f} %"
    if reference
    else ""
)
display(
    Markdown(
        f"On this run the best query, **{best_name}**, reaches Acc@1 "
        f"{100 * best_acc1:.1f} % and Acc@10 {100 * best_acc10:.1f} % on the "
        f"{split} split, against chance {100 / n_gallery:.1f} % / "
        f"{100 * min(10, n_gallery) / n_gallery:.1f} %{ref_text}."
    )
)

# %% [markdown]
# Read with the table above, the limits are these (our assessment):
#
# - **Domain gap.** The tiny CLIP of chapter 2 was pretrained on a few thousand
#   rendered world objects, their captions and clean line drawings. It has never seen
#   a photographed chair, a real material or a human stroke. Its outline features
#   transfer in part (zero-shot retrieval is above chance), but little of what tells
#   one chair from a similar one survives: read the z-scores above.
# - **Little to tune.** Following the paper, only the LayerNorms of $V$ adapt (a
#   small fraction of its weights); they rescale features the backbone already has
#   and cannot learn new ones. Sain et al. (2023) found that enough for web-pretrained
#   CLIP. In our run (the book's two-phase backbone, framed data) no tuned state of
#   B-CLIP beat its untrained start on validation (Acc@1 0.19 before the first step),
#   so the kept B-CLIP is the zero-shot encoder (6.2 % / 35.0 %, true-pair z-score
#   +0.91); on the release's framing it kept a state after 40 steps that barely moved
#   the embeddings (z-score +0.84 → +0.87) and ranked the test photos no better at the
#   top. Experiment 3 measured how much of a brake this is: with all four blocks of
#   $V$ trained (86 % of its weights, our deviation), the sketch-only query reached
#   8.4 % / 56.3 % (Acc@1 / Acc@10) against 6.2 % / 34.4 % with LayerNorms only, its
#   mean rank fell from 25.5 to 14.3 and its true-pair z-score rose from +0.91 to
#   +1.37; its image side reached 11.8 % / 55.7 %. (On the release's framing the same
#   run gave 9.0 % / 54.5 % and mean rank 15.4, its image side 8.4 % / 52.3 %. At
#   Acc@1 one test query is 0.3 points, so rows within a point or two are not told
#   apart.) Freezing costs something, then, but unfreezing closes only a small part
#   of the gap to the reference.
# - **The features, not the number of sketches.** Experiment 4 trains nothing but a
#   linear map, on gradient histograms that owe nothing to any pretraining, from the
#   same 850 sketches, and ranks the test photos at 45.5 % / 87.0 % (three seeds: 44.5
#   % / 87.0 % on the mean) against 11.8 % / 55.7 % for the best query of our
#   backbone. So the sketches do hold enough to reach the reference's level; what our
#   backbone extracts from real chairs at 96 px is what loses it.
#   HOG keeps where each edge lies and which way it turns, cell by cell, at 128 px;
#   the tiny CLIP's visual tower learned to summarise rendered world objects into a
#   few hundred numbers that say category, colour and coarse outline, and its fine
#   spatial detail does not survive on photographed chairs. Framing shows the same
#   thing from the other side: it gave the position-by-position HOG ten points at
#   Acc@1 on the test split and the backbone's queries nothing we can tell from
#   noise; so do the test-time views, which tolerate a few pixels of misplaced line
#   and gave HOG five more.
# - **A text tower that knows the world's words.** The duet's queries come out of the
#   text tower, which learned its language from the world's templated captions; a few
#   minutes of training must route real-chair identity through it, and with so few
#   steps its sketch-only query can trail the image-side query.
# - **Resolution and data.** Sketches and photos enter at 96 px, where thin legs and
#   back slats blur, and about 850 training sketches are few for learning features anew.
# - **What the reference had.** Triplet-SN starts from a network pretrained on
#   ImageNet and works at more than twice our resolution; the duet in the paper
#   starts from CLIP trained on 400 million web image–text pairs. Our backbone is
#   far below even the classic reference of experiment 4, so the reference's 45 % is
#   not a target our CPU budget can meet with it; the classic reference itself, with
#   framed data and test-time views, meets it (45.5 % / 87.0 % in our run, 44.5 % /
#   87.0 % over three seeds) without any pretraining at all.
#
# The generic text adds little or nothing: "a chair" is true of every photo, so the
# composed query can only re-weight what the sketch word already says.
#
# ## Checks
#
# Claims of this chapter: the metrics are well-formed rates on the full report
# gallery; model selection read only the validation split; in the teach profile,
# training on real sketches beats chance by a clear factor, and the deviation run of
# experiment 3 ranks better than the paper's LayerNorm-only recipe (mean reciprocal
# rank of the sketch-only query), and the classic reference of experiment 4 ranks
# better than every query of the embedded backbone, with at least twice the best
# Acc@1, and the test-time views leave every backbone query below half of its Acc@1.
# (The framing section checked its own claim where it made it.)

# %%
n_val_photos = len(data.photo_ids("val"))
reports = {
    "zero_shot": (zero_shot, "bclip_fg"),
    "bclip": (bclip_test, "bclip_fg"),
    "duet_visual": (duet_eval, "visual"),
    "duet_sketch": (duet_eval, "fgsbir"),
    "duet_text": (duet_eval, "duet"),
    "fusion": (duet_eval, "fusion"),
    "text_only": (duet_eval, "text"),
}
if dev_model:
    reports |= {"dev_visual": (dev_eval, "visual"), "dev_sketch": (dev_eval, "fgsbir")}
if hog_model:
    reports["hog"] = (hog_eval, "hog")
for name, (m, prefix) in reports.items():
    for k in (1, 5, 10):
        assert 0.0 <= m[f"{prefix}_acc@{k}"] <= 1.0, (name, k)
    assert m[f"{prefix}_acc@1"] <= m[f"{prefix}_acc@5"] <= m[f"{prefix}_acc@10"]
    assert m[f"{prefix}_n_gallery"] == len(data.photo_ids(split)) == n_gallery, name
    assert m[f"{prefix}_n_queries"] == len(data.sketches_in(split)), name
# Model selection never read the test split: the trainers never held it, and every
# validation they ran ranked the validation gallery.
if hog_model:
    assert set(hog_train.gallery) == set(data.photo_ids("train"))
    assert hog_val.gallery == data.photo_ids("val") != hog_report.gallery
    assert hog_model.best_step <= hog_train_steps
assert set(train_view.photo_split).isdisjoint(data.photo_ids("test"))
assert all(r["fgsbir_n_gallery"] == n_val_photos for r in result.history["val"])
assert all(r["bclip_fg_n_gallery"] == n_val_photos for r in bclip.history["val"])
if dev_model:
    assert all(r["fgsbir_n_gallery"] == n_val_photos for r in dev_result.history["val"])
    # the deviation really trained more of V than the paper's recipe
    assert n_trained > count_parameters(model.clip.visual, trainable_only=True)
assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
assert all(np.isfinite(r["total"]) for r in result.history["train"])
trained_mrr = max(duet_eval["fgsbir_mrr"], bclip_test["bclip_fg_mrr"])
chance_mrr = float(np.mean(1.0 / np.arange(1, n_gallery + 1)))
if profile == "teach":
    trained_acc10 = max(duet_eval["fgsbir_acc@10"], bclip_test["bclip_fg_acc@10"])
    # a clear factor: at least 1.5 times chance, at Acc@10 and in mean reciprocal rank
    assert trained_acc10 >= 1.5 * chance_acc_at_k(n_gallery, 10), trained_acc10
    assert trained_mrr >= 1.5 * chance_mrr, (trained_mrr, chance_mrr)
    if dev_model:
        assert dev_eval["fgsbir_mrr"] > duet_eval["fgsbir_mrr"], (
            dev_eval["fgsbir_mrr"],
            duet_eval["fgsbir_mrr"],
        )
    if hog_model:
        # the classic reference, which owes nothing to pretraining, ranks better
        # than every query of the embedded backbone (experiment 4)
        backbone_best = max(
            m[f"{p}_mrr"] for n, (m, p) in reports.items() if n != "hog"
        )
        assert hog_eval["hog_mrr"] > backbone_best, (hog_eval["hog_mrr"], backbone_best)
        # ... and by a wide margin at the top: at least twice the best Acc@1
        backbone_best1 = max(
            m[f"{p}_acc@1"] for n, (m, p) in reports.items() if n != "hog"
        )
        assert hog_eval["hog_acc@1"] >= 2 * backbone_best1, (
            hog_eval["hog_acc@1"],
            backbone_best1,
        )
        # averaging over the test-time views and the metrics ranks better than
        # one metric on the images as they are (0.533 -> 0.593 MRR in our run)
        ladder = list(hog_ladder.values())
        assert ladder[-1]["mrr"] >= ladder[0]["mrr"] + 0.02, hog_ladder
    if shift_acc and hog_model:
        # the nine views move the backbone's queries by a few points at most: every
        # one of them stays below half the classic reference's Acc@1 in them too
        best_shifted = max(v[1] for (_, _, sp), v in shift_acc.items() if sp == split)
        assert best_shifted < hog_eval["hog_acc@1"] / 2, (best_shifted, hog_eval)

metrics = {"n_gallery": n_gallery, "n_queries": n_query, "split": split}
for name, (m, prefix) in reports.items():
    for key in ("acc@1", "acc@5", "acc@10", "mrr", "mean_rank"):
        metrics[f"{name}_{key}"] = m[f"{prefix}_{key}"]
metrics |= {
    "chance@1": chance_acc_at_k(n_gallery, 1),
    "chance@10": chance_acc_at_k(n_gallery, 10),
    "chance_mrr": chance_mrr,
    "val_duet_acc@1": result.best_value,
    "val_bclip_acc@1": bclip.best_value,
    "duet_steps": result.step,
    "bclip_steps": bclip_steps,
    "deviation_blocks": deviation_blocks,
    "deviation_steps": dev_result.step if dev_result else 0,
    "val_deviation_acc@1": dev_result.best_value if dev_result else None,
    "hog_steps": hog_model.best_step if hog_model else 0,
    "hog_metrics": len(hog_models) if hog_model else 0,
    **{
        f"hog_ladder_{i}_{k}": r[k]
        for i, r in enumerate(hog_ladder.values())
        for k in ("acc@1", "acc@10", "mrr")
    },
    "val_hog_acc@1": max(h["val_acc@1"] for h in hog_model.history)
    if hog_model
    else None,
    **{
        f"{'val' if sp == 'val' else 'report'}_{name}_{key}_{kind}_acc@1": pair[i]
        for (name, key, sp), pair in shift_acc.items()
        for i, kind in enumerate(("plain", "shifted"))
    },
    "train_s": round(duet_s + bclip_s + dev_s + hog_s, 1),
    "chapter_s": round(time.perf_counter() - t_chapter, 1),
}
save_metrics(out_dir, metrics)
metrics

# %% [markdown]
# ## Summary
#
# - On real ChairV2 the book's backbone, with no web-pretrained weights, retrieved above
#   chance zero-shot in our runs (its outline features transfer in part), but far
#   below the ImageNet-pretrained Triplet-SN reference of about 45 % / 84 %.
# - B-CLIP and the duet, trained for a few CPU minutes on about 850 sketches with only
#   LayerNorms (and the duet's small modules) free, end above chance (the checks ask
#   the better of them for 1.5 times chance) but close little of the gap to the
#   reference; report what you reach, not the target.
# - Training all four blocks of $V$ as well (experiment 3, a labelled deviation from
#   the paper) lifted the sketch-only query to 8.4 % / 56.3 % and its image side to
#   11.8 % / 55.7 % in our run, the best rows of the backbone and still far from the
#   reference: frozen weights are one brake, the missing pretraining the larger one.
# - The release draws every sketch at one scale, smaller than the chairs in their
#   photos; framing both sides to their content (our choice, 0.7 of the side, made on
#   validation) gave position-by-position matching a fair comparison.
# - A classic reference with no network at all, dense HOG with a linear metric learned
#   from the same sketches (experiment 4), reached 45.5 % / 87.0 % in our run (44.5 % /
#   87.0 % over three seeds; 27.2 % / 71.5 % on the release's framing, with one view,
#   one metric and hard sketch lines), about four times our backbone's best Acc@1 and
#   level with the ImageNet-pretrained Triplet-SN: on real chairs the embedded
#   backbone's features, not the number of sketches, are what hold the book's rows
#   down. Averaging over fourteen views of sketch and photos and over three metrics,
#   chosen by cross-validation on the training photos, gave it its last six points.
# - Chapter 09's test-time shifts move the backbone's ChairV2 rows by a few points
#   either way (the deviation's $s_L^T$ 8.4 → 12.1 %, its image side 11.8 → 10.5 %),
#   within the standard errors of 100 test photos: not the lever the classic
#   reference's views were.
# - A generic text such as "a chair" carries no instance information and barely moves
#   the composed query; the duet's gain needs words about the target.
# - In a short run we inspected, the worst failures lost proportion (wide sofas
#   retrieved stools) and misread hatching as solid shape: the backbone sees coarse
#   outline, not what identifies an instance.
# - Model selection used a validation split carved from train; the test split was
#   handed to nothing but the final evaluation.
#
# ## Exercises
#
# 1. Set `text` to a neutral phrase such as "drawn by hand" and then to a wrong word
#    such as "a shoe". Which rows of the table move, and why?
# 2. Set `deviation_blocks` to 1 and then 2 (experiment 3 trains the last k blocks of
#    $V$). How much of experiment 3's gain needs the early blocks, and how do the
#    validation curves of the three runs differ?
# 3. Plot each test query's rank against its number of strokes. Do sparse sketches
#    fail more often?
# 4. Write three words of description for ten test photos and use them as `texts`
#    in `evaluate_duet`. Does instance text help where generic text did not?
# 5. (Open) With the `paper` profile on a GPU (ViT-B-32, OpenAI weights, ShoeV2),
#    compare the same table. Which limit listed above disappears first?
# 6. Experiment 4 with `HogConfig(cell=8)` and with images of 64 px: how much of the
#    classic reference's lead is resolution? Then add the HOG similarity matrix to the
#    deviation's (each divided by its standard deviation): do the two rank
#    differently enough for the sum to beat both?
# 7. Run the chapter with `framing=None` and with `framing=0.9`. Which rows move
#    with the framing, and why does the classic reference care more than the
#    backbone's queries? Look at the framing figure with each setting.
# 8. Rebuild experiment 4's choice of test-time views by cross-validation: split the
#    training and validation photos into five folds with their sketches, train on
#    four (`hog_split` with `TRAIN_VIEWS`, then `HogSplit` rows of those photos), and
#    rank the fifth with `view_similarity` over `TRAIN_VIEWS`, over `TEST_VIEWS`, and
#    over shifts of your own. Which views pay, and does a shift of 12 pixels (most of
#    a cell) still help?
#
# ## References
#
# - Koley, S., Bhunia, A. K., Sain, A., Chowdhury, P. N., Xiang, T., Song, Y.-Z.
#   *You'll Never Walk Alone: A Sketch and Text Duet for Fine-Grained Image Retrieval.*
#   CVPR 2024.
# - Yu, Q., Liu, F., Song, Y.-Z., Xiang, T., Hospedales, T. M., Loy, C. C. *Sketch Me
#   That Shoe.* CVPR 2016 (Triplet-SN, QMUL shoe and chair data).
# - SketchX, QMUL-Shoe-V2 and QMUL-Chair-V2 releases (University of Surrey / Queen
#   Mary University of London).
# - Sain, A. et al. *CLIP for All Things Zero-Shot Sketch-Based Image Retrieval,
#   Fine-Grained or Not.* CVPR 2023 (LayerNorm tuning of CLIP for FG-SBIR).
# - Radford, A. et al. *Learning Transferable Visual Models From Natural Language
#   Supervision.* ICML 2021.
# - Dalal, N., Triggs, B. *Histograms of Oriented Gradients for Human Detection.*
#   CVPR 2005 (HOG; experiment 4 uses scikit-image's implementation).
