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
# # 2. A CLIP of our own
#
# The duet rests on a frozen, language-aware CLIP. Web weights cannot be downloaded where
# this book is built, so we pretrain a tiny CLIP on the world's photos and captions, and
# make sure its photo features carry *shape* as well as colour, pattern and context.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from duet_lib.book import chapter_card
from duet_lib.config import validate_params
from duet_lib.data.world import WorldConfig, ensure_world, load_world
from duet_lib.models.clip import (
    WeightsUnavailableError,
    count_parameters,
    freeze_for_duet,
    load_clip,
)
from duet_lib.models.pretrain import (
    PretrainConfig,
    clip_loss,
    pretrain_clip,
    soft_caption_targets,
)
from duet_lib.models.text_encoding import (
    encode_text,
    encode_text_with_pseudo_tokens,
    placeholder_id,
    tokenize_templates,
)
from duet_lib.plotting import use_book_style
from duet_lib.probes import (
    attribute_predictions,
    attribute_probes,
    caption_class_embeddings,
    colour_in_context,
    embed_images,
    joint_attribute_predictions,
    photo_arrays,
    same_shape_retrieval,
    sketch_to_photo_zero_shot,
    text_to_photo_retrieval,
)
from duet_lib.repro import env_report, resolve_device, seed_everything
from duet_lib.results import resolve_output_dir, save_figure, save_metrics

use_book_style()
display(Markdown(chapter_card("02_a_clip_of_our_own")))

# %% tags=["parameters"]
profile = "teach"  # run profile: smoke, teach (default) or paper
seed = 0  # random seed (initialisation and batch order)
device = "auto"  # 'auto', 'cpu', 'cuda' or 'mps'
world_size = "teach"  # procedural world the probes run on: smoke or teach
model_name = "duet-tiny-conv-96"  # backbone; duet-tiny-hog-96: 33 min, not 49
pretrained = None  # None -> pretrain here (cached); or an open_clip tag / weights file
pretrain_steps = None  # first-phase steps; None: the preset (2100, HOG stem 720)
inversion_steps = None  # second-phase steps; 0: off; None: preset (300, HOG 900)
batch_size = 128  # geometries per step (two image-caption pairs each)
subset_size = 6000  # geometries in the pretraining corpus
quiet = False  # silence progress bars
output_dir = None  # None -> build/outputs/<chapter>/<profile>

# %%
validate_params(
    profile=profile,
    seed=seed,
    device=device,
    world_size=world_size,
    model_name=model_name,
    pretrained=pretrained,
    pretrain_steps=pretrain_steps,
    inversion_steps=inversion_steps,
    batch_size=batch_size,
    subset_size=subset_size,
    quiet=quiet,
    output_dir=output_dir,
)
rng = seed_everything(seed)
torch_device = resolve_device(device)
out_dir = resolve_output_dir(output_dir, "02_a_clip_of_our_own", profile)
env = env_report(seed=seed, device=device, profile=profile)

# %% [markdown]
# ## The idea
#
# CLIP (Radford et al., 2021) trains an image encoder and a text encoder together so that
# a photo and its caption land close in one joint space. For a batch of $B$ pairs with
# L2-normalised embeddings $x_i$ (images) and $t_j$ (texts) and a learned temperature, the
# loss is a symmetric cross-entropy over the $B \times B$ similarity matrix:
#
# $$\mathcal{L}_{CLIP} = \tfrac{1}{2}\Big[\mathrm{CE}\big(\tfrac{x t^\top}{\tau}, Y\big)
#   + \mathrm{CE}\big(\tfrac{t x^\top}{\tau}, Y^\top\big)\Big].$$
#
# Our world repeats captions (many red striped shoes on grass), so $Y$ is not the identity:
# identical captions in a batch share the target mass (our choice).
#
# A first attempt with exactly this recipe on a world like ours learned colour, pattern,
# background and category perfectly and **no shape at all**: photo-to-photo retrieval of
# the same shape in another colour sat at chance, and so did everything built on it.
# Captions without shape words give the image encoder no reason to look at outlines. We
# therefore add three things (all our choices, each selectable in `PretrainConfig`):
#
# 1. **binned shape words** in the captions ("a high heel", "a reclined back");
# 2. an **image–image term** in the spirit of SLIP (Mu et al., ECCV 2022): two renderings
#    of the same geometry in different appearance and pose are positives, at full weight
#    $w_{ii} = 1$ (a lighter weight kept colour but learned no shape; see the trials below);
# 3. **clean line drawings** captioned "a line drawing of …", as web CLIP has seen
#    drawings (never the free-hand sketches, which the duet chapters train on).
#
# $$\mathcal{L} = \mathcal{L}_{CLIP} + w_{ii}\,\mathcal{L}_{ii}$$
#
# The visual tower reads a small **convolutional stem** instead of 16-pixel patches (Xiao
# et al., NeurIPS 2021): a plain patch embedding at 96 px failed to learn shape in the
# same trial. It keeps LayerNorms and patch tokens, so the paper's method applies as is.
#
# ## Build it: the loss from scratch
#
# We write the soft-target CLIP loss directly and check it against the library on random
# embeddings with two identical captions.

# %%
g = torch.Generator().manual_seed(seed)
x = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
t = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
ids = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [7, 8], [9, 9]])  # rows 0, 2 equal
scale = torch.tensor(10.0)

same = (ids[:, None] == ids[None]).all(-1).float()
targets = same / same.sum(1, keepdim=True)
logits = scale * x @ t.T
by_hand = 0.5 * (
    -(targets * logits.log_softmax(1)).sum(1).mean()
    - (targets.T * logits.T.log_softmax(1)).sum(1).mean()
)
torch.testing.assert_close(soft_caption_targets(ids), targets)
torch.testing.assert_close(clip_loss(x, t, scale, targets), by_hand)
print(f"soft-target CLIP loss: {by_hand.item():.4f} (matches duet_lib)")

# %% [markdown]
# ## The backbone
#
# `load_clip` is the book's only door to open_clip. The tiny model is registered from the
# book's own configs.

# %%
probe_bundle = load_clip(model_name, None, seed=seed)
n_params = count_parameters(probe_bundle.model)
print(
    f"{model_name}: {n_params / 1e6:.2f} M parameters, {probe_bundle.image_size} px, "
    f"context {probe_bundle.context_length}, joint width {probe_bundle.embed_dim}"
)
print(probe_bundle.model.visual.conv1)

# %% [markdown]
# Offline, asking for web weights fails at once with instructions instead of hanging in
# download retries (here HF_HUB_OFFLINE is set by the book unless the paper profile runs):

# %%
if profile != "paper":
    t0 = time.perf_counter()
    try:
        load_clip("ViT-B-32", "openai")
        offline_error = None
    except WeightsUnavailableError as err:
        offline_error = str(err)
    offline_s = time.perf_counter() - t0
    print(f"failed after {offline_s:.2f} s:\n{offline_error}")

# %% [markdown]
# ## Pretrain
#
# The corpus holds fresh geometries (never the world's test shapes), each rendered as two
# photos and a line drawing at the model's resolution. The data of step $k$ depends only
# on the seed and $k$, so an interrupted run resumes from its last checkpoint and ends
# with the same weights. The finished model is cached under a hash of its configuration;
# later chapters load it from there, or train it through this same call.

# %%
if pretrained is None:
    # a length of None keeps the backbone's preset, so later chapters find this run
    # in the cache
    pre_cfg = PretrainConfig.for_profile(
        profile if profile in ("smoke", "teach") else "teach",
        model_name=model_name,
        seed=seed,
        steps=pretrain_steps,
        inversion_steps=inversion_steps,
        batch_size=batch_size,
        corpus_size=subset_size,
    )
    t0 = time.perf_counter()
    result = pretrain_clip(pre_cfg, quiet=quiet)
    pretrain_s = time.perf_counter() - t0
    bundle, history = result.bundle, result.history
    print(
        f"{'trained' if result.trained_now else 'loaded from cache'} in {pretrain_s:.1f} s"
        + (f", {result.pairs_per_s:.0f} pairs/s" if result.pairs_per_s else "")
        + f"; checkpoint {result.checkpoint}"
    )
