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
# # 9. Training the duet
#
# This pipeline chapter trains all components of the duet together, in one stage, as the
# paper does: every knob is a parameter, and metrics, loss curves and the selected
# checkpoint are written to `output_dir`. Run it as it is on a laptop (the embedded
# world), or with the `paper` profile on a GPU with ViT-B-32 and real sketches.

# %%
import json
import time

import torch
from IPython.display import Markdown, display

from duet_lib.book import chapter_card
from duet_lib.config import validate_params
from duet_lib.data.loaders import load_dataset
from duet_lib.data.world import WorldConfig, ensure_world, load_world, widen_split
from duet_lib.metrics import bootstrap_rate, ranks_pessimistic
from duet_lib.models.pretrain import chapter_backbone
from duet_lib.paths import data_dir, shared_chairv2
from duet_lib.plotting import use_book_style
from duet_lib.repro import env_report, resolve_device, seed_everything
from duet_lib.results import resolve_output_dir, save_figure, save_metrics
from duet_lib.train import (
    TrainConfig,
    evaluate_duet,
    load_trained_duet,
    loss_weights_for,
    plot_history,
    run_dir,
    train_duet,
)

use_book_style()
display(Markdown(chapter_card("09_training")))

# %% tags=["parameters"]
profile = "teach"  # run profile: smoke, teach (default) or paper
seed = 0  # random seed of initialisation, data order and augmentation
device = "auto"  # 'auto', 'cpu', 'cuda' or 'mps'
dataset = "world"  # 'world' (embedded default), 'chairv2' or 'shoev2'
world_size = "teach"  # size preset of the procedural world (for the world dataset)
data_root = None  # folder of a real dataset; None -> DUET_DATA_DIR/<dataset>
model_name = "duet-tiny-conv-96"  # backbone; the paper profile uses ViT-B-32
pretrained = None  # None -> the book's tiny CLIP (chapter 02); or a tag / weights file
max_steps = 400  # optimisation steps
batch_size = 32  # sketches per step
lr_visual = 1e-3  # learning rate of V's LayerNorms
lr_modules = 1e-3  # learning rate of C_v2w, P^L and G
lr_schedule = "constant"  # constant (our choice) or cosine decay to zero at max_steps
trip_form = "infonce"  # L_trip over the batch (our choice for the tiny CLIP); hinge in the paper
sketch_tokens = 4  # pseudo-words per sketch; the paper uses 1 (our choice)
token_scale = 3.0  # norm of each pseudo-word in units of a real word norm (our choice)
words_scale = 1.0  # factor on pseudo-words before the user's words (our option)
ema_decay = 0.99  # moving average of the trained weights, validated and saved (our choice); None: off, as in the paper
tau_trip = 0.15  # temperature of L_trip alone (our choice); None: the shared tau (0.07) of every InfoNCE term
reg_detach = False  # True: L_reg cannot push the sketch-only query away (our option)
select_metric = "auto"  # checkpoint choice on val (auto is duet_acc@1 on the world; both_acc@1 averages it with FG-SBIR)
trip_memory = (
    0  # remembered batches in the InfoNCE of L_trip (our option); 0 switches it off
)
# λs; "words" is our seventh term (self-labelled words), 0 trains the paper's six
loss_weights = {
    "trip": 1,
    "comp": 1,
    "reg": 1,
    "tt": 0.25,
    "rt": 1,
    "rec": 1,
    "words": 1,
}
unfreeze_blocks = 0  # also train the last k visual blocks (a deviation from the paper)
eval_every = 100  # validation every N steps (selects the checkpoint)
test_shift = 2  # pixels of the test-time shifted views (our addition; 0 skips them)
patience = None  # evaluations without improvement before stopping (None: never)
amp = "off"  # mixed precision on CUDA: off, bf16 or fp16
num_workers = 0  # data-loading workers
quiet = False  # silence progress bars
output_dir = None  # None -> build/outputs/<chapter>/<profile>

# %%
validate_params(
    profile=profile,
    seed=seed,
    device=device,
    dataset=dataset,
    world_size=world_size,
    data_root=data_root,
    model_name=model_name,
    pretrained=pretrained,
    max_steps=max_steps,
    batch_size=batch_size,
    lr_visual=lr_visual,
    lr_modules=lr_modules,
    lr_schedule=lr_schedule,
    trip_form=trip_form,
    sketch_tokens=sketch_tokens,
    token_scale=token_scale,
    words_scale=words_scale,
    ema_decay=ema_decay,
    tau_trip=tau_trip,
    reg_detach=reg_detach,
    select_metric=select_metric,
    trip_memory=trip_memory,
    loss_weights=loss_weights,
    unfreeze_blocks=unfreeze_blocks,
    eval_every=eval_every,
    test_shift=test_shift,
    patience=patience,
    amp=amp,
    num_workers=num_workers,
    quiet=quiet,
    output_dir=output_dir,
)
rng = seed_everything(seed)
torch_device = resolve_device(device)
out_dir = resolve_output_dir(output_dir, "09_training", profile)
env = env_report(seed=seed, device=device, profile=profile)

