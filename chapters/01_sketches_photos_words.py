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
# # 1. Sketches, photos and words
#
# Fine-grained retrieval needs data in which a sketch pins down one *instance* and words
# pin down what the sketch cannot show. This chapter builds that data: a procedural world
# of shoe- and chair-like objects with photos, free-hand-style stroke sketches and
# captions, written in the same layout as the real QMUL-V2 benchmarks and read by the same
# loader.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from duet_lib.book import chapter_card
from duet_lib.config import validate_params
from duet_lib.data.loaders import load_dataset, load_image
from duet_lib.data.safe_pickle import UnsafePickleError, safe_load
from duet_lib.data.strokes import rasterize, split_strokes
from duet_lib.data.world import (
    WorldConfig,
    duet_ambiguity,
    duet_gallery,
    ensure_world,
    load_world,
    neighbour_grid,
    preview_world,
    reference_accuracy_world,
    shape_from_attributes,
)
from duet_lib.paths import shared_chairv2
from duet_lib.plotting import use_book_style
from duet_lib.repro import env_report, seed_everything
from duet_lib.results import resolve_output_dir, save_figure, save_metrics

use_book_style()
display(Markdown(chapter_card("01_sketches_photos_words")))

# %% tags=["parameters"]
profile = "teach"  # run profile: smoke, teach (default) or paper
seed = 0  # random seed
device = "auto"  # 'auto', 'cpu', 'cuda' or 'mps'
world_size = "teach"  # size preset of the procedural world: smoke or teach
difficulty = 0.0  # spread knob of the world's shapes: 0 (easy) .. 1 (hard)
image_size = 96  # the model's input side in pixels (teach profile)
data_root = None  # real QMUL-Chair-V2 folder; None -> look beside the book
n_show = 6  # rows in the example figures
output_dir = None  # None -> build/outputs/<chapter>/<profile>

# %%
validate_params(
    profile=profile,
    seed=seed,
    device=device,
    world_size=world_size,
    difficulty=difficulty,
    image_size=image_size,
    data_root=data_root,
    n_show=n_show,
    output_dir=output_dir,
)
rng = seed_everything(seed)
out_dir = resolve_output_dir(output_dir, "01_sketches_photos_words", profile)
env = env_report(seed=seed, device=device, profile=profile)

# %% [markdown]
# ## The idea
#
# The paper evaluates on QMUL-Shoe-V2 and QMUL-Chair-V2 (Yu et al., 2016; Song et al.,
# 2018): product photos, each with a few free-hand sketches drawn by people from memory.
# We cannot download them while building the book, and a laptop reader needs data in
# seconds, so the embedded default is a **procedural world** that keeps what makes the
# task interesting:
#
# - **Shape is fine-grained.** Each category is a parametric shape model with 9–10
#   parameters (heel height, shaft height, toe shape, sole thickness …; back height and
#   tilt, seat depth, leg style, armrests …). Instances differ mainly in their *outline*,
#   which is what survives at a small model's resolution; a difficulty knob shrinks the
#   spread and lets small local parts carry identity.
# - **Appearance is named.** Photos have one of 11 colours, 5 patterns and 5
#   backgrounds, plus unnamed nuisances (materials, lighting, pose jitter).
# - **Words are coarse about shape.** Captions say "a high heel" or "a reclined back"
#   (each parameter binned into 2–4 levels), never the exact geometry; only the sketch
#   can carry the within-bin differences that tell instances apart.
# - **Some combinations are held out** of all training captions, to test composition.
#
# Generating the world is deterministic from its configuration, and cached by its hash.

# %%
world_cfg = WorldConfig.for_profile(world_size, seed=seed, difficulty=difficulty)
t0 = time.perf_counter()
world_root = ensure_world(world_cfg, quiet=profile == "smoke")
generation_s = time.perf_counter() - t0
ws = load_world(world_root, seed=seed)
counts = ws.counts()
print(f"world at {world_root} (ready in {generation_s:.1f} s)")
for split, c in counts.items():
    print(
        f"{split:>5}: {c['sketches']:5d} sketches, {c['photos']:4d} photos with sketches"
    )
print(f"photos in total (with gallery-only variants): {len(ws.photos)}")

# %% [markdown]
# The folder has exactly the QMUL "Coordinate" layout: `photo/<id>.png` and one pickle
# mapping `/train/<id>_<n>` or `/test/<id>_<n>` to a stroke array, plus `world.json` with
# the attributes and captions. The validation split is carved out of train **by shape**,
# so no shape is seen in both; the test split is never used to choose anything.

# %%
preview = preview_world(ws, n=n_show)
fig, ax = plt.subplots(figsize=(12, 1.75 * n_show))
ax.imshow(preview)
ax.set_axis_off()
ax.set_title(
    "test shapes: appearance variants, clean line drawing, sketches, a caption"
)
save_figure(fig, out_dir, "world_preview")
plt.show()