else:
    bundle = load_clip(model_name, pretrained, device=torch_device)
    history, pretrain_s = [], 0.0
bundle.model.to("cpu").eval()

# %%
if history:
    steps = np.array([h["step"] for h in history])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    window = max(1, len(history) // 30)
    for key, label in (
        ("clip", "caption InfoNCE"),
        ("image_image", "image–image InfoNCE"),
        ("inversion", "inversion InfoNCE (second phase)"),
    ):
        rows = [h for h in history if key in h]
        if not rows:
            continue
        values = np.array([h[key] for h in rows])
        w = min(window, len(values))
        smooth = np.convolve(values, np.ones(w) / w, mode="valid")
        ax.plot([h["step"] for h in rows][w - 1 :], smooth, label=label)
    if pre_cfg.inversion_steps and len(steps) > pre_cfg.inversion_steps:
        ax.axvline(len(steps) - pre_cfg.inversion_steps, color="grey", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    ax.set_title("pretraining losses (moving average)")
    save_figure(fig, out_dir, "pretraining_loss")
    plt.show()

# %% [markdown]
# Both terms fall: the caption term as the model learns the world's vocabulary, the
# image–image term as it learns to match the same outline under a new colour and pose.
#
# ## What it knows: probes on held-out test shapes
#
# All probes use photos of the world's **test shapes**, which pretraining never saw.

# %%
world_cfg = WorldConfig.for_profile(world_size)
ws = load_world(ensure_world(world_cfg, quiet=True), seed=0)
test_photos = sorted(p for p, s in ws.photo_split.items() if s == "test")
held = set(world_cfg.held_out)  # (category, colour, pattern) never in training text
held_photos = [
    p
    for p in test_photos
    if (
        ws.attributes[p]["category"],
        ws.attributes[p]["colour"],
        ws.attributes[p]["pattern"],
    )
    in held
]
test_emb = embed_images(bundle, photo_arrays(ws, test_photos, bundle.image_size))
row_of = {p: i for i, p in enumerate(test_photos)}
held_emb = test_emb[[row_of[p] for p in held_photos]]
# short prompts, one attribute at a time ("a red shoe")
probes = attribute_probes(bundle, ws, test_photos, image_emb=test_emb)
# caption-style prompts over every attribute combination (all templates and shape
# words; the smoke profile takes a few per combination)
caption_classes = caption_class_embeddings(
    bundle, ws, per_class=4 if profile == "smoke" else None
)
probes_cap = attribute_probes(
    bundle,
    ws,
    test_photos,
    image_emb=test_emb,
    prompts="captions",
    classes=caption_classes,
)
probes_held = (
    attribute_probes(
        bundle,
        ws,
        held_photos,
        image_emb=held_emb,
        prompts="captions",
        classes=caption_classes,
    )
    if held_photos
    else {}
)
colour_ctx = colour_in_context(bundle, ws, test_photos, image_emb=test_emb)
gate = same_shape_retrieval(bundle, ws, "test")
sketch0 = sketch_to_photo_zero_shot(bundle, ws, "test")
text_held = (
    text_to_photo_retrieval(bundle, ws, held_photos, test_photos) if held_photos else {}
)

rows = [
    (f"zero-shot {a}, caption-style prompts", probes_cap[a], probes_cap[f"{a}_chance"])
    for a in ("category", "colour", "pattern", "background")
]
rows += [
    (f"zero-shot {a}, short prompts", probes[a], probes[f"{a}_chance"])
    for a in ("category", "colour", "pattern", "background")
]
rows += [("colour, read in the photo's own caption", colour_ctx["colour"], None)]
if probes_held:
    rows += [
        (
            f"colour, held-out combos ({len(held_photos)} photos), caption-style",
            probes_held["colour"],
            None,
        ),
        ("category, held-out combos, caption-style", probes_held["category"], None),
    ]
rows += [
    (
        f"photo→photo same shape, other look, Acc@1 ({gate['n_gallery']})",
        gate["acc@1"],
        gate["chance@1"],
    ),
    ("photo→photo same shape, Acc@5", gate["acc@5"], None),
    ("zero-shot sketch→photo Acc@1", sketch0["acc@1"], sketch0["chance@1"]),
]
if text_held:
    rows += [
        ("text→photo on held-out combos: colour@1", text_held["colour@1"], None),
        ("text→photo on held-out combos: pattern@1", text_held["pattern@1"], None),
    ]
table = ["| probe | value | chance |", "|---|---:|---:|"]
table += [f"| {n} | {v:.3f} | {'' if c is None else f'{c:.3f}'} |" for n, v, c in rows]
display(Markdown("\n".join(table)))

# %% [markdown]
# Read the table top to bottom. The first block reads each attribute zero-shot the way
# CLIP's paper does, with a prompt ensemble: every class is described by many prompts and
# a photo takes the nearest class. Our classes are the world's attribute combinations
# (11 colours × 2 categories × 5 patterns × 5 backgrounds = 550), each described by
# every caption template filled with every shape word of its category (about 170
# captions, averaged), so the prompts look like the captions the text encoder learned
# from and favour no particular shape. Nothing about the photo is used. The second block
# asks one attribute at a time with short prompts ("a red shoe", "a shoe in red"), a
# style the encoder never saw in training; the next section explains the gap. The
# model knows the world's words, also for attribute combinations it never saw in
# training (the held-out rows). The **shape gate** asks for the same geometry in another
# colour, pattern, background and pose among all test shapes: far above chance means
# photo features carry shape, the precondition for everything after this chapter.
# Zero-shot sketch→photo retrieval is already far above chance (the clean line drawings
# of pretraining are close enough to sketches), but it is a visual match only: no word
# can join it yet. Chapters 3–9 turn the sketch into a word.
#
# ## The trade-off we measured
#
# The trials of this section and the next two tuned the **first phase**; the book's
# backbone then adds a second phase of 300 steps (the section *A second phase* below),
# which moves the probes above by a few hundredths (shape gate 0.655 → 0.61,
# caption-style colour 0.945 → 0.94 in our run). Numbers in the prose from here to that
# section are the first phase's.
#
# One joint vector must carry colour for the captions and ignore colour for the
# image–image term. We tried several recipes on the same probes (test shapes, 200-shape
# gallery; "wide stem" is 32-64-128-128 channels instead of 16-32-64-128); all numbers are
# ours, measured on a 2-core CPU:
#
# | recipe (steps × geometries per batch) | same-shape Acc@1 | sketch→photo Acc@1 | colour, short prompts | colour, caption-style |
# |---|---:|---:|---:|---:|
# | $w_{ii}=0.3$, 20 % drawings, 350 × 128 | 0.005 | 0.045 | 0.78 | — |
# | $w_{ii}=1$, 30 % drawings, 350 × 128 | 0.205 | 0.20 | 0.40 | — |
# | $w_{ii}=1$, 30 % drawings, 700 × 128 | 0.32 | 0.40 | 0.64 | — |
# | same, 1050 × 128 | 0.42 | 0.55 | 0.73 | — |
# | same, 1400 × 128 | 0.545 | 0.61 | 0.70 | 0.89 |
# | the 1400-step model, then 200 more steps with $w_{ii}=0.3$ at a low learning rate | 0.505 | 0.58 | 0.69 | — |
# | **same, 2100 × 128 (the book's first phase)** | **0.655** | **0.67** | **0.59** | **0.945** |
# | same, 3000 × 128 (tried later, not adopted: see below) | 0.69 | 0.69 | 0.58 | 0.946 |
# | same, 700 × 64, wide stem | 0.055 | 0.087 | 0.35 | — |
# | image–image term on 64 of the 128 dimensions, 700 × 64, wide stem | 0.00 | 0.015 | 0.75 | — |
# | batches of shape neighbours (4 near shapes per group), 350 × 128 | 0.11 | 0.092 | 0.50 | — |
#
# Three lessons. More negatives per batch matter more than more steps (64 per batch
# learned far less shape from the same number of images). Giving the image–image term its
# own subspace protects colour, but then colour dominates the full vector and the shape
# gate fails. Batches of near shapes, a classic hard-negative trick, slowed learning
# here: the contrast among near neighbours is too hard for a model that does not yet see
# coarse shape. A wider stem with the default recipe learned the captions faster but the
# image–image term slower (its loss 2.68 against 2.01 at step 300), so we kept the
# narrow one. Length is the lever that works: 350 → 700 → 1050 → 1400 → 2100 steps move
# the gate 0.205 → 0.32 → 0.42 → 0.545 → 0.655 and zero-shot sketch→photo to 0.67, so
# the book's first phase is 2100 steps (about 42 minutes at 1.2 s per step on 2 cores;
# `pretrain_steps` is the knob). We chose it on the validation shapes, not on the test
# numbers of the table: there 2100 steps beat 1400 on the gate (0.583 against 0.483) and on
# caption-style colour (0.928 against 0.881). Short-prompt colour does not follow
# (0.40 → 0.64 → 0.73 → 0.70 → 0.59), and lowering the weight of the image–image term at
# the end of training does not bring it back either; caption-style colour does follow
# (0.89 at 1400 steps, 0.945 at 2100). Which probe is right is the next question.
# Length keeps paying for shape past 2100: a 3000-step first phase (about 17 minutes
# more) lifts the validation gate from 0.583 to 0.667 at the same caption-style colour
# (0.925 against 0.928). We did not adopt it, because what it was for did not follow:
# chapter 09 trained the duet on it (with the same second phase) and its sketch-only
# query stayed where it was while the duet lost a point ("A sharper backbone, tried").
#
# Where are the colour errors? The figure below reads the colour of every test photo
# both ways. With caption-style prompts every pattern stays between 0.93 and 0.97; the
# errors that remain are mostly white and black read as each other (13 photos each way
# of 800) and white read as grey or brown (shading turns white towards grey). With short
# prompts checked photos collapse (0.20), plain ones reach only 0.54 and dotted ones
# 0.86. Checked photos suffer most because their accent covers half the object and the
# renderer paints it near-black on light objects and near-white on dark ones, so a white
# chair with black checks and a black chair with white checks are almost each other's
# negative; a prompt that names the pattern tells the model which half to read.
#
# Is the colour missing from the photo features, or from the prompt? The row "colour,
# read in the photo's own caption" answers it: we take each photo's own caption, write
# it once per colour with only the colour word changed, and pick the nearest. With the
# first-phase backbone this reads colour correctly for 0.955 of the test photos, against
# 0.59 with the short prompts "a red chair" / "a chair in red" and 0.945 with the
# caption-style ensemble, which needs no knowledge of the photo. So the features hold
# colour, and the text encoder ties the colour word to its context: it only ever saw long
# captions that name everything. A zero-shot probe should ask in the language the model
# learned, as CLIP's own prompt engineering does ("a photo of a {}" rather than the bare
# class name), so the chapter asserts the caption-style probe and shows the short one
# beside it: the gap between them is a property of this text encoder worth knowing (a
# duet query with only a few words lands in the same unfamiliar region). More trials,
# decided on the validation shapes, all against the 1400-step recipe that was the
# default when they ran (test numbers in the table):
#
# | recipe | same-shape Acc@1 | sketch→photo Acc@1 | colour, short prompts | colour, caption-style |
# |---|---:|---:|---:|---:|
# | 1400 × 128 plus 30 % short captions ("a red chair", "a shoe on grass") | 0.555 | 0.62 | 0.52 | 0.535 |
# | image–image term on 64 of the 128 dimensions (default stem), stopped at 1100 × 128 | 0.025 | — | 0.63 | — |
# | the same model, its 64-dimension block given 90 % of the norm | 0.625 | — | 0.59 | — |
# | that block share trained in from the start (`shape_share=0.9`), 1400 × 128 | 0.53 | 0.56 | 0.66 | 0.93 |
#
# Short captions made both colour probes *worse* (validation colour 0.52 with short
# prompts), and the colour read in context fell too (0.55 against 0.894 for the
# 1400-step model): they cost colour knowledge
# itself, not only the prompt's fit. A first suspect is the contrastive target: "a red
# chair" is true of every red chair in the batch, yet the plain loss treats all but one
# of them as negatives. `caption_targets="described"` counts every photo a caption is
# true of as a positive; it did not help (stopped at 600 of 1400 steps: validation
# colour 0.34, 0.42 in context, against 0.41 for the plain targets at step 700), so the
# suspect is not the whole story (exercise 4). The subspace rows show the
# other half of the trade-off: trained on its own 64 dimensions, the image–image term
# learns shape *faster* (that block alone retrieves the same shape at 0.57 on the
# validation shapes after 1100 steps, above the 1400-step model's full vector at 0.48),
# but the caption dimensions dominate the norm and the full vector fails the
# gate. Giving the block a fixed share of the norm after training lifts the gate to
# 0.625, but not colour. `PretrainConfig(shape_share=...)` makes that share part of the
# model (the image embedding is block-normalised in training and in every later use);
# trained that way for 1400 steps it lands next to the plain 1400-step model (validation gate
# 0.45 against 0.48, short-prompt colour 0.68 against 0.67, caption-style colour 0.94
# against 0.88). None of these recipes replaced the default: none beats the 2100-step
# gate on the validation shapes (0.583).
#
# ## A faster backbone, and what it costs
#
# This chapter is the book's slowest: the default backbone trains at roughly 200–250
# image–caption pairs per second on 2 cores (`benchmarks/bench_pretrain.py`), so its
# 2100 first-phase steps take 35–45 minutes (the second phase adds 7). A profile of
# one step shows where the time goes: about half in the matrix products of the two
# transformers, 15 % in PyTorch's flash-attention kernel (slow at sequences this
# short), 10 % in the stem's convolutions. The visual
# transformer reads 37 tokens per photo (a 6 × 6 grid and the class token). The book
# also registers a fast backbone, `duet-tiny-conv32-96` (our design): one more stride-2
# layer in a thinner stem (8-16-32-64-128 channels, a 3 × 3 grid, 10 tokens), a text MLP
# of ratio 2 instead of 4, and two speed settings in its preset (captions run through the
# text tower in three length groups; the plain attention kernel on CPU). One run of the
# benchmark measured 505 pairs/s against 202 for the default step (2.5×, and the fast
# step meets the 500 pairs/s we aimed for); the two speed settings alone give the
# default model only 233. Trained with the default recipe (2100 × 128, 18 minutes), on
# this chapter's probes (test shapes) and on chapter 09's validation split:
#
# | backbone | same-shape Acc@1 | sketch→photo Acc@1 | colour, short prompts | colour, caption-style | pattern | ch. 09 FG-SBIR $s_L^T$ | ch. 09 duet |
# |---|---:|---:|---:|---:|---:|---:|---:|
# | `duet-tiny-conv-96` (default, first phase only) | 0.655 | 0.67 | 0.59 | 0.945 | 0.86 | 0.45 | 0.86 |
# | `duet-tiny-conv32-96` (fast) | **0.73** | 0.56 | 0.65 | 0.924 | 0.60 | 0.31 | 0.80 |
# | same grid, wider late stem (8-16-48-96-128) | 0.495 | 0.595 | 0.57 | 0.866 | 0.735 | — | — |
#
# The fast backbone passes this chapter's checks, with a *better* shape gate, but a 3 × 3
# grid after a thin stem keeps less texture: the pattern probe falls from 0.86 to 0.60,
# and chapter 09's duet, whose words name patterns, loses 6 points. (Its duet curve is
# flat from step 100 on, 0.80 to 0.78, so validation picks step 100, before FG-SBIR
# rises: 0.31 there, 0.44 at step 400.) The chapters in between, whose short training
# runs start from the backbone, gain from its sharper shape: chapter 03's FG-SBIR 0.16
# against 0.07, chapter 04's duet 0.53 against 0.33, chapter 07's global Acc@10 0.61 against
# 0.32. The benchmark is where the texture is missed: chapter 10's duet reaches
# 69.4 ± 1.2 % on the test gallery (two seeds) against 82.7 ± 1.3 % on the default's
# first phase (both with the paper's six losses), level with B-CLIP late fusion
# (69.8 %) instead of clearly above it, and on real ChairV2 (chapter 11) its best
# sketch-only row falls from 9.6 / 47.1 % to 6.8 / 42.1 % Acc@1 / Acc@10 (first phase).
# Widening the late stem did not buy the texture back and cost the gate. So the default stays, and the fast
# backbone is one parameter away in every chapter (`model_name="duet-tiny-conv32-96"`)
# for readers who would rather wait 18 minutes than 48 (the whole book: about 48
# minutes instead of 100). Neither fits this chapter into
# 6 minutes: at 500 pairs/s that buys about 600 steps, and the length rows of the first
# table (350 and 700 steps: gate 0.205 and 0.32; 520 steps of the fast backbone: 0.18 on
# the validation shapes) show that shape needs the long run.
#
# Two general speed levers we measured on the default step (128 geometries, 2 threads,
# median of six steps, one process each): compiling the visual and text transformers
# with `torch.compile` gave no gain (220 pairs/s against 238 eager, after a minute of
# compilation), and bfloat16 autocast gave 293 (1.23×) on a CPU with native bfloat16
# instructions. We use neither: the second depends on the processor (without those
# instructions bfloat16 runs slower than float32) and changes the weights a seed gives,
# and neither comes near 500.
#
# Where the ceiling lies. The same script counts each step's floating-point operations
# (PyTorch's FLOP counter, attention through the plain kernel so that its products are
# counted) and times, in the same process, the fastest float32 matrix products the
# machine manages on 2 threads: 188 GFLOP/s in the run we quote (173 in an earlier run;
# two measurements before that gave 127 and 154). The default step costs 396 MFLOP per
# image–caption pair in matrix products and convolutions, forward and backward (the
# operations the counter sees; element-wise work and the optimiser come on top), and it
# runs at half that rate (245 pairs/s, 97 GFLOP/s). If those products ran at the full
# rate and nothing else took any time, it would reach 475 pairs/s (436 in the earlier
# run): an upper bound, and at that rate 500 pairs/s needs at most 377 MFLOP per pair.
# No kernel tuning of the default model gets there; only fewer operations per pair do
# (fewer image tokens, a narrower text MLP, captions trimmed to their length), or
# cheaper arithmetic (bfloat16, above). The two 3 × 3 backbones cost 146–147 MFLOP per
# pair and pass 500 in the same run (594 and 673 pairs/s; the second is the subject of
# "Fifteen minutes" below), at about the same share of the rate (0.46–0.52).
#
# ### Six minutes: what a short run learns first
#
# We had hoped to fit this chapter into six minutes on a laptop. The corpus and the
# probes take about a minute and a half, which leaves about 240 steps of pretraining
# (and no second phase). `benchmarks/bench_short_pretrain.py` trains first-phase
# recipes for exactly 240 steps each, from scratch, and probes them on the
# **validation** shapes. Three levers were built for this comparison (our choices, all
# selectable, all off in the book's default): a shape-parameter term that regresses
# each geometry's shape parameters from the image embedding
# (`PretrainConfig(shape_weight=1)`; privileged information that only a procedural
# world has); a stem of fixed gradient histograms, `duet-tiny-hog-96` (`HogStem`: HOG
# cells after Dalal and Triggs, 2005, under a learned per-token map, so edges and cell
# colours are in the tokens from the first step); and the Muon optimiser
# (`PretrainConfig(optimizer="muon")`; Jordan et al., 2024), which replaces each
# update of a weight matrix inside the transformer blocks by its nearest
# semi-orthogonal matrix (a few Newton–Schulz iterations on the momentum), scaled to
# AdamW's update size as Liu et al. (2025) propose, so the same learning rate and
# schedule serve; AdamW keeps the stem, embeddings, projections, gains and biases.
# 2 threads; seconds include the corpus; colour and pattern with caption-style
# prompts; the gate's chance level is 0.006 over 180 shapes:
#
# | recipe, 240 steps | seconds | pairs/s | same-shape Acc@1 | colour | pattern | category |
# |---|---:|---:|---:|---:|---:|---:|
# | default | 321 | 208 | 0.094 | 0.211 | 0.244 | 1.000 |
# | + shape-parameter term | 291 | 228 | 0.100 | 0.150 | 0.222 | 1.000 |
# | HOG stem | 246 | 272 | 0.161 | 0.839 | 0.653 | 1.000 |
# | HOG stem + shape-parameter term | 375 | 174 | 0.156 | 0.514 | 0.386 | 1.000 |
# | + Muon | 273 | 242 | 0.089 | 0.925 | 0.711 | 0.986 |
# | HOG stem + Muon | 269 | 248 | 0.267 | 0.847 | 0.867 | 1.000 |
# | **HOG stem + Muon, $w_{ii}=1.5$, learning rate 1.2e-2** | 262 | 253 | **0.433** | 0.856 | 0.936 | 1.000 |
#
# (Rows 1, 2 and 4 come from an earlier run of the script, when the HOG stem's
# histograms were computed with a 1 × 3 convolution and nine-way votes; the present
# code gives the same features to 2e-7 seven times faster, so row 4's seconds are not
# comparable with row 3's.)
#
# Every recipe learns the category first. With AdamW the gate barely moves (0.09 to
# 0.16 against the 0.5 this chapter asks for): matching one geometry across colour,
# pattern, background and pose means learning which edges belong to the object and
# which to its pattern or background, and regressing the shape parameters directly
# does not shortcut it (it also pulls the embedding away from colour). Two levers do
# change what a short run learns, and they act on different halves. Muon leaves the
# default's gate where it was but ties the words to the images about four times faster
# (colour 0.925 against 0.211): the caption side was limited by the optimiser,
# not by the data. The HOG stem starts the image side with edges and cell colours in
# its tokens; with Muon on top the gate rises to 0.267, and with a higher learning
# rate to 0.433 at the same 240 steps, 4.6 times the default's.
#
# The weight of the image–image term then sets a trade between the gate and the
# caption side. Settings we tried on the HOG stem with Muon (one run each, 240 steps,
# validation shapes; our exploration, from which the last table's row was chosen):
#
# | $w_{ii}$ | learning rate | same-shape Acc@1 | colour | pattern |
# |---:|---:|---:|---:|---:|
# | 2 | 2e-3 | 0.378 | 0.733 | 0.736 |
# | 3 | 2e-3 | 0.383 | 0.633 | 0.608 |
# | 3 | 4e-3 | 0.439 | 0.708 | 0.714 |
# | 3 | 8e-3 | 0.411 | 0.783 | 0.803 |
# | 2 | 8e-3 | **0.461** | 0.783 | 0.856 |
# | 2 | 1.6e-2 | 0.433 | 0.808 | 0.894 |
# | 1.5 | 1.2e-2 | 0.433 | 0.856 | 0.936 |
# | 1 | 1.2e-2 | 0.367 | **0.903** | **0.975** |
#
# A higher learning rate helps both sides up to about 8e-3; past it the settings lie
# on one front, where each point of gate costs colour. A 20-step warm-up instead of 60
# (0.317 at $w_{ii}=3$), finer cells (4 px, 4 × 4 per token, `HogStem(group=4)`;
# $w_{ii}=2$ at 4e-3 and 8e-3: 0.411 and 0.378), or the image–image term on a
# 64-dimension block holding 90 % of the norm (0.333 at $w_{ii}=3$, 2e-3) did not move
# the front; with the learned stem, Muon with
# $w_{ii}=3$ reached 0.178, and batch normalisation in the stem lowered the gate
# (0.033 with AdamW). No setting reaches both the gate's 0.5 and colour's 0.9 in 240
# steps. Half as many steps again do: the chosen setting trained for 360 steps
# (`--steps 360 --recipes hog_muon_short`; 388 s with the corpus, 250 pairs/s; an
# earlier run of the same call gave the same probes) reads gate 0.533, colour 0.900, pattern 0.958 and
# category 1.000 on the validation shapes, where the default's first phase needs 2100
# steps and 42 minutes for a gate of 0.583. That is the first recipe we have measured
# that passes this chapter's bars in about six minutes of pretraining. It is not the
# book's backbone (yet): the first phase is not all of it (this chapter's second
# phase, 300 steps and 7 minutes, teaches the text tower to read pseudo-words), and
# every later chapter's numbers, chapter 09's and 10's targets among them, were
# measured on the default. The next section runs that test.
#
# The HOG stem's head start also holds with AdamW over longer runs: the script at 700
# steps (`--steps 700 --recipes hog,default`, with the slower histograms; 18 and 14
# minutes) gave it a validation gate of 0.428 against the default's 0.289, pattern
# 0.95 against 0.51 and colour 0.89 against 0.81.
# With the present histograms the HOG stem's step runs at the default's rate: one run
# of `benchmarks/bench_pretrain.py` measured 262 pairs/s against 253, 257 with Muon
# (its Newton–Schulz iterations on 128-wide matrices cost little; 233 against 253 on
# the default model) and 313 with the fast preset's two speed settings added, still
# short of the 500 we aimed for.
#
# ### Half an hour: the HOG stem through chapters 09 and 10
#
# We gave the six-minute recipe the book's second phase (300 steps) and passed the
# result to chapter 09 (`pretrained=<its checkpoint>`, validation split). Its duet held
# (0.940 against the default's 0.947), but the sketch-only query, which must carry
# shape through the text tower, fell from 0.602 to 0.487: the short first phase costs
# that query about a fifth. We then lengthened one phase at a time and read each
# backbone on chapter 09's validation split, with that chapter's own choice of
# checkpoint (by the duet). The first phase went to 720 steps, with the fast preset's
# two speed settings (length groups and the plain attention kernel); the second phase
# then from 300 steps to 600 and 900, each continued from the same cached first phase
# (`inversion_steps=...`). Chapter 10's test split was read once, after the choice:
#
# | backbone (first + second phase) | pretraining | gate (val, first phase) | colour (val, first phase) | ch. 09 FG-SBIR $s_L^T$ (val) | ch. 09 duet (val) | ch. 09 duet, widened gallery (val) | ch. 10 duet (test) | ch. 10 FG-SBIR $s_L^T$ (test) |
# |---|---:|---:|---:|---:|---:|---:|---:|---:|
# | `duet-tiny-conv-96`, 2100 + 300 (the default) | 49 min | 0.583 | 0.928 | 0.602 | 0.947 | 0.912 | 91.6 ± 0.4 % | 60.9 ± 0.1 % |
# | `duet-tiny-hog-96`, six-minute recipe, 360 + 300 | 14 min | 0.533 | 0.900 | 0.487 | 0.940 | 0.897 | — | — |
# | `duet-tiny-hog-96`, 720 + 300 | 20 min | 0.650 | 0.928 | 0.546 | 0.948 | 0.884 | 92.6 ± 0.0 % | 58.6 ± 1.5 % |
# | `duet-tiny-hog-96`, 720 + 600 | 26 min | 0.650 | 0.928 | 0.587 | **0.964** | **0.920** | — | — |
# | **`duet-tiny-hog-96`, its preset, 720 + 900** | **33 min** | **0.650** | 0.928 | **0.644** | 0.946 | 0.899 | 92.3 ± 0.2 % | **67.9 ± 3.2 %** |
# | `duet-tiny-hog-96`, 720 + 900, the second phase on the text side only (tried) | 22 min | 0.650 | 0.928 | 0.661 | 0.940 | 0.893 | 90.7 ± 1.4 % | 58.5 ± 12.7 % |
#
# (Colour with caption-style prompts; the default's gate and colour are those of its
# first phase at 2100 steps from the length table above. Pretraining times on 2
# threads, corpus included: the default about 49 minutes; the HOG first phase 808 s
# and its 300-step second phase 369 s in one process; the 600- and 900-step second
# phases 782 s and 1036 s when continued from the cached first phase, the corpus
# rendered again; the 720 + 900 backbone from scratch in one process 1980 s (800 s and
# 1180 s for the two phases), with weights identical to the bit to those of the
# continued run; the text-only 900 steps 501 s continued from the cached first phase,
# the corpus rendered and embedded again, so 22 minutes are 800 s + 501 s. Since then
# the HOG stem's fixed histograms are computed once per corpus image instead of in
# every step, which leaves the weights the same to the bit: the preset's first phase
# from scratch then took 685 s and its second phase, continued from it, 1048 s.
# Chapter 10: mean ± standard deviation over seeds 0 and 1, the book's duet recipe.)
#
# Three readings. First, the two phases do different jobs. Doubling the first phase
# teaches the photo side *more* shape than the default's 2100 steps (gate 0.650
# against 0.583, in about a third of the time), but it leaves the sketch-only query
# short (0.546); that query needs the second phase, where the text tower learns to
# read pseudo-words: 0.546, 0.587 and 0.644 at 300, 600 and 900 steps. Second, the duet
# does not rise with it all the way: it peaks at 600 steps (0.964, the widened gallery
# 0.920) and settles back at 900 (0.946, level with the default's 0.947; the widened
# gallery 0.899 against 0.912, 0.013 lower where each rate's standard error is about
# 0.01). At 300 and 600 steps chapter 09's duet-chosen checkpoint misses that
# chapter's 0.6 target for the sketch-only query (at 300 steps, choosing by both
# queries, `select_metric="both_acc@1"`, reaches it but costs the duet 0.017); 900
# steps is the shortest second phase we tried at which every check of chapter 09
# passes at the checkpoint the chapter picks, so it is the HOG backbone's preset:
# `model_name="duet-tiny-hog-96"` in this chapter or any later one trains (or loads)
# 720 first-phase steps with Muon, $w_{ii} = 1.5$ and a peak learning rate of 1.2e-2,
# then 900 second-phase steps. Third, chapter 10 confirms it: its duet reads 92.3 ±
# 0.2 % on the test gallery (the default 91.6 ± 0.4 %, the 300-step version 92.6 ±
# 0.0 %), 11 points above late fusion (81.3 ± 0.5 %), and its sketch-only query 67.9
# ± 3.2 % against the default's 60.9 ± 0.1 %; every check of chapter 10 passes. One
# baseline moved the other way: the two-stage inversion reads 73.2 ± 0.4 % against
# 82.1 ± 1.3 % on the 300-step version (its mapper is trained apart from the duet, on
# the same frozen towers); we have not looked into why.
#
# A cheaper second phase, tried. The second phase's job is the text tower's, yet each
# of its steps runs both towers, and the image tower's passes are most of a step.
# `PretrainConfig(inversion_text_only=True)` (our choice; selectable, off in every
# preset) keeps the image tower as the first phase left it: the corpus is embedded
# once when the phase begins, and each step runs the text tower alone, with the
# caption loss and the inversion term. One run of `benchmarks/bench_pretrain.py` timed
# that step at 537 pairs/s against 247 through the whole model; continued
# from the cached first phase, its 900 steps took 501 s against 1036 s, so the
# backbone would train in 22 minutes instead of 33. On chapter 09's validation split
# at the chapter's seed it looked as good (sketch-only query 0.661 against 0.644, duet
# 0.940 against 0.946, widened gallery 0.893 against 0.899), and we adopted it and ran
# the whole book on it: every check passed, and chapter 10 read on test a duet of
# 90.7 ± 1.4 %, a sketch-only query of 58.5 ± 12.7 % and a two-stage inversion of
# 83.0 ± 4.0 % (the table's last row). The sketch-only query's spread over chapter
# 10's two seeds (67.5 and 49.5 %) sent us back to validation, to chapter 09 at its
# other seed (`seed=1`), and that decided: there the text-only backbone's sketch-only
# query read 0.498, below the chapter's 0.6 target, against 0.615 for the preset
# (duet 0.938 against 0.942, widened gallery 0.885 against 0.908). So the preset keeps its
# whole-model second phase. What the image tower learns in that phase shows in this
# chapter's own gate: on the test shapes 0.740 after the whole-model phase against
# 0.690, the first phase's own, after the text-only one (caption-style colour 0.935
# against 0.928, pattern 0.991 against 0.989, zero-shot sketch→photo 0.708 against
# 0.705); that the sketch-only query needs it too is our reading of the seed-1 run,
# not a measured cause.
#
# This chapter's checks pass on the preset too: run with
# `model_name="duet-tiny-hog-96"` (92 s with the backbone cached) it reads, on the
# test shapes after both phases, gate 0.740 (the default: 0.61), caption-style colour
# 0.935 (short prompts 0.754), pattern 0.991, category 1.000, held-out colour 0.980
# and zero-shot sketch→photo 0.708.
#
# The default nevertheless stays: the later chapters' texts and targets were measured
# on it, and the preset gives up a little of the widened duet for its speed. The
# preset is a parameter away for readers in a hurry: `make book BOOK_ARGS="-p
# model_name duet-tiny-hog-96"` runs the whole book on it, and every chapter's checks
# pass (chapters 02–11 took about 60 minutes here once the backbone was cached,
# chapter 10's 35 of them; chapter 07 found the HOG stem's patch tokens more local
# than the convolutional stems', see there). Six minutes stay out of reach for a
# backbone that serves the whole book: the 360-step recipe that passes this chapter's
# bars costs chapter 09's sketch-only query a fifth, and the query's route through
# the text tower is what takes the time.
#
# ### Fifteen minutes: the histograms on a 3 × 3 grid
#
# The ceiling above says where speed must come from: fewer operations per pair, and
# most of them go to the image tokens, 37 per photo on the 16-pixel grid against 10 on
# a 3 × 3 one. The convolutional 3 × 3 backbone lost texture because its thin stem
# had to learn it; the HOG stem's edge histograms and cell colours are fixed, so a
# coarser grid only regroups them. `duet-tiny-hog32-96` (our design) gathers 4 × 4
# cells of 8 pixels into each of 3 × 3 tokens (192 fixed numbers per token, under the
# same learned map) and takes the fast backbone's text MLP of ratio 2. In one run of
# `benchmarks/bench_pretrain.py` its step costs 146 MFLOP per pair against 325 for the
# HOG preset and runs at 673 pairs/s in the first phase and 497 in the second (the HOG
# preset: 304 and 265), 562 pairs/s over its 720 + 900 steps (an earlier run: 567, 447
# and 494).
#
# We trained it with the HOG preset's recipe. At $w_{ii} = 1.5$ it failed this
# chapter's colour check on the test shapes (0.843 against 0.9; gate 0.600, pattern
# 0.953); its first phase read, on the validation shapes, gate 0.578 and colour 0.883.
# Two changes of the first phase, one 720-step run each, read on the validation
# shapes only: the text MLP back to ratio 4 (gate 0.611, colour 0.883, pattern 0.978;
# 470 pairs/s over the phase) and $w_{ii} = 1$ (gate 0.606, colour 0.931, pattern
# 0.994; 622 pairs/s). The second is better on all three and cheaper, so the preset
# takes $w_{ii} = 1$ (the test shapes were read once, for the first version, before
# these runs). Its first phase took 323 s and its second 476 s (each rendering the
# corpus), about 13 minutes against the HOG preset's 29. After both phases, on the
# test shapes: gate 0.585, caption-style colour 0.925 (short prompts 0.48), pattern
# 0.981, category 1.000, held-out colour 1.000, zero-shot sketch→photo 0.587; this
# chapter's checks pass.
#
# Chapter 09 then read it on its validation split (its own checkpoint choice, by the
# duet), at both seeds:
#
# | backbone | seed | ch. 09 FG-SBIR $s_L^T$ | ch. 09 duet | duet, widened gallery |
# |---|---:|---:|---:|---:|
# | `duet-tiny-hog-96` (720 + 900) | 0 | 0.644 | 0.946 | 0.899 |
# | `duet-tiny-hog-96` (720 + 900) | 1 | 0.615 | 0.942 | 0.908 |
# | `duet-tiny-hog32-96` (720 + 900) | 0 | 0.554 | 0.948 | 0.914 |
# | `duet-tiny-hog32-96` (720 + 900) | 1 | 0.559 | 0.948 | 0.916 |
# | `duet-tiny-hog32-96` (720 + 1500) | 0 | 0.544 | 0.931 | 0.902 |
#
# The duet holds (level with the HOG preset, above it on the widened gallery), and
# chapter 09 runs in 3.5 minutes instead of about 5, but the sketch-only query
# misses that chapter's 0.6 at both seeds: 10 tokens keep less of the fine shape that
# this query must carry on its own (the photo gate 0.585 against 0.740, zero-shot
# sketch→photo 0.587 against 0.708). A longer second phase, the lever that lifted the
# query on the 16-pixel grid, does not lift it here: 1500 steps instead of 900 (816 s,
# `inversion_steps=1500`) read 0.544 at seed 0 and cost the duet 0.017, so we stopped
# there without the second seed. Finer cells on the same grid (4 pixels, 8 × 8 per
# token) did worse already in the first phase (one run, validation shapes: gate 0.389
# against 0.606, colour 0.889), so we did not train that one further. The backbone
# stays an option, not one the book leans on: over both phases it reaches the 500
# pairs/s we aimed for (562 in the run quoted, 494 in the earlier one), and it passes
# this chapter but not chapter 09's sketch-only target.

# %%
colours, truth, guess = joint_attribute_predictions(
    bundle, ws, test_photos, test_emb, classes=caption_classes
)["colour"]
_, _, guess_short = attribute_predictions(
    bundle, ws, test_photos, "colour", image_emb=test_emb
)
index = {c: i for i, c in enumerate(colours)}
confusion = np.zeros((len(colours), len(colours)), dtype=int)
for t, g in zip(truth, guess, strict=True):
    confusion[index[t], index[g]] += 1
patterns = sorted({ws.attributes[p]["pattern"] for p in test_photos})


def accuracy_by_pattern(read):
    return {
        pat: float(
            np.mean(
                [
                    t == g
                    for t, g, pid in zip(truth, read, test_photos, strict=True)
                    if ws.attributes[pid]["pattern"] == pat
                ]
            )
        )
        for pat in patterns
    }


colour_by_pattern = accuracy_by_pattern(guess)
colour_by_pattern_short = accuracy_by_pattern(guess_short)
fig, (ax_c, ax_p) = plt.subplots(
    1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.5, 1]}
)
rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
ax_c.imshow(rates, cmap="Blues", vmin=0, vmax=1)
ax_c.set_xticks(range(len(colours)), colours, rotation=60, ha="right")
ax_c.set_yticks(range(len(colours)), colours)
ax_c.set_xlabel("read as")
ax_c.set_ylabel("true colour")
ax_c.set_title("zero-shot colour, caption-style prompts (row-normalised)")
xs = np.arange(len(patterns))
ax_p.bar(xs - 0.2, [colour_by_pattern[p] for p in patterns], 0.4, label="caption-style")
ax_p.bar(xs + 0.2, [colour_by_pattern_short[p] for p in patterns], 0.4, label="short")
ax_p.set_xticks(xs, patterns)
ax_p.axhline(0.9, color="grey", ls="--", lw=1)
ax_p.set_ylim(0, 1)
ax_p.set_ylabel("colour accuracy")
ax_p.set_title("by pattern and prompt style")
ax_p.legend(loc="lower right", fontsize=8)
fig.tight_layout()
save_figure(fig, out_dir, "colour_errors")
plt.show()
off_diagonal = [
    (int(confusion[i, j]), colours[i], colours[j])
    for i in range(len(colours))
    for j in range(len(colours))
    if i != j and confusion[i, j]
]
print(
    "most frequent confusions (count, true, read as):", sorted(off_diagonal)[::-1][:5]
)