# %% [markdown]
# ## What is trained, and how
#
# One stage, six losses, one weighted sum (the weighted-sum form and the λ values are our
# choice; the paper's are not available):
#
# $$\mathcal{L}=\lambda_{trip}\mathcal{L}_{trip}+\lambda_{comp}\mathcal{L}_{comp}
#   +\lambda_{reg}\mathcal{L}_{reg}+\lambda_{TT}\mathcal{L}_{TT}+\lambda_{RT}\mathcal{L}_{RT}
#   +\lambda_{rec}\mathcal{L}_{rec}$$
#
# Trained: the LayerNorms of the image encoder $V$, the converter $C_{v2w}$, the prompt
# $P^L$ and the decoder $G$. Frozen: everything else of CLIP, including the whole text
# encoder, through which gradients still flow. Each step runs one image-encoder pass over
# sketches, photos and hard negatives, one converter pass, **one** text-encoder pass over
# every query kind the active losses need, and one decoder pass (chapters 3–8 explain each
# piece). Model selection uses the **validation** split (held out of train by shape); the
# test split is never read here.
#
# Our choices for the embedded default, beside the λ: Adam with a constant learning rate
# of 1e-3 for both groups (the tiny model trains from a weaker start than web CLIP; the
# paper profile uses 1e-4 / 1e-3 as Sketch_LVM did; a cosine decay to zero,
# `lr_schedule="cosine"`, gave the same validation numbers on an earlier backbone, duet
# 0.861 and FG-SBIR 0.450 at step 400 against 0.863 and 0.452), batch 32, hard negatives "same shape, other
# appearance" and "other shape, same appearance", InfoNCE for $\mathcal{L}_{comp}$, and
# InfoNCE over the batch for $\mathcal{L}_{trip}$ instead of the paper's hinge with one
# negative (`trip_form`; the paper profile keeps the hinge). On an earlier teach backbone
# (1400 pretraining steps; the trials of this section all ran on it) the batch form raised validation FG-SBIR Acc@1 from 0.12 to 0.165 and the duet from 0.46 to
# 0.54 after 400 steps in our runs: every other sketch in the batch becomes a negative.
#
# The largest choice is `sketch_tokens`: $C_{v2w}$ writes the sketch as a *phrase* of
# four pseudo-words instead of the paper's single word ($\Delta^w$ likewise). This is a
# deviation, and here is why we made it. A single free token per photo, optimised
# directly through the frozen tiny text encoder, can still single out each of 200 test
# photos (train-set fit 0.985, InfoNCE loss 0.41), so the encoder can *express* fine
# shape; four free tokens fit far better (loss 0.07). What one word makes hard is
# *learning* the map: with the converter alone on frozen features, validation FG-SBIR
# after 250 steps was 0.235 with one token and 0.376 with four. In the full training
# run on that 1400-step backbone (400 steps, validation Acc@1):
#
# | sketch_tokens | FG-SBIR, sketch-only query | duet | late fusion (own queries) |
# |---:|---:|---:|---:|
# | 1 (the paper) | 0.217 | 0.481 | 0.700 |
# | 4 (the book's default since $\mathcal{L}_{words}$, see below) | 0.298 | 0.803 | 0.846 |
# | 8 | 0.319 | 0.809 | 0.863 |
#
# The step costs the same (0.78 s against 0.82 s); the context of 32 tokens bounds it
# ($P^L$, two phrases for $[P^L; s^w; \Delta^w]$, or one phrase and the user's words).
# The paper profile keeps one word. With the paper's six losses eight words led by a
# hair, and the book used eight until it added the seventh term below; with that term
# four words won on validation (two seeds, the table after the $\mathcal{L}_{words}$
# one), so four is the default now.
#
# With the phrase in place, one weight moved: $\lambda_{TT} = 0.25$ instead of 1. The
# text–text term pulls $[P^L; s^w]$ towards $[P^F; s^w]$, a fixed prompt followed by the
# same pseudo-words, and at full weight it competed with retrieval (validation
# after 400 steps, eight words: $\lambda_{TT}=1$ duet 0.809, FG-SBIR 0.319;
# $\lambda_{TT}=0.25$ duet 0.853, FG-SBIR 0.361; without the term 0.825 and 0.309). All
# six losses stay on; every λ is a parameter.
#
# $\lambda_{reg}$ stays at 1 after a scan on the first-phase backbone (seed 0, validation,
# duet Acc@1 at its best evaluation / at step 400): without the term 0.808 / 0.792,
# 0.25 gave 0.818 / 0.802, **1 gave 0.863 / 0.863**, 2 gave 0.877 / 0.877 (FG-SBIR
# 0.47), 4 gave 0.773 / 0.773. The neutral-text term earns its place only in the longer
# run: at step 100 the runs with and without it are level (0.798 and 0.808), which is
# why chapter 10's 150-step ablation can barely see it. The 2 beats the 1 by less than
# the seed-to-seed spread, next to a cliff at 4, so we kept the round value. One more
# trial on the same split: the stand-in word $\Delta^w$ at a real word's size (a third
# of the sketch's words) gave the duet 0.879 but FG-SBIR 0.404; not adopted.
#
# **A seventh term: words the model writes for itself** (`loss_weights["words"]`, our
# deviation). Chapter 10 dissects the duet's misses on the paper's six losses: three
# quarters land on a photo of another look. No term of the paper trains the composed
# query on real appearance words, because FG-SBIR data has none ($\Delta^w$ stands in
# for them), and after eight pseudo-words the frozen encoder reads a short phrase less
# well than it reads the phrase alone. The frozen CLIP can write such words without any
# annotation: it reads each training photo zero-shot (chapter 02's caption-style probe
# over the world's vocabulary, 16 captions per attribute combination) and
# `duet_lib.probes.zero_shot_phrases` writes that reading as a phrase, e.g. "zigzag and
# grey, in a studio". $\mathcal{L}_{words}$ is $\mathcal{L}_{comp}$ again with that
# phrase $W$ in place of $\Delta^w$: $[P^L; s^w; W]$ must pick its photo out of the
# batch and the hard negatives, in the same single text-tower pass. The reading is right
# for 0.91 of the training photos' colours, 0.82 of their patterns and 0.99 of their
# backgrounds (all three for 0.76; the first-phase backbone: 0.93, 0.85, 0.79; reading
# with 64 captions per combination instead of 16 lifts the 0.79 to 0.83 but not the
# duet, see the trials below); where it is wrong, so is the phrase. The method still
# trains on sketch–photo pairs alone; the backbone labels the photos. Validation, seed
# 0, 400 steps, first-phase backbone (duet at its best evaluation; FG-SBIR of the
# sketch-only query at that step):
#
# | $\lambda_{words}$ (eight pseudo-words) | duet | FG-SBIR | late fusion of its queries |
# |---:|---:|---:|---:|
# | 0 (the paper's six losses) | 0.863 (step 400) | 0.452 | 0.918 |
# | 0.5 | 0.919 (step 400) | 0.413 | 0.930 |
# | **1 (the book's default)** | **0.931** (step 200) | 0.335 | 0.901 |
# | 2 | 0.931 (step 200) | 0.291 | 0.894 |
#
# With the phrases the duet gains seven points and, at the selected step, passes the
# late fusion of its own two halves; the sketch-only query pays for it (the converter
# now also serves words that follow it). We chose $\lambda_{words} = 1$ on this table
# (1 and 2 tie on the duet; 1 keeps more FG-SBIR). `loss_weights` without `"words"`
# (or with 0) trains the paper's six losses, and chapter 10's ablation reports both.
#
# With all seven terms on, we then tried once more to lift the duet (validation, 400
# steps, a backbone pretrained anew; duet at its best evaluation, FG-SBIR of the
# sketch-only query at that step and at step 400). Photo inversion is not an option of
# the library; we list it because it did not pay. The first moving-average rows ran
# on a version outside the library; `ema_decay` is the library's:
#
# | variant (seed 0 unless noted) | duet | FG-SBIR, selected / step 400 |
# |---|---:|---:|
# | eight pseudo-words (the previous default) | 0.926 (step 200) | 0.328 / 0.391 |
# | the same, seed 1 | 0.928 (step 200) | 0.300 / 0.333 |
# | **four pseudo-words (`sketch_tokens=4`, the default now)** | **0.942** (step 200) | 0.315 / 0.363 |
# | four pseudo-words, seed 1 | 0.929 (step 400) | 0.361 / 0.361 |
# | eight, pseudo-words at twice a real word's norm (`token_scale=2`) | 0.928 (step 400) | 0.394 / 0.394 |
# | eight, $\lambda_{reg} = 2$ | 0.922 (step 400) | 0.400 / 0.400 |
# | eight, `trip_memory=2` | 0.916 (step 400) | 0.407 / 0.407 |
# | eight, plus photo inversion: $[P^L; C_{v2w}(p)]$ must find $p$ (not in the library) | 0.921 (step 300) | 0.400 / 0.444 |
# | eight, evaluated with an exponential moving average of the weights, decay 0.98 (not in the library) | 0.931 (step 300) | 0.380 / 0.394 |
# | four, with that moving average | 0.939 (step 300) | 0.402 / 0.406 |
# | four, with that moving average, seed 1 | 0.932 (step 300) | 0.365 / 0.409 |
# | four, 800 steps with a cosine decay (`max_steps=800, lr_schedule="cosine"`) | 0.935 (step 400) | 0.415 / 0.415 (0.450 at step 800) |
# | four, phrases read with 64 captions per combination (`words_per_class=64`) | 0.937 (step 200) | 0.320 / 0.406 |
# | the same, seed 1 | 0.930 (step 400) | 0.350 / 0.350 |
# | four, batch 64 (`batch_size=64`, twice the time) | 0.914 (step 100) | 0.285 / 0.406 |
# | **four, on the two-phase backbone (chapter 02, `inversion_steps=300`; the default now)** | **0.957** (step 300) | **0.531 / 0.539** |
# | the same, seed 1 | 0.939 (step 100) | 0.485 / 0.517 |
# | the same, seed 0, also training $V$'s last block (`unfreeze_last_visual_blocks=1`, a deviation) | 0.950 (step 300) | 0.470 / 0.515 |
# | two-phase, $\lambda_{words} = 0.5$ | 0.949 (step 300) | 0.533 / 0.541 |
# | two-phase, $\lambda_{words} = 0$ (the paper's six losses) | 0.916 (step 400) | 0.541 / 0.541 |
# | two-phase, $\lambda_{trip} = 2$ | 0.944 (step 300) | 0.517 / 0.550 |
# | two-phase, eight pseudo-words | 0.944 (step 400) | 0.519 / 0.519 |
# | two-phase, second phase of 600 steps instead of 300 | 0.943 (step 200) | 0.507 / 0.524 |
# | two-phase, "near shape" negatives in $\mathcal{L}_{trip}$ and $\mathcal{L}_{RT}$ (`trip_negatives=("same_appearance", "near_shape")`) | 0.954 (step 300) | 0.481 / 0.506 |
# | two-phase, cosine decay over the 400 steps (`lr_schedule="cosine"`) | 0.949 (step 400) | 0.557 / 0.557 |
# | two-phase, moving average with a warm-up, min(0.98, (1 + t)/(10 + t)) | 0.955 (step 400) | 0.576 / 0.576 |
# | the same with the cosine decay | 0.950 (step 300) | 0.563 / 0.554 |
# | the same average without the converter's dropout | 0.948 (step 300) | 0.563 / 0.552 |
# | **two-phase, bias-corrected moving average, `ema_decay=0.99` (kept)** | **0.951** (step 400) | **0.583 / 0.583** |
# | the same, seed 1 (chapter 10's run) | 0.939 (step 400) | 0.559 / 0.559 |
# | two-phase, bias-corrected, `ema_decay=0.995` | 0.951 (step 400) | 0.587 / 0.587 |
# | the default, `lr_modules=2e-3` | 0.950 (step 400) | 0.570 / 0.570 |
# | the average, 500 steps (`max_steps=500`; training alone 5.8 minutes, past the chapter's budget) | 0.955 (step 500) | 0.585 (0.583 at step 400) |
# | the average, $\mathcal{L}_{trip}$ alone (every other λ 0) | 0.898 (step 400) | 0.552 / 0.552 |
# | the average, `lr_visual=3e-3` | 0.961 (step 400) | 0.548 / 0.548 |
# | the average, every InfoNCE term at temperature 0.1 (`tau=0.1`) | 0.936 (step 200) | 0.554 / 0.583 |
# | the average, every InfoNCE term at 0.15 (`tau=0.15`) | 0.936 (step 100) | 0.500 / 0.583 |
# | **the average, $\mathcal{L}_{trip}$ alone at 0.15 (`tau_trip=0.15`; the default now)** | **0.947** (step 300) | **0.602** / 0.589 |
# | the same, seed 1 (chapter 10's run) | 0.941 (step 300) | 0.583 / 0.576 |
# | the same, seed 2 | 0.941 (step 200) | 0.546 / 0.578 |
# | `ema_decay=0.99` with the shared temperature, seed 2 | 0.951 (step 300) | 0.546 / 0.546 |
# | `tau_trip=0.2` | 0.950 (step 300) | 0.578 / 0.583 |
# | `tau_trip=0.15`, `ema_decay=0.995` | 0.947 (step 400) | 0.602 / 0.602 |
# | the default, on a backbone with a 3000-step first phase (chapter 02) | 0.939 (step 200) | 0.515 / 0.578 |
# | the same, seed 1 | 0.914 (step 200) | 0.520 / 0.596 |
# | the same, seed 2 | 0.944 (step 200) | 0.517 / 0.591 |
# | the same, seed 0, 800 steps | 0.939 (step 200) | 0.515 / 0.578 (0.593 at step 800) |
# | the same, seed 0, `tau_trip=0.25` | 0.938 (step 200) | 0.546 / 0.583 |
# | the same, seed 0, without $\mathcal{L}_{comp}$ | 0.929 (step 200) | 0.520 / 0.587 |
# | the same, seed 0, without $\mathcal{L}_{words}$ | 0.921 (step 100) | 0.415 / 0.635 |
# | the same, seed 0, without $\mathcal{L}_{RT}$ | 0.934 (step 100) | 0.383 / 0.591 |
# | the same, seed 0, without $\mathcal{L}_{rec}$ | 0.927 (step 100) | 0.400 / 0.594 |
# | the same, seed 0, $\lambda_{words} = 0.5$ | 0.926 (step 100) | 0.343 / 0.611 |
# | the same, seed 0, $\lambda_{words} = 0.25$ | 0.948 (step 200) | 0.589 / 0.633 |
# | the same, seed 0, $s^w$ detached in $\mathcal{L}_{words}$ only (not in the library) | 0.933 (step 100) | 0.376 / 0.611 |
# | the same, seed 0, $\mathcal{L}_{reg}$ without a gradient into $s_L^T$ (`reg_detach=True`) | 0.931 (step 100) | 0.415 / 0.613 |
# | the same, seed 1 | 0.911 (step 200) | 0.528 / 0.598 |
# | the same, seed 2 | 0.943 (step 200) | 0.524 / 0.600 |
# | the same, seed 0, and $\lambda_{words} = 0.5$ | 0.939 (step 200) | 0.561 / 0.619 |
# | the same, seed 0, and pseudo-words at twice a real word's norm (`token_scale=2`) | 0.939 (step 400) | 0.559 / 0.559 |
# | `reg_detach=True` on the book's backbone, seed 0 | 0.950 (step 300) | 0.602 / 0.589 |
# | the same, seed 1 | 0.944 (step 400) | 0.589 / 0.589 |
# | the same, seed 2 | 0.948 (step 200) | 0.537 / 0.552 |
# | 3000-step backbone, seed 0, the sketch's pseudo-words at 0.67 of their norm where the user's words follow (`words_scale=0.67`) | 0.948 (step 200) | 0.559 / 0.589 |
# | the same, seed 1 | 0.932 (step 300) | 0.569 / 0.581 |
# | the same, seed 2 | 0.943 (step 200) | 0.528 / 0.587 |
# | the same, seed 0, `words_scale=0.5` | 0.948 (step 200) | 0.572 / 0.576 |
# | the same, seed 0, 0.67 before $\Delta^w$ too (not in the library) | 0.941 (step 100) | 0.367 / 0.598 |
# | the same, seed 0, 0.67 before $\Delta^w$ and the neutral texts too (not in the library) | 0.933 (step 300) | 0.546 / 0.565 |
# | `words_scale=0.67`, seed 0, and $\lambda_{words} = 0.5$ | 0.949 (step 200) | 0.567 / 0.630 |
# | the same, seed 1 | 0.931 (step 400) | 0.598 / 0.598 |
# | the same, seed 2 | 0.944 (step 300) | 0.563 / 0.604 |
# | `words_scale=0.67`, seed 0, and `reg_detach=True` | 0.944 (step 200) | 0.567 / 0.607 |
# | the same, seed 1 | 0.925 (step 200) | 0.520 / 0.604 |
# | the same, seed 2 | 0.944 (step 200) | 0.526 / 0.600 |
# | `words_scale=0.67` on the book's backbone, seed 0 | 0.952 (step 400) | 0.572 / 0.572 |
#
# Four words lead by 0.8 points on the mean of two seeds, less than one seed's swing
# between evaluations (seed 0: 0.942, 0.918, 0.934 at steps 200–400): a choice, not a
# finding. Our reading: the phrase the user writes now follows four pseudo-words
# instead of eight, so it weighs more in the encoder's attention, and appearance@1
# rose (0.957 against 0.944, seed 0). The memory, the stronger regulariser and the
# photo-inversion term each buy FG-SBIR at step 400 (up to 0.44) and lose duet, and
# none comes near the 0.6 target. The moving average smooths the validation curve and
# leaves the duet where it was (0.936 on the mean of two seeds with and without it).
# Twice the steps with a decaying rate lifts FG-SBIR late (0.45 at step 800) but not the
# duet, which sits at 0.93–0.94 from step 200 on; better-read phrases (0.83 instead of
# 0.79 of the training photos with all three words right) change nothing measurable;
# a batch of 64 makes the duet *lose* to the late fusion of its own halves (0.914
# against 0.938 at step 400). Only the backbone moved both numbers: with the text tower
# of chapter 02's second phase the sketch-only query gains 0.2 and the duet 1.5 points
# (seed 0; with seed 1 0.12 and 1 point; means of two seeds 0.508 against 0.338 and
# 0.948 against 0.936), which is why the book's backbone has both phases since (the
# section after the next table, and chapter 10 on the test split). On it, training
# $V$'s last block as well does not lift the image side (0.585 at the selected step,
# 0.581 at step 400, against 0.591 and 0.598), so it does not lift the sketch-only
# query either.
#
# On the two-phase backbone we then asked what still moves the sketch-only query.
# Neither the weights of the terms ($\lambda_{words}$ at 0.5 or 0, $\lambda_{trip}$ at 2)
# nor eight pseudo-words nor a longer second phase moved it beyond the spread of its
# own curve (0.51–0.55 at the selected step). Harder negatives made it *worse*: the
# "near shape" kind (`near_shape`, our option) gives each photo a photo of another
# shape that the untrained model ranks close to its sketches, mined once before
# training; with it the query lost 0.05. What did move it is averaging: the
# weights that are validated and saved are an exponential moving average of the
# trained ones (`ema_decay`, our choice; Polyak averaging, the "mean teacher" of
# Tarvainen and Valpola, 2017), while Adam keeps stepping the raw weights. An average
# over roughly the last 50 steps lifted the query to 0.576; one over the last 100 or
# 200 steps (decay 0.99 or 0.995, bias-corrected as Adam's moments are so the initial
# weights do not linger) to 0.583 and 0.587, with the duet unchanged within a point;
# with seed 1 the average gave 0.559 against 0.485 (means of two seeds 0.571 against
# 0.508, duet 0.945 against 0.948). A decaying
# learning rate does part of the same smoothing (0.557) and adds nothing on top of the
# average. Our reading: the converter's map from sketch features to pseudo-words is
# learned from few passes over the data (400 steps of 32 are 2.6 epochs of the 4,860
# training sketches) and the raw weights wander around it from step to step; the
# average sits closer to its middle. The book uses 0.99; `ema_decay=None` evaluates
# the raw weights, as the paper does. Neither a doubled learning rate for the converter
# nor a hundred more steps takes the query further (0.570, 0.585): with the average it
# sits at 0.98 of the image side, which has not moved.
#
# **Is the image side the ceiling?** Not quite, and finding out was cheap. We froze the
# image features of the checkpoint this chapter saved with the average and the shared
# temperature (sketches and photos through its $V$; the first row in bold type in the
# trial table above) and trained only a map from a sketch's feature to a query on them
# (400 steps of 32, the batch InfoNCE, the same average; validation FG-SBIR over the
# 180 photos):
#
# | map from $V(\text{sketch})$ to the query (frozen features) | validation Acc@1 | training sketches, 1,620-photo gallery |
# |---|---:|---:|
# | none: $V(\text{sketch})$ itself | 0.593 | 0.29 |
# | one linear layer, straight into the joint space | 0.62 | 0.39 |
# | an MLP shaped like $C_{v2w}$, straight into the joint space | 0.62–0.64 | 0.39 |
# | $C_{v2w}$ → four pseudo-words → the frozen text encoder (the duet's route), temperature 0.07 | 0.578 (four seeds, 0.565–0.598) | 0.34 |
# | the same route, temperature 0.15 | 0.599 (four seeds, 0.583–0.611) | 0.39 |
#
# The features hold more than the duet's query gets out of them: a plain linear map finds
# 0.62. The text encoder can express it (trained to return each training photo from its
# own embedding, the same route then singles out every one of the 180 validation photos
# from theirs, Acc@1 1.00), and at temperature 0.15 it fits the training sketches as
# well as the direct maps do (0.39); what it loses is 0.02–0.04 of generalisation to new
# shapes. The temperature is the knob that moved it; the route's other knobs, swept on
# the same frozen features at 0.15 (four seeds each, mean validation Acc@1 at step
# 400), did not: the converter's hidden width 128 or 1024 instead of 512 (0.578, 0.598),
# its dropout 0.3 (0.599), weight decay 0.1 (0.600), a zero-initialised linear skip beside
# it (0.601), a single linear layer in its place (0.579), one or eight pseudo-words instead
# of four (0.567, 0.608), pseudo-words at once or five times a real word's norm (0.588,
# 0.601), a batch of 64 (0.594), the whole training gallery as negatives (0.598), or
# temperatures 0.2 and 0.3 (0.587, 0.588). Our reading of why 0.15 helps: at 0.07 the batch
# InfoNCE is nearly solved (loss 0.35) and its gradient rests on the few hardest
# photos; at 0.15 every photo of the batch keeps pulling. In the full run the softer
# temperature has to stay on $\mathcal{L}_{trip}$ alone: applied to
# every InfoNCE term ($\mathcal{L}_{comp}$, $\mathcal{L}_{words}$, $\mathcal{L}_{TT}$) it
# cost the duet (0.900 at step 400, below the late fusion of its own queries, 0.918).
# `tau_trip=0.15` (our option, chosen on validation) lifts the sketch-only query over
# three seeds from 0.563 to 0.577 on average at the selected step (0.602, 0.583, 0.546
# against 0.583, 0.559, 0.546) and from 0.563 to 0.581 at step 400, and costs the duet
# 0.004 (0.943 against 0.947); the book uses it in chapters 09 and 10, and
# `tau_trip=None` restores the shared temperature. The margin over the 0.6 target is
# one query in 540 with seed 0, and seeds 1 and 2 stay below it: the frozen-feature
# table says why no recipe on this backbone will add much, since even the best direct
# map sits at 0.62–0.64. A backbone with sharper shape features is the lever left
# (chapter 02).
#
# **A sharper backbone, tried.** Chapter 02 found length the lever for shape, so we
# pretrained a backbone with a 3000-step first phase instead of 2100 (then the same
# 300-step second phase; 17 more minutes of chapter 02). Its features are sharper: on the
# validation shapes the photo→photo gate rose from 0.578 to 0.656 and zero-shot
# sketch→photo from 0.581 to 0.609 (both two-phase backbones, colour read in captions
# 0.917 and 0.925). With this chapter's recipe on it (the last nine rows of the trial table)
# the image side follows, 0.644–0.657 at step 400 against about 0.59, but the sketch-only
# query does not: 0.588 at step 400 on the mean of three seeds against 0.581 on the book's
# backbone. The duet now peaks at step 200, where the query still trails (mean 0.517 at
# the selected step against 0.577), and its best falls from 0.943 to 0.932. Twice the
# steps (seed 0, 800) take the query to 0.59–0.61 from step 500 on while the image side
# stays at 0.65 and the late fusion of the duet's own halves climbs to 0.926, level with
# the duet (0.931); a softer `tau_trip=0.25` lifts the query at the selected step
# (0.546 against 0.515) but not at step 400 (0.583 against 0.578). So on the sharper
# features the image side is no longer the limit: the query stays 0.05 below it, where
# on the book's backbone the two are level (0.602 against 0.583 at the selected step of
# the teach seed). Nor is the route as such. Trained alone on the frozen features of the
# seed-0 run's kept checkpoint (step 200; the set-up of the frozen-feature table, four
# seeds), the same route finds 0.634 (0.628–0.641), above that checkpoint's image side
# (0.626) and below a direct linear map (0.677), the same 0.04 as on the book's
# backbone; pulling the query towards $V(\text{sketch})$ as well (a cosine term of
# weight 1 or 3) lowers it (0.628, 0.609). What holds the query back in the full run,
# then, is the joint training, and one term above all. Removing one term at a time
# (seed 0, the last four rows of the trial table), only dropping our seventh term,
# $\mathcal{L}_{words}$, frees the query (0.628 at step 300, 0.635 at step 400, the
# route's frozen-feature level), and it takes the duet down to 0.80 with it; without
# $\mathcal{L}_{comp}$, $\mathcal{L}_{RT}$ or $\mathcal{L}_{rec}$ the query stays at
# 0.59. The term that teaches the duet to read the user's words pulls the sketch's
# words away from what identifies the photo.
#
# **One frontier, two queries.** We then looked for a weight or a form of the terms
# that keeps both queries (the eleven rows after those, seed 0 unless noted). A lighter
# $\mathcal{L}_{words}$ frees the query and loses the duet later in the run: at
# $\lambda_{words} = 0.25$ the duet peaks at 0.948 (step 200) and then falls to 0.854 by
# step 400, its appearance@1 from 0.962 to 0.862, while the query climbs to 0.633; at 0.5
# the query reaches 0.613 at step 300, where the duet reads 0.918. The phrase has to train the
# sketch's words themselves: with $s^w$ detached in $\mathcal{L}_{words}$ alone (the
# phrase still trains $P^L$ and the photos) the duet falls to 0.83. The paper's
# $\mathcal{L}_{reg}$ is a hinge on a difference, which can be met by pushing the
# sketch-only query away from its photo (chapter 05); stopping that gradient
# (`reg_detach=True`, our option) lifts the query at step 400 to 0.613, 0.598 and 0.600 on
# three seeds (mean 0.604 against 0.588) while the duet there falls from a mean of 0.919
# to 0.915; on the book's backbone it changes nothing beyond the seed spread (mean over
# three seeds at the selected step 0.576 against 0.577). Quieter pseudo-words
# (`token_scale=2`) move the other way along the same line: the duet keeps rising
# (0.939 at step 400) and the query stops at 0.559. Every variant trades one query for
# the other, and the duet-only selection hides the trade by picking the early step where
# the duet peaks and the query still trails. `select_metric="both_acc@1"` (our option)
# selects on the mean of the two: read off the same runs' validation curves, on the
# sharper backbone it picks steps 300–400 and gives, on the mean of three seeds, duet
# 0.918 and sketch-only query 0.590 for the default recipe and 0.918 and 0.604 with
# `reg_detach=True`.
#
# One change moved the frontier instead of sliding along it. The user's words follow
# four pseudo-words at three times a real word's norm; `words_scale` (our option)
# shrinks the sketch's pseudo-words where real words follow them (the duet query and
# $\mathcal{L}_{words}$) and leaves the sketch-only query as it is. At 0.67 (the next
# rows, 3000-step backbone) the duet gains on all three seeds, 0.933 against 0.919 at
# step 400 (0.936 against 0.918 with the selection on both queries), while the
# sketch-only query stays where it was (0.586 against 0.588). Shrinking them before
# $\Delta^w$ as well, or before $\Delta^w$ and the neutral texts, undoes the gain (seed
# 0, step 300: duet 0.929 and 0.933 against 0.944), so the scale belongs to real words
# only. The duet it buys can be spent on
# the query: with `reg_detach=True` as well the three seeds read, at step 400, duet
# 0.920 and query **0.604** (0.923 and 0.602 with the selection on both queries), half
# a point above `reg_detach` alone on the duet at the same query. A lighter
# $\lambda_{words} = 0.5$ instead spends it better: the three seeds read, at step 400,
# duet 0.931 (0.919, 0.931, 0.943) and query **0.611** (0.630, 0.598, 0.604), and the
# selection on both queries picks step 400 in all three. The duet-only selection
# picks earlier steps there (duet 0.941, query 0.576 on the mean). On the book's
# backbone, whose image side holds the query near 0.6, `words_scale` lifts the duet
# (0.952, seed 0) and not the query (0.572). So on the sharper backbone a recipe now
# averages above 0.6 over three seeds, by six queries in 540, for a duet a point below
# the book's (0.931 against 0.943). The book has not switched to it. A look at the test
# split, taken after these choices and used for none of them, says why it should not
# yet: the checkpoints these runs selected find the duet's photo for 0.85–0.89 of the
# test queries (default recipe 0.881 and 0.854, `words_scale=0.67` 0.892 and 0.883, with
# $\lambda_{words} = 0.5$ as well 0.879 and 0.869; seeds 0 and 1), where the book's
# seed-0 checkpoint finds 0.919. Neither split's shapes were seen in pretraining; the
# section "Does validation stand in for test?" below takes the gap apart on validation
# terms.
#
# **What holds the sketch-only query back** (measured on the first-phase backbone, seed 0,
# with pseudo-words of real-word size, before the rescaling below).
# It is not over-fitting: scored in galleries of the same size (180 photos), the
# sketch-only query of the 400-step run finds its photo for 0.40 of *training* sketches and
# 0.36 of validation sketches, against 0.67 and 0.61 for the image side. The converter is
# slow to learn and short of examples. Trained alone on frozen image features (no
# augmentation), it reaches 0.40 on validation after 400 steps of 32, 0.52 after 800
# steps of 128 (at a ten times higher learning rate; training sketches 0.84 there), and
# only 0.31 with the same 800 × 128 on half of the training shapes. More steps and more
# shapes are what it lacks, and both cost time the teach budget does not have.
#
# **The size of a pseudo-word** (`token_scale`, our choice). Chapter 03 gives every
# pseudo-word the mean norm of a real word's token embedding. That is a safe start, not a
# law: the same converter-alone run (400 steps of 32, validation FG-SBIR) reached 0.33
# with words half that size, 0.40 at real-word size, 0.42 at twice, **0.46 at three
# times**, 0.44 at four, 0.42 at eight, and 0.44 with no rescaling at all. Our reading,
# not tested further: a larger vector stands out more against the positional embedding
# it is added to, so the sketch's words carry more weight in the encoder's attention. In
# the full run, three times the size lifted the sketch-only query at the selected
# checkpoint from 0.313 to 0.433 (seed 0) and from 0.335 to 0.394 (seed 1), and the duet
# from 0.866 to 0.869 and from 0.838 to 0.890, at the same cost per step. The book uses
# `token_scale = 3` in chapters 09–11; the paper profile keeps 1, the size of the web
# encoder's own words.
#
# One cheap way to give $C_{v2w}$ more examples per step is a memory (`trip_memory`, our
# option, MoCo-style): the detached sketch and photo embeddings of the last $k$ batches
# pass through $C_{v2w}$ and the text encoder again, and an InfoNCE over current and
# remembered pairs is added to $\mathcal{L}_{trip}$; $V$ still learns from the current
# batch only. With $k = 2$ (measured with real-word-size pseudo-words) the step costs the
# same (0.86 s against 0.88 s, two runs sharing the cores), but the gain is within the
# spread of seeds (validation, 400 steps):
#
# | seed | FG-SBIR at step 400, without / with | duet at its best step, without / with |
# |---:|---:|---:|
# | 0 | 0.361 / 0.430 | 0.866 / 0.883 |
# | 1 | 0.387 / 0.365 | 0.838 / 0.861 |
#
# A mean gain of about 0.02 on each metric is not enough to change the default, so the
# memory stays off and is left to the exercises.