# %% [markdown]
# Each row is one test shape. The first photos are its **appearance variants** (the duet
# gallery holds all of them), then its clean line drawing and the sketches, which keep the
# outline but wobble, drop strokes and over-trace like a quick human drawing.
#
# ## The stroke format
#
# A sketch is an array of shape (N, 3): `x`, `y` on a 256 × 256 canvas and a pen flag
# that is 1 on the **last point of each stroke**. The same rasteriser draws world
# sketches and real QMUL sketches. Below, one sketch drawn stroke by stroke.

# %%
record = ws.sketches_in("test")[0]
strokes = split_strokes(record.strokes)
print(f"{record.key}: {len(record.strokes)} points in {len(strokes)} strokes")
print(record.strokes[:4])
steps = np.unique(np.linspace(1, len(strokes), num=min(6, len(strokes))).astype(int))
fig, axes = plt.subplots(1, len(steps), figsize=(2.2 * len(steps), 2.4))
for ax, k in zip(np.atleast_1d(axes), steps, strict=True):
    ax.imshow(rasterize(record.strokes, size=128, max_strokes=int(k)))
    ax.set_title(f"{k} stroke{'s' if k > 1 else ''}")
    ax.set_axis_off()
save_figure(fig, out_dir, "stroke_by_stroke")
plt.show()

# %% [markdown]
# The pen flags cut the point list into strokes; drawing the first *k* of them shows the
# order in which the sketch was made.
#
# ## Words: captions and appearance phrases
#
# Every photo has paraphrased captions (for pretraining our CLIP in chapter 2) and an
# **appearance phrase**, the words a user adds to a sketch in a composed query. The
# appearance phrase never names shape.

# %%
for pid in duet_gallery(ws, "test")[:4]:
    a = ws.attributes[pid]
    print(f"{pid}: caption = {a['captions'][0]!r}")
    print(f"{' ' * len(pid)}  phrase  = {a['appearance_phrase']!r}")
print("held out of training:", world_cfg.held_out)

# %% [markdown]
# ## How fine is fine-grained?
#
# Before training anything we measure the ceiling we work under. A simple **reference**
# with no learning matches each sketch to the clean line drawing of every gallery shape by
# chamfer distance between edge maps, at the model's resolution. If it could not tell the
# instances apart, no model trained on these sketches could either.

# %%
reference = reference_accuracy_world(ws, "test", size=image_size)
print(
    f"chamfer reference, sketch -> photo over {int(reference['n_gallery'])} test shapes: "
    f"Acc@1 {reference['acc@1']:.3f}, Acc@5 {reference['acc@5']:.3f} "
    f"(chance {1 / reference['n_gallery']:.3f})"
)

# %%
gallery_ids = ws.photo_ids("test")
shapes = [shape_from_attributes(ws.attributes[p]) for p in gallery_ids]
queries = [
    int(i) for i in rng.choice(len(shapes), size=min(3, len(shapes)), replace=False)
]
grid = neighbour_grid(shapes, queries, k=min(4, len(shapes) - 1), size=image_size)
fig, ax = plt.subplots(figsize=(10, 2.4 * len(queries)))
ax.imshow(grid)
ax.set_axis_off()
ax.set_title(f"nearest test shapes at {image_size} px (chamfer distance d)")
save_figure(fig, out_dir, "near_neighbours")
plt.show()

# %% [markdown]
# Each row starts with a query shape, followed by its nearest neighbours among the test
# shapes. Neighbours share the coarse bins (same heel class, same leg style) and differ in
# proportions: exactly the differences words do not name and a sketch must carry.
#
# ## Why the duet gallery defeats either modality alone
#
# In the duet gallery every test shape appears in several appearance variants. A query is
# a sketch of the shape plus the appearance phrase of one variant. A perfect shape matcher
# still faces all variants of the shape; a perfect appearance matcher faces every photo
# with the same colour, pattern and background.

# %%
amb = duet_ambiguity(ws, "test")
print(
    f"{int(amb['n_queries'])} composed queries, gallery of {int(amb['n_gallery'])} photos\n"
    f"photos sharing the target's shape:      {amb['same_shape']:.2f} "
    f"-> a perfect sketch-only matcher reaches Acc@1 {amb['sketch_only_ceiling']:.3f}\n"
    f"photos sharing the target's appearance: {amb['same_appearance']:.2f} "
    f"-> a perfect text-only matcher reaches Acc@1 {amb['text_only_ceiling']:.3f}"
)