# %% [markdown]
# ## Reading vectors as words
#
# The duet feeds the frozen text encoder vectors that are not words. `duet_lib` encodes a
# template whose placeholder positions (`$`) receive arbitrary vectors. When the vector
# *is* a real word's embedding, the result must equal plain text encoding:

# %%
pid = placeholder_id(bundle)
word_ids = bundle.tokenizer(["red"])[0]
red_vector = bundle.model.token_embedding.weight[word_ids[1]].detach()
with torch.no_grad():
    via_slot = encode_text_with_pseudo_tokens(
        bundle.model,
        tokenize_templates(bundle, ["a $ shoe on grass"]),
        red_vector[None, None],
        pid,
    )
    direct = encode_text(bundle, ["a red shoe on grass"])
torch.testing.assert_close(via_slot, direct, atol=1e-5, rtol=1e-5)
print("placeholder insertion equals encode_text: ok")

# %% [markdown]
# The paper trains only the image encoder's LayerNorms. The helper below freezes the whole
# model, then enables exactly those; listing the trainable names is the test.

# %%
trainable = freeze_for_duet(load_clip(model_name, None, seed=seed).model)
print(len(trainable), "trainable tensors, e.g.", trainable[:3])

# %% [markdown]
# ## A second phase: a text tower that reads pseudo-words
#
# Everything after this chapter writes a sketch as pseudo-words and asks the frozen
# text tower to carry the sketch's shape to the photo. Web CLIP's text encoder can do
# that: Pic2Word (Saito et al., CVPR 2023) and SEARLE (Baldrati et al., ICCV 2023)
# write an image as a pseudo-word for a *frozen* web CLIP and compose it with real
# words. Can ours? We measured it with chapter 09's converter trained alone on this
# model's frozen image features (sketch-only query $[P^L; s^w]$, validation FG-SBIR
# among 180 photos): 0.46 Acc@1 after 400 steps of 32 sketches and 0.50 after 1600,
# while the image side $V(\text{sketch})$ reached 0.59; on training sketches the
# converter came within 0.03 of the image side. The tower *can* be fit, but what it
# learns about pseudo-words carries over poorly to new shapes: a text tower that saw
# only the captions of a small world has no reason to listen to vectors that are not
# its words.
#
# `inversion_steps` adds a **second phase** (our design; 300 steps in the book's
# backbone, 0 turns it off): the same two terms for that many more steps at a constant
# learning rate of 3e-4 (a fresh AdamW),
# plus an inversion term. A small map with the architecture of chapter 03's $C_{v2w}$
# (eight pseudo-words, each three times a real word's norm) writes each photo's
# embedding as pseudo-words after "a photo of", and the text tower must send the
# phrase back to its photo (InfoNCE over the batch, τ = 0.07). In half of the rows the
# pseudo-words come from the *other* rendering of the geometry (another appearance, or
# its clean line drawing) and the photo's appearance phrase follows them ("a photo of
# ⟨words⟩ in red with stripes on grass"), so the tower also learns to read pseudo-words
# *before* real words. The targets are detached, so the term never moves the image
# tower (the other two terms still do; `inversion_text_only=True` freezes it for the
# phase, a cheaper variant tried above); the map is thrown away afterwards. 300 steps
# take 7 minutes; on the test
# shapes the gate went from 0.655 to 0.61, caption-style colour from 0.945 to 0.94 and
# pattern from 0.86 to 0.85 in our run (the table at the top of the chapter prints this
# run's values). Then chapters 09 and 10 on the result, first with the paper's six
# losses and eight pseudo-words, then with the book's recipe (all seven terms, four
# words, chapter 09):
#
# | backbone, duet recipe | converter alone, 400 steps (val) | ch. 09 FG-SBIR $s_L^T$ (val) | ch. 09 duet (val) | ch. 10 duet (test) | ch. 10 two-stage inversion (test) | ch. 10 FG-SBIR $s_L^T$ (test) |
# |---|---:|---:|---:|---:|---:|---:|---:|
# | first phase only, six losses | 0.46 | 0.45 | 0.86 | 82.7 ± 1.3 % | 70.5 ± 1.2 % | 42.4 ± 3.2 % |
# | + inversion rows only (trial¹), six losses | 0.55 | 0.41 | 0.79 | — | — | — |
# | + half of the rows composed (trial¹, stopped at step 200), six losses | 0.53 | 0.51 | 0.94 | — | — | — |
# | + half of the rows composed (`inversion_steps=300`), six losses | — | 0.45 (0.54 at step 400) | 0.89 | 84.7 ± 4.4 % | **87.9 ± 2.0 %** | 50.3 ± 3.1 % |
# | first phase only, the book's recipe | — | 0.315 (0.36 at step 400) | 0.942 | 89.5 ± 0.7 % | 69.7 ± 6.5 % | 32.4 ± 1.5 % |
# | both phases (the book's backbone), the book's recipe without chapter 09's weight average | — | 0.53 (0.54 at step 400) | 0.957 | 90.4 ± 0.8 % | 82.1 ± 4.1 % | 53.0 ± 4.0 % |
# | both phases, the book's recipe with the weight average (`ema_decay=0.99`) | — | 0.583 | 0.951 | 91.9 ± 0.7 % | 82.1 ± 4.1 % | 60.6 ± 0.1 % |
# | **both phases, the book's recipe with the average and $\mathcal{L}_{trip}$ at temperature 0.15 (`tau_trip=0.15`)** | — | **0.602** | **0.947** | **91.6 ± 0.4 %** | 82.1 ± 4.1 % | **60.9 ± 0.1 %** |
#
# ¹ Short trials of the phase with plain AdamW settings (β₂ = 0.999, no weight decay,
# the map's gradients not clipped together with the CLIP's); the library's phase uses
# the first phase's optimiser settings. Chapter 09 picks its checkpoint by the duet.
# The chapter 09 values are seed 0 of trial runs of its recipe.
#
# Four readings. The plain rows lift the sketch-only query but hurt the duet: its
# shape@1 *fell* (0.77 against 0.83) although the sketch-only query's rose, because the
# tower had learned to read pseudo-words only at the end of a phrase, and a duet query
# puts words after them; the composed rows repair that. Second, with the paper's six
# losses the duet gains little (84.7 against 82.7 %, FG-SBIR 50.3 against 42.4 %), its
# seeds spread more, and the two-stage inversion baseline of chapter 10, a map trained
# on photos only and then applied to sketches, jumps from 70.5 % to 87.9 % and
# overtakes the duet. That is no surprise once said aloud: the composed rows, with line
# drawings as sources, rehearse in pretraining much of what that baseline does at test
# time. Third, with the book's recipe (chapter 09's seventh term trains the composed
# query on real words) the same backbone lifts the sketch-only query from a third to
# a half on both splits and the duet past 0.90, and the duet stays eight to ten points
# ahead of the inversion baseline. We chose the backbone on chapter 09's validation numbers
# (both rose), then confirmed on chapter 10's test split that the paper's ordering
# holds. Fourth, the caution stays: the inversion baseline gains more from this phase
# than any other method (+12 points), so a reader comparing methods on the world should
# know the backbone was taught to read pseudo-words; `inversion_steps=0` gives the first
# phase alone, on which the duet leads the inversion baseline by twenty points. The
# phase shows where the tiny model's limit sat: in how far its text tower could read
# what is not a word.