# %%
if dataset == "world":
    data = load_world(
        ensure_world(WorldConfig.for_profile(world_size), quiet=True), seed=0
    )
else:
    root = data_root or (shared_chairv2() if dataset == "chairv2" else None)
    root = root or data_dir(dataset)
    data = load_dataset("coordinate", root, seed=seed)
print({split: c for split, c in data.counts().items()})

bundle = chapter_backbone(profile, model_name, pretrained, device)
print(
    f"backbone {bundle.model_name} at {bundle.image_size} px from {bundle.pretrained}"
)

cfg = TrainConfig(
    seed=seed,
    device=str(torch_device),
    amp=amp,
    max_steps=max_steps,
    batch_size=batch_size,
    eval_every=min(eval_every, max_steps),
    patience=patience,
    num_workers=num_workers,
    lr_visual=lr_visual,
    lr_modules=lr_modules,
    lr_schedule=lr_schedule,
    trip_form=trip_form,
    trip_memory=trip_memory,
    sketch_tokens=sketch_tokens,
    token_scale=token_scale,
    words_scale=words_scale,
    ema_decay=ema_decay,
    tau_trip=tau_trip,
    reg_detach_reference=reg_detach,
    select_metric=select_metric,
    weights=loss_weights_for(loss_weights, data),
    unfreeze_last_visual_blocks=unfreeze_blocks,
)
print(json.dumps(cfg.to_dict(), indent=1)[:600], "…")