# %% [markdown]
# So neither a sketch nor words can reach the top of this gallery alone; both together
# can. Chapter 10 measures how close each method gets.
#
# ## Real sketches: QMUL-Chair-V2
#
# The same loader reads the real benchmark when a copy is present (research use only;
# never committed). Its pickle is read by an **allow-list unpickler** that refuses
# anything but NumPy array reconstruction: a pickle can run code when loaded.

# %%
malicious = b"cos\nsystem\n(S'echo unsafe'\ntR."
try:
    safe_load(malicious)
    refused = False
except UnsafePickleError as err:
    refused = True
    print("refused:", err)

# %%
chair_root = data_root or shared_chairv2()
chairs = None
if chair_root is None:
    print("QMUL-Chair-V2 not found; set data_root to show real sketches.")
else:
    chairs = load_dataset("coordinate", chair_root, seed=seed)
    print({k: v for k, v in chairs.counts().items()})
    recs = chairs.sketches_in("test")[: min(n_show, 6)]
    fig, axes = plt.subplots(2, len(recs), figsize=(2.1 * len(recs), 4.4))
    for i, rec in enumerate(recs):
        axes[0, i].imshow(rasterize(rec.strokes, size=160))
        axes[1, i].imshow(load_image(chairs.photos[rec.photo_id]))
        axes[0, i].set_title(rec.photo_id[:14], fontsize=8)
        for ax in axes[:, i]:
            ax.set_axis_off()
    save_figure(fig, out_dir, "chairv2_examples")
    plt.show()

# %% [markdown]
# Real sketches are far more abstract than ours: people draw from memory, skip parts and
# exaggerate others. Chapter 11 measures what that costs.
#
# ## Checks
#
# The chapter claims: the world has disjoint splits by shape, sketches in the QMUL stroke
# format, a duet gallery where each modality alone is capped well below 1, a reference
# that tells instances apart far above chance, and a loader that refuses unsafe pickles.

# %%
shape_split = {}
for pid, split in ws.photo_split.items():
    shape_split.setdefault(ws.attributes[pid]["shape_id"], set()).add(split)
assert all(len(s) == 1 for s in shape_split.values()), "a shape is in two splits"
for rec in ws.sketches[:50]:
    assert rec.strokes.shape[1] == 3 and rec.strokes[-1, 2] == 1
    assert 0 <= rec.strokes[:, :2].min() and rec.strokes[:, :2].max() <= 256
assert amb["sketch_only_ceiling"] < 0.5 and amb["text_only_ceiling"] < 1.0
assert reference["acc@1"] > 5 / reference["n_gallery"], reference
assert refused
if chairs is not None:
    c = chairs.counts()
    assert c["train"]["sketches"] + c["val"]["sketches"] == 952
    assert c["test"]["sketches"] == 323 and c["test"]["photos"] == 100
if profile == "teach":
    assert counts["test"]["photos"] == 200 and len(ws.photos) >= 2000
    assert sum(c["sketches"] for c in counts.values()) >= 6000
    assert reference["acc@1"] >= 0.8, reference
metrics = {
    "reference_acc@1": reference["acc@1"],
    "reference_acc@5": reference["acc@5"],
    "sketch_only_ceiling": amb["sketch_only_ceiling"],
    "text_only_ceiling": amb["text_only_ceiling"],
    "photos": len(ws.photos),
    "sketches": len(ws.sketches),
    "generation_s": round(generation_s, 1),
}
save_metrics(out_dir, metrics)
metrics

# %% [markdown]
# ## Summary
#
# - The embedded default is a procedural world of shoe- and chair-like instances whose
#   identity lives in their outline; captions name shape only in coarse bins.
# - Sketches use the QMUL stroke format and the same rasteriser as real data; one loader
#   serves the world and QMUL-V2 (and three other layouts).
# - A learning-free chamfer reference tells the test instances apart well above chance:
#   that is the ceiling a sketch encoder works under.
# - In the duet gallery neither modality alone can reach the top; together they can.
#
# ## Exercises
#
# 1. Re-run with `difficulty = 1.0`. How much does the reference drop, and which shapes
#    become neighbours?
# 2. Render one shape with `render_sketch` at abstraction 0.1 and 0.9. Which parts
#    vanish first?
# 3. Count how many duet-gallery photos share only the colour with a target. Why is the
#    appearance phrase more than a colour word?
# 4. (Open) Which attributes of a real chair can neither a sketch nor a short phrase
#    express? How would you extend the world to include one?
#
# ## References
#
# - Yu, Q. et al. *Sketch Me That Shoe.* CVPR 2016 (QMUL-Shoe/Chair).
# - Song, J. et al. *Learning to Sketch with Shortcut Cycle Consistency.* CVPR 2018
#   (QMUL-V2 releases).
# - Sangkloy, P. et al. *The Sketchy Database.* SIGGRAPH 2016.
# - Barrow, H. G. et al. *Parametric correspondence and chamfer matching.* IJCAI 1977.