# %% [markdown]
# ## Checks

# %%
assert all(np.isfinite([h["loss"] for h in history])) if history else True
if history and len(history) > 10:
    assert np.mean([h["loss"] for h in history[-10:]]) < np.mean(
        [h["loss"] for h in history[:10]]
    ), "pretraining loss did not fall"
assert all(("ln" in n) for n in trainable) and all(
    n.startswith("visual.") for n in trainable
)
if profile != "paper":
    assert (
        offline_error is not None
        and offline_s < 1.0
        and "pretrained" in offline_error.lower()
    )
metrics = {
    "category": probes_cap["category"],
    "colour": probes_cap["colour"],
    "pattern": probes_cap["pattern"],
    "background": probes_cap["background"],
    "colour_heldout": probes_held.get("colour", float("nan")),
    "category_heldout": probes_held.get("category", float("nan")),
    "colour_short_prompts": probes["colour"],
    "category_short_prompts": probes["category"],
    "colour_by_pattern": colour_by_pattern,
    "colour_by_pattern_short_prompts": colour_by_pattern_short,
    "colour_in_caption": colour_ctx["colour"],
    "same_shape_acc@1": gate["acc@1"],
    "same_shape_acc@5": gate["acc@5"],
    "sketch_zero_shot_acc@1": sketch0["acc@1"],
    "pretrain_s": round(pretrain_s, 1),
}
save_metrics(out_dir, metrics)  # saved before the targets, so a miss keeps its numbers
if profile == "teach":
    assert probes_cap["colour"] >= 0.9 and probes_cap["category"] >= 0.9, probes_cap
    assert not probes_held or (
        probes_held["colour"] >= 0.9 and probes_held["category"] >= 0.9
    )
    assert gate["acc@1"] >= 0.5, gate