# %% [markdown]
# ## Train
#
# A run is named by the hash of its configuration and backbone. Run the chapter again
# and a finished run is loaded, not repeated; kill it half-way and it resumes from its
# last checkpoint with the same numbers.

# %%
t0 = time.perf_counter()
result = train_duet(
    cfg, bundle, data, run_dir(out_dir, "run", cfg, bundle, data), quiet=quiet
)
train_s = time.perf_counter() - t0
print(
    f"{'trained' if result.trained_now else 'loaded'}: {result.step} steps in "
    f"{train_s:.1f} s; best {result.select_metric} = {result.best_value:.3f} at step "
    f"{result.best_step}; checkpoint {result.best_checkpoint}"
)

# %%
fig = plot_history(result.history, smooth=max(1, min(20, result.step // 10)))
save_figure(fig, out_dir, "training_curves")
fig

# %% [markdown]
# Left: each unweighted loss term and the weighted total per step. Right: the validation
# metrics at each evaluation; the best one decides the saved checkpoint.
#
# ## Validation results
#
# The selected checkpoint's validation metrics, for the query types the book compares.
# On the world the duet gallery holds every appearance variant of each validation shape,
# so the sketch-only query cannot tell variants apart and the text-only query cannot
# tell shapes apart.

# %%
best = result.best_metrics
rows = [
    ("FG-SBIR, sketch-only query [P^L; s^w]", "fgsbir"),
    ("FG-SBIR, image-side V(sketch)", "visual"),
    ("duet gallery: sketch + text (the duet)", "duet"),
    ("duet gallery: sketch only", "sketch"),
    ("duet gallery: text only", "text"),
    ("duet gallery: late fusion", "fusion"),
]
table = ["| query | Acc@1 | Acc@5 | Acc@10 | shape@1 | appearance@1 | chance@1 |"]
table.append("|---|---:|---:|---:|---:|---:|---:|")
for label, key in rows:
    if f"{key}_acc@1" not in best:
        continue
    cells = [best.get(f"{key}_{m}", float("nan")) for m in ("acc@1", "acc@5", "acc@10")]
    cells += [
        best.get(f"{key}_{m}", float("nan"))
        for m in ("shape@1", "appearance@1", "chance@1")
    ]
    table.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
display(Markdown("\n".join(table)))

# %% [markdown]
# In our teach run (400 steps, all seven terms, four pseudo-words, the two-phase
# backbone of chapter 02, the weight average with decay 0.99, $\mathcal{L}_{trip}$ at
# temperature 0.15; the whole chapter 4.3 minutes on 2 otherwise idle cores, the
# phrases read from the cache) validation picked step 300, and the table read: on the
# duet gallery the duet 0.947 (shape@1 0.956, appearance@1 0.956), sketch only 0.33,
# text only 0.28, and the late fusion of the duet's own sketch-only and text-only
# queries 0.90; FG-SBIR with the sketch-only query **0.602** (Acc@10 0.981), with the
# image side $V(\text{sketch})$ 0.58. The duet is almost three times either single
# modality. With the shared temperature (`tau_trip=None`) the same recipe picked step
# 400: duet 0.951, FG-SBIR 0.583; without the average as well (`ema_decay=None`) step
# 300: duet 0.957, FG-SBIR 0.531 (0.539 at step 400). On the first-phase backbone it
# picked step 200: duet 0.94, FG-SBIR 0.31 (0.36 at step 400), image side 0.60; with the
# paper's six losses alone (`"words": 0`, eight pseudo-words, first phase) it picked
# step 400: duet 0.86 (appearance@1 0.88), FG-SBIR 0.45, late fusion 0.92. So the
# self-written words fix the duet's reading of appearance, the second phase gives the
# sketch-only query back what the seventh term took and more, the average adds another
# 0.05 and the softer $\mathcal{L}_{trip}$ 0.02, and the sketch-only query now finds a
# little more than $V(\text{sketch})$ itself (0.602 against 0.583; B-CLIP's triplet
# training of the same LayerNorms, in chapter 10's runs, moves the image side on
# validation from 0.58–0.59 to at most 0.61). The 0.6 target of this chapter is met in
# this run, by one query in 540; with seeds 1 and 2 the same recipe gives 0.583 and
# 0.546 (the trial table), a mean of 0.577 over the three, so on this backbone the
# target sits at the upper edge of the seed-to-seed spread, and well inside the
# uncertainty that 180 validation shapes leave (standard error 0.030, next section).
# Seen in nine slightly shifted views (test-time shifts, below) the same checkpoint
# reads 0.626, and the three seeds' mean 0.606.
# Chapter 02 reads colour zero-shot at 0.94 from prompts written like its captions but
# at 0.60 from short ones: the words of a duet query are a short phrase, which is why a
# term that trains the composed query on such phrases pays.
#
# **A text tower that reads pseudo-words.** Chapter 02's second pretraining phase
# (`inversion_steps`) teaches the text tower to read pseudo-words, also before real
# words (the book's backbone since the trials above). Before our seventh
# term it was measured with the paper's six losses (eight pseudo-words): the run picked
# step 100, duet 0.89 (shape@1 and appearance@1 0.90), sketch-only query 0.45, image
# side 0.57; at step 400 the sketch-only query reached 0.54 against the image side's
# 0.60 (0.90 of it, where the first-phase backbone reached 0.74). With all seven terms
# and four words it gives the numbers above. So the tower was the larger half of what
# held the sketch-only query back, and the image side, 0.57–0.61 on the validation
# shapes in every run of this chapter, is what is left.
#
# ### Does validation stand in for test?
#
# Validation chooses the checkpoint, and in this chapter's trials it chose recipes
# too, so it must rank models the way held-out shapes would. On the world it is not
# built quite like the test split. Validation shapes are carved out of the training
# shapes, so each has the two training photos (`train_variants`), drawn without the
# held-out colour/pattern combinations; each test shape has four (`test_variants`),
# and held-out combinations may appear among them. A duet query on validation picks
# among two photos of its shape, on test among four. `widen_split` (library) renders
# the missing photos of each validation shape, drawn as a test shape's are, so the
# validation duet gallery is built like the test one; nothing is trained on them and
# they are rendered once into the world folder. The cell scores this run's checkpoint
# on both galleries, and gives the duet's Acc@1 a standard error over *shapes*
# (`bootstrap_rate`: the queries of one shape share its difficulty, so the shapes,
# not the queries, are the independent draws).

# %%
best_model = load_trained_duet(bundle, result.best_checkpoint)  # also used below
if dataset == "world":
    wide = widen_split(data, "val")
    sims = {}  # query type -> (similarities, targets, gallery ids) as ranked
    wide_metrics = evaluate_duet(best_model, wide, "val", similarities=sims)

    def shape_spread(prefix):
        """Acc@1 of one query type with its standard error over target shapes."""
        sim, target, gallery = sims[prefix]
        hits = ranks_pessimistic(sim, target) == 1
        shapes = [wide.attributes[gallery[t]]["shape_id"] for t in target.tolist()]
        return bootstrap_rate(hits, shapes)

    spread, fg_spread = shape_spread("duet"), shape_spread("fgsbir")
    held = WorldConfig.for_profile(world_size).held_out_set
    _, duet_target, duet_ids = sims["duet"]
    target_ids = [duet_ids[t] for t in duet_target.tolist()]

    def is_held(pid):
        a = wide.attributes[pid]
        return (a["category"], a["colour"], a["pattern"]) in held

    held_mask = torch.tensor([is_held(p) for p in target_ids])
    table = [
        "| validation duet gallery | photos | queries | duet Acc@1 | shape@1 "
        "| appearance@1 | text only | late fusion |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, m in (
        ("as carved from train", best),
        ("widened like test", wide_metrics),
    ):
        cells = [m["duet_n_gallery"], m["duet_n_queries"]]
        cells += [
            f"{m[k]:.3f}"
            for k in (
                "duet_acc@1",
                "duet_shape@1",
                "duet_appearance@1",
                "text_acc@1",
                "fusion_acc@1",
            )
        ]
        table.append(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
    display(Markdown("\n".join(table)))
    print(
        f"duet Acc@1 on the widened gallery {spread['rate']:.3f}, standard error over "
        f"{spread['groups']} shapes {spread['se']:.3f} (95 % interval "
        f"{spread['low']:.3f}-{spread['high']:.3f}); targets in a held-out "
        f"combination: {int(held_mask.sum())} of {len(target_ids)} queries; "
        f"sketch-only FG-SBIR {fg_spread['rate']:.3f}, standard error "
        f"{fg_spread['se']:.3f} (95 % interval {fg_spread['low']:.3f}-"
        f"{fg_spread['high']:.3f})"
    )

# %% [markdown]
# In our teach run the widened gallery holds 720 photos and 2160 queries, and the duet
# finds its photo for **0.912** of them (shape@1 0.930, appearance@1 0.926) against 0.947
# on the gallery as carved; on the test split chapter 10 reads 0.919 for the same
# checkpoint. So most of the drop from validation to test is the gallery, not the
# shapes: with four variants per shape the words have more look-alikes to tell apart.
# The references fall further (text only 0.278 → 0.194, late fusion 0.902 → 0.858), so
# the duet's lead over late fusion grows from 0.045 to 0.054. The standard error over
# the 180 validation shapes is about 0.01 (0.009-0.011 in every run we scored). The
# sketch-only query's FG-SBIR, one photo per shape and three sketches each, is far less
# certain: 0.602 with a standard error of 0.030 (95 % interval 0.543-0.659). The
# chapter's 0.6 target is met by this run on these shapes; on another draw of 180
# shapes the same checkpoint could read anywhere from about 0.54 to 0.66, a wider
# spread than the three seeds' (0.546-0.602). We then
# scored the checkpoints of the trial table on the widened gallery (seeds 0, 1, 2; the
# sharper backbone's runs are those of "One frontier, two queries"):
#
# | backbone and recipe | widened validation duet, seeds 0 / 1 / 2 | mean | test duet, seeds 0 / 1 |
# |---|---:|---:|---:|
# | the book's (this chapter's recipe) | 0.912 / 0.904 / 0.891 | 0.902 | 0.919 / 0.913 |
# | 3000-step, default recipe | 0.901 / 0.877 / 0.909 | 0.896 | 0.881 / 0.854 |
# | 3000-step, `words_scale=0.67` | 0.917 / 0.895 / 0.902 | 0.905 | 0.892 / 0.883 |
# | 3000-step, `words_scale=0.67`, $\lambda_{words} = 0.5$ | 0.910 / 0.869 / 0.909 | 0.896 | 0.879 / 0.869 |
#
# Two suspects for the rest of the gap, both measured on validation. **Held-out
# combinations** are not it: widened to all eleven colours (1980 photos), the duet finds a
# target in a held-out colour/pattern combination as often as any other (252 such
# queries per run; book's backbone 0.865 / 0.857 / 0.825 against 0.826 / 0.820 / 0.804
# for the rest, 3000-step default 0.810 / 0.786 / 0.825 against 0.809 / 0.774 / 0.812).
# **Which shapes** is what remains. From the widened gallery to test, the book's
# recipe gains 0.007 and 0.009 (seeds 0 and 1; chapter 10 trains the same two runs),
# while the sharper backbone's six checkpoints lose between 0.000 and 0.031 (mean
# 0.019), so the gap between the two backbones' shifts is about 0.027. The paired
# bootstrap over validation shapes gives a difference of two models' duet Acc@1 a
# standard error of about 0.010 (their per-shape accuracies correlate only at 0.36), so
# a difference of two such shifts, measured on two sets of shapes, carries about
# 0.014, and averaging seeds does not shrink it, because every seed meets the same
# shapes. 0.027 is about two of those errors: at the edge of what the luck of 180
# shapes against 200 can do, and these two splits cannot say more. What validation can
# say is that on the widened gallery the two backbones' duets tie (means 0.902 against
# 0.896-0.905, each ± about 0.009), so validation neither rules out the switch to the
# sharper backbone nor supports it on the duet; it would have to be argued on the
# sketch-only query, which no widening changes (its gallery has one photo per shape).
# The book keeps its backbone; telling duets a point apart would need more validation
# shapes, which the training split would pay for (`load_world(...,
# val_fraction=...)`).

# %% [markdown]
# ### Test-time shifts (our addition)
#
# At 96 px a line drawn two pixels away from the edge it traces falls on other
# pixels of the convolutional stem, and the backbone, which never saw a hand-drawn
# sketch in pretraining, is not indifferent to that. Chapter 11's classic reference
# gained five points on real chairs from seeing sketch and photos in several views
# alike and averaging the similarities; `evaluate_duet(..., test_shift=k)` does the
# same for the duet (`duet_lib.views`): every sketch and every photo is also shifted
# by k pixels in each of eight directions (the border repeats the edge pixels), each
# query type is ranked in all nine views, and its similarities are averaged. The
# paper ranks the images as they are, and so does every other number of the book
# but one table of chapter 10 (the duet's test queries in the same nine views); the
# training and the checkpoint choice above are unchanged. It costs nine times the
# encoder passes of one evaluation.

# %%
if test_shift:
    t0 = time.perf_counter()
    shifted = evaluate_duet(best_model, data, "val", test_shift=test_shift)
    shift_s = time.perf_counter() - t0
    table = [
        f"| validation query | as they are | {test_shift}-pixel shifts, 9 views |",
        "|---|---:|---:|",
    ]
    for label, key in rows:
        if f"{key}_acc@1" in best:
            table.append(
                f"| {label} | {best[f'{key}_acc@1']:.3f} | "
                f"{shifted[f'{key}_acc@1']:.3f} |"
            )
    display(Markdown("\n".join(table)))
    print(f"test-time shifts evaluated in {shift_s:.1f} s")
else:
    shifted = None
    print("test-time shifts skipped (test_shift = 0)")

# %% [markdown]
# We picked 2 pixels on this run's validation split (4 pixels: 0.563, below the
# images as they are) and then measured the other two seeds of the trial table
# without choosing anything on them. Sketch-only FG-SBIR, validation Acc@1, as they
# are / with 2-pixel shifts: seed 0 0.602 / **0.626**, seed 1 0.583 / 0.626, seed 2
# 0.546 / 0.567; the mean of the three rises from 0.577 to 0.606, above the chapter's
# 0.6 target, which on the images as they are only this seed's run meets. The gain
# (0.02-0.04, one to two of the 0.030 standard errors that 180 shapes leave) is
# smaller than the spread between seeds, so what holds the sketch-only query near
# 0.6 is still the backbone's image features; the shifts take out a part of the
# noise in where lines fall, not the lack of shape detail. They help every query
# type, not the duet alone (this run, in 16 s): the image side $V(\text{sketch})$
# gains most (0.583 → 0.652, now above the sketch-only query), the duet 0.947 →
# 0.962, late fusion 0.902 → 0.930, text only 0.278 → 0.319 (its photos are shifted
# too). Chapter 10 ranks the images as they are, as the paper does, and shows the
# duet's test queries in the nine views beside its tables; exercise 10 asks what the
# views do for B-CLIP.

# %% [markdown]
# ### A labelled deviation: training more of $V$
#
# The paper trains only $V$'s LayerNorms. `unfreeze_blocks` also trains the last k
# transformer blocks of $V$: our deviation, offered because our backbone, unlike web
# CLIP, never saw a sketch in pretraining. We ran the chapter's recipe with it (seed 0,
# one thread, validation Acc@1 at step 400):
#
# | $V$ trained | FG-SBIR, $[P^L; s^w]$ | FG-SBIR, $V(\text{sketch})$ | duet | late fusion of its queries |
# |---|---:|---:|---:|---:|
# | LayerNorms (the paper, the default) | 0.43 | 0.61 | 0.87 | 0.91 |
# | LayerNorms + last block | 0.49 (0.53 at step 300) | 0.61 | 0.16 | 0.32 |
# | LayerNorms + all four blocks | 0.34 | 0.39 | 0.04 | 0.08 |
#
# The last block lifts the sketch-only query to the best FG-SBIR we measured in 400
# steps, and wrecks the duet. The triplet term pulls each photo towards its sketch, and
# a sketch has no colour: with a whole block free, the photo features shed the
# appearance the words need, so even the late fusion of the model's own queries falls
# to a third. With all four blocks free both halves suffer. A variant we tried outside
# the library, a copy of the last block for sketches only (photos keep the shared one),
# kept the duet (0.84) but did not lift FG-SBIR (0.43). On the world, then, the paper's
# choice stands. On real ChairV2, where no appearance words are asked for, training all
# four blocks does help (chapter 11, experiment 3).
#
# ## Checks
#
# Claims of this chapter: training ran and its losses fell; the checkpoint was selected
# on validation; in the teach profile the sketch-only FG-SBIR validation Acc@1 reaches the
# book's target of 0.6 (our teach run: 0.602 at the selected step) and the test-time
# shifts lift it further (0.626); on the world the duet beats both single modalities;
# the validation gallery widened like the test one reads the duet lower than the
# gallery as carved, with a standard error over shapes below 0.02, and the bootstrap's
# rate is the Acc@1 that `evaluate_duet` reports.

# %%
train_rows = result.history["train"]
first = sum(r["total"] for r in train_rows[:10]) / max(1, len(train_rows[:10]))
last = sum(r["total"] for r in train_rows[-10:]) / max(1, len(train_rows[-10:]))
assert all(r["total"] == r["total"] for r in train_rows), "a loss became NaN"
assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
if result.trained_now and len(train_rows) >= 20:
    assert last < first, (first, last)
metrics = {
    "val_fgsbir_acc@1": best.get("fgsbir_acc@1"),
    "val_fgsbir_acc@10": best.get("fgsbir_acc@10"),
    "val_duet_acc@1": best.get("duet_acc@1", float("nan")),
    "val_sketch_acc@1": best.get("sketch_acc@1", float("nan")),
    "val_text_acc@1": best.get("text_acc@1", float("nan")),
    "val_fusion_acc@1": best.get("fusion_acc@1", float("nan")),
    "val_wide_duet_acc@1": wide_metrics["duet_acc@1"] if dataset == "world" else None,
    "val_shifted_fgsbir_acc@1": shifted["fgsbir_acc@1"] if shifted else None,
    "val_shifted_duet_acc@1": shifted.get("duet_acc@1") if shifted else None,
    "val_wide_duet_se": spread["se"] if dataset == "world" else None,
    "val_fgsbir_se": fg_spread["se"] if dataset == "world" else None,
    "steps": result.step,
    "train_s": round(train_s, 1),
    "checkpoint": str(result.best_checkpoint),
}
save_metrics(out_dir, metrics)  # saved before the targets, so a miss keeps its numbers
if dataset == "world":
    # the bootstrap's rate is the duet Acc@1 that evaluate_duet reports
    assert abs(spread["rate"] - wide_metrics["duet_acc@1"]) < 1e-6, spread
    assert abs(fg_spread["rate"] - best["fgsbir_acc@1"]) < 1e-6, fg_spread
    assert wide_metrics["duet_n_gallery"] > best["duet_n_gallery"]
    assert wide_metrics["fgsbir_acc@1"] == best["fgsbir_acc@1"]  # same FG task
if profile == "teach" and dataset == "world":
    assert best["fgsbir_acc@1"] >= 0.6, best["fgsbir_acc@1"]
    if shifted:
        # the shifted views rank the sketch-only query better still
        assert shifted["fgsbir_acc@1"] > best["fgsbir_acc@1"], shifted
    assert best["duet_acc@1"] > max(best["sketch_acc@1"], best["text_acc@1"]), best
    # validation as carved flatters the duet; widened like test it reads lower,
    # and 180 shapes pin the rate to about +- 0.01
    assert wide_metrics["duet_acc@1"] < best["duet_acc@1"], wide_metrics
    assert spread["se"] < 0.02, spread
metrics

# %% [markdown]
# ## Summary
#
# - All six losses of the paper train together in one stage, with our seventh,
#   $\mathcal{L}_{words}$: the frozen CLIP writes a phrase for each training photo from
#   its own zero-shot reading, and the composed query learns to read it. A zero λ
#   switches a term off entirely.
# - Only V's LayerNorms, $C_{v2w}$, $P^L$ and $G$ learn; the text encoder stays frozen.
# - The checkpoint is chosen on a validation split held out of train; test is untouched.
# - Validation as carved from train flatters the duet (two photos per shape, no held-out
#   combinations): widened like the test gallery (`widen_split`) our run reads 0.912 ±
#   0.010 over shapes against 0.947, and 0.919 on test. Differences between models of
#   a point or two on 180 shapes are within that error (`bootstrap_rate`).
# - Test-time shifts (our addition, `test_shift`): seeing sketch and photos in nine
#   2-pixel-shifted views and averaging lifts every query type on validation; the
#   sketch-only FG-SBIR goes from 0.602 to 0.626 (three-seed mean 0.577 to 0.606).
# - The same chapter runs the paper setting: `--profile paper` (ViT-B-32, OpenAI weights,
#   ShoeV2, mixed precision) on a GPU, or several GPUs with
#   `torchrun --nproc_per_node N` around a script that calls `train_duet`.
#
# ## Exercises
#
# 1. Set `loss_weights` to `{"trip": 1.0}` and compare the duet row with the full model.
# 2. Train with `unfreeze_blocks=1`. What happens to the text-only and duet rows?
# 3. Kill the run half-way (interrupt the kernel), run the cell again and check that it
#    resumes and ends with the same metrics.
# 4. (Open) Which λ would you tune first on the validation split, and why?
# 5. Train with `trip_memory=2` and with `max_steps=800`, with and without it. Does the
#    memory help more when the run is longer?
# 6. Read this run's `phrases.json` (in its run folder) against the world's true
#    attributes (`data.attributes`): how often does a phrase name the wrong colour? Then
#    train the paper's six losses (`"words": 0`) and compare the two duet rows.
# 7. Train with `tau_trip=None` (the shared 0.07) and with `tau_trip=0.3`. Plot the
#    $\mathcal{L}_{trip}$ curve of each: which run's loss is nearly solved, and which
#    run's sketch-only query generalises better to the validation shapes?
# 8. Run chapter 02 with `-p max_steps 3000` (about an hour; it caches that backbone
#    beside the book's and prints its checkpoint), then this chapter with `pretrained`
#    set to that file. Compare the image side and the sketch-only query at each
#    evaluation. Then look for a change that keeps the duet above 0.93 and lets the
#    sketch-only query reach the 0.63 it finds without $\mathcal{L}_{words}$: the
#    weights and forms in the trial table mostly trade one for the other. Start from
#    `words_scale=0.67` with `reg_detach=True` or a lighter $\lambda_{words}$, use
#    `select_metric="both_acc@1"` to see the trade at each step, and try a schedule
#    of $\lambda_{words}$ or separate pseudo-words for the two queries. Score every
#    candidate on `widen_split(data, "val")` too, and give each number its standard
#    error over shapes (`bootstrap_rate`) before you call one recipe better.
# 9. Load the world with `val_fraction=0.2` (360 validation shapes, about 90 fewer
#    training shapes per category) and rerun the chapter. How much does the standard error of
#    the widened duet shrink, and what does the smaller training split cost the
#    sketch-only query?
# 10. Chapter 10 ranks the duet's test queries in nine views too. Give B-CLIP (chapter
#     10's baseline) the same views with shifted images of your own
#     (`duet_lib.views.shift_images`) and average its similarities. Does the duet's
#     lead over B-CLIP's late fusion survive when both see the shifts? Try 1 and 3
#     pixels on validation first.
#
# ## References
#
# - Koley, S. et al. *You'll Never Walk Alone: A Sketch and Text Duet for Fine-Grained
#   Image Retrieval.* CVPR 2024.
# - Sain, A. et al. *CLIP for All Things Zero-Shot Sketch-Based Image Retrieval,
#   Fine-Grained or Not.* CVPR 2023 (LayerNorm tuning, hyper-parameters).
# - Yu, Q. et al. *Sketch Me That Shoe.* CVPR 2016 (triplet FG-SBIR).