metrics

# %% [markdown]
# ## Summary
#
# - A tiny CLIP (about 8 M parameters, most of them the token table) with a
#   convolutional stem is pretrained on world photos, captions and line drawings only.
# - Shape words, an image–image term and line drawings make its photo features carry
#   shape (same-shape retrieval far above chance) at a price in colour; category and
#   background stay near perfect, also on held-out combinations.
# - The book's backbone (2100 first-phase steps, chosen on validation shapes, then 300
#   of the second phase) passes the shape gate (0.61 against 0.5; 0.655 after the first
#   phase) and the zero-shot colour and category probes (0.94 and 1.0 on test photos,
#   1.0 on held-out combinations) when prompts are written like its captions. Short
#   prompts read colour far worse (0.60): the features hold colour, the text encoder
#   ties colour words to the long captions it was trained on. The tables of trials show
#   the shape–colour trade-off and what moves it.
# - A fast backbone (`duet-tiny-conv32-96`, 3 × 3 token grid) trains 2.5× faster and
#   passes the shape gate better (0.73), but keeps less texture (pattern 0.60 against
#   0.86) and costs the duet 13 points in chapter 10 (69.4 % against 82.7 %); it is
#   selectable, not the default.
# - The HOG-stem backbone's preset (`model_name="duet-tiny-hog-96"`: fixed gradient
#   histograms, Muon, 720 + 900 steps) trains in 33 minutes instead of 49,
#   learns a higher shape gate (0.650 against 0.583 on validation) and passes chapter
#   09's checks (sketch-only query 0.644 against 0.602, duet 0.946 against 0.947 on
#   validation) and chapter 10's (duet 92.3 % against 91.6 % on test). The second
#   phase's length is what the sketch-only query needs. On the text side only
#   (`inversion_text_only=True`) the phase runs twice as fast, but the query fell to
#   0.498 on validation at a second seed (0.615 with the whole model). The preset is
#   selectable, not the default, whose numbers the later chapters' texts were
#   measured on.
# - The default's step costs 396 MFLOP per pair and runs at half the machine's best
#   float32 matrix-product rate; at the full rate it would still stay below 500 pairs/s
#   (475 and 436 in two runs), so speed must come from fewer operations per pair. The
#   HOG histograms on a 3 × 3 grid (`duet-tiny-hog32-96`, 146 MFLOP per pair) pretrain
#   in about 13 minutes at 494–562 pairs/s and pass this chapter's checks, and chapter
#   09's duet holds (0.948 at two seeds), but its sketch-only query stays below 0.6
#   (0.554, 0.559), also with a longer second phase.
# - The second phase (`inversion_steps=300`) teaches the text tower to read
#   pseudo-words, also before real words. With the book's duet recipe it lifts the
#   sketch-only query from a third to a half and the duet past 0.90 in chapter 10
#   (90.4 against 89.5 %); the two-stage inversion baseline gains most (82.1 against
#   69.7 %) but stays eight points behind. `inversion_steps=0` gives the first phase
#   alone.
# - Zero-shot sketch→photo is a visual match only (0.665 Acc@1 among 200 shapes); making
#   the sketch a word that text can join is the duet's job.
# - Web weights are a parameter away (`model_name="ViT-B-32"`, `pretrained="openai"`);
#   offline they fail in under a second with instructions.
#
# ## Exercises
#
# 1. Set `image_image_weight=0` in `PretrainConfig` and compare the shape gate.
# 2. Pretrain with `line_drawing_fraction=0`. Does zero-shot sketch→photo change?
# 3. Replace `duet-tiny-conv-96` by `duet-tiny-patch`. What happens to the gate, and why
#    might 16-pixel patches miss outlines at 96 px?
# 4. (Open) Why do short captions cost colour? Pretrain with `partial_captions=0.3`
#    and `caption_targets="described"` for the full length, then try short captions
#    that always name the colour, or fewer generic ones ("a photo of a shoe"), and
#    compare both colour probes and `colour_in_context` with the default's on the
#    validation photos.
# 5. Run this chapter and chapter 09 with `model_name="duet-tiny-conv32-96"`. Which of
#    the duet's queries lose most on its 3 × 3 grid: those that name a pattern, a colour
#    or a background? (Chapter 10's benchmark reports appearance@1 per query.)
# 6. (Open) `image_image_dims=64, shape_share=0.9` matched the default; the block alone
#    learned shape faster when it held only 8 % of the norm. Try shares 0.5–0.8 and
#    compare the gate, the colour probe and chapter 09's FG-SBIR with the default.
# 7. (Open) The second phase's composed rows take their pseudo-words from the other
#    photo rendering or from the line drawing. Pretrain with photo sources only (a code
#    change in `duet_lib.models.pretrain`) and run chapter 10: does the duet keep its
#    lead over the two-stage inversion baseline, and does the baseline lose its gain?
# 8. (Open) On the HOG-stem backbone (`model_name="duet-tiny-hog-96"`) the
#    sketch-only query of chapter 09 needed a 900-step second phase, while the duet
#    peaked at 600 (0.964) and fell back at 900. Is a longer first phase
#    (`pretrain_steps`) with a shorter second phase a cheaper way to the same pair, and
#    what does the second phase do to this chapter's gate and colour probes, with and
#    without `inversion_text_only=True`? Compare on validation only, with two seeds.
# 9. (Open) The 3 × 3 HOG grid (`model_name="duet-tiny-hog32-96"`) keeps the duet but
#    not chapter 09's sketch-only query; a longer second phase and finer cells did
#    not help. Is the grid the limit? Try the first phase at $w_{ii} = 1.5$ with a
#    text MLP of ratio 4, or a 6 × 6 grid in the first visual blocks pooled to 3 × 3
#    before the last ones (a code change in `duet_lib.models.clip`), and read the
#    photo gate and chapter 09's query on validation, with two seeds, against their
#    cost in MFLOP per pair (`benchmarks/bench_pretrain.py`).
#
# ## References
#
# - Radford, A. et al. *Learning Transferable Visual Models From Natural Language
#   Supervision.* ICML 2021.
# - Mu, N., Kirillov, A., Wagner, D., Xie, S. *SLIP: Self-supervision meets
#   Language-Image Pre-training.* ECCV 2022.
# - Xiao, T. et al. *Early Convolutions Help Transformers See Better.* NeurIPS 2021.
# - Dalal, N., Triggs, B. *Histograms of Oriented Gradients for Human Detection.*
#   CVPR 2005 (the HOG stem's cells).
# - Jordan, K. et al. *Muon: An optimizer for hidden layers in neural networks.* 2024
#   (technical report; the orthogonalised momentum update).
# - Liu, J. et al. *Muon is Scalable for LLM Training.* arXiv:2502.16982, 2025 (the
#   update scaled to AdamW's size, PyTorch's `match_rms_adamw`).
# - Saito, K. et al. *Pic2Word: Mapping Pictures to Words for Zero-shot Composed Image
#   Retrieval.* CVPR 2023.
# - Baldrati, A. et al. *Zero-Shot Composed Image Retrieval with Textual Inversion.*
#   ICCV 2023 (SEARLE).
# - Ilharco, G. et al. *OpenCLIP.* 2021 (software).
