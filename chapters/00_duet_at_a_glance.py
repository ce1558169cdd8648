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
# # 0. The duet at a glance
#
# A sketch pins down the *shape* of the object you want; a few words pin down what a
# sketch cannot show: colour, material, the scene around it. This book rebuilds, piece by
# piece and on a laptop, a method that lets the two work together to retrieve one photo
# out of many fine-grained look-alikes (Koley et al., CVPR 2024).
#
# The card below lists what you will learn, what you should know first and how long the
# chapter takes in each run profile. Everything here runs on a CPU with the defaults.

# %%
from IPython.display import Markdown, display

from duet_lib.book import chapter_card, chapter_map
from duet_lib.config import PROFILE_VALUES, PROFILES, ParameterError, validate_params
from duet_lib.plotting import pipeline_figure, use_book_style
from duet_lib.repro import env_report, resolve_device, seed_everything
from duet_lib.results import resolve_output_dir, save_figure, save_metrics

use_book_style()
display(Markdown(chapter_card("00_duet_at_a_glance")))

# %% tags=["parameters"]
profile = "teach"  # run profile: smoke, teach (default) or paper
seed = 0  # random seed
device = "auto"  # 'auto', 'cpu', 'cuda' or 'mps'
output_dir = (
    None  # where metrics and figures go; None -> build/outputs/<chapter>/<profile>
)

# %% [markdown]
# Values that depend on the parameters are computed in the next cell, after papermill
# has injected its own values. `validate_params` fails at once, with one message, when a
# name or a value is wrong.

# %%
validate_params(profile=profile, seed=seed, device=device, output_dir=output_dir)
rng = seed_everything(seed)
torch_device = resolve_device(device)
out_dir = resolve_output_dir(output_dir, "00_duet_at_a_glance", profile)
env = env_report(seed=seed, device=device, profile=profile)

# %% [markdown]
# ## The problem
#
# **Fine-grained sketch-based image retrieval** (FG-SBIR) asks: given a free-hand sketch
# of *one particular* shoe, find the photo of that very shoe among hundreds of shoes that
# all look alike (Yu et al., *Sketch Me That Shoe*, CVPR 2016). A sketch is an excellent
# description of shape: heel height, the curve of a chair's back, where the legs splay.
# It is a poor description of everything else. Nobody shades a sketch to say "glossy
# red leather", and the same sketch fits a shoe in every colour of the catalogue.
#
# Text is the opposite. "A red leather shoe" says colour and material at once, but no
# sentence a user would write pins down the exact outline. The paper's claim is that the
# two, used *together*, retrieve what neither retrieves alone, and that a frozen CLIP text
# encoder can be taught to read a sketch as if it were a word.
#
# | query | carries | fails when |
# |---|---|---|
# | sketch only | fine shape | the gallery holds the same shape in several colours |
# | text only | colour, material, context, coarse shape words | the gallery holds many shapes in one colour |
# | sketch + text (the duet) | both | — |
#
# ## The method in one picture
#
# The sketch passes through CLIP's image encoder $V$, whose LayerNorms are the only
# trained part; a small network $C_{v2w}$ turns the resulting embedding $s$ into a
# **pseudo-word token** $s^w$. That token is placed in a word sequence after a learned
# three-token prompt $P^L$ and read by CLIP's *frozen* text encoder $T_t$. During
# training there is no text, so the method invents its stand-in: the difference
# $\Delta = p^+ - s$ between the paired photo and the sketch, mapped by the same
# $C_{v2w}$. Six losses shape the model; a UNet-style decoder $G$ is used in training only.
# At test time the user's real words replace $\Delta$.

# %%
fig = pipeline_figure()
save_figure(fig, out_dir, "pipeline")

# %% [markdown]
# In the upper panel, solid blocks are trained and dashed blocks are frozen. The lower
# panel is all that runs when a user searches: one pass of $V$ over the sketch, one pass
# of the frozen text encoder over `[P^L ; s^w ; words]`, and a cosine ranking against
# photo embeddings computed once for the whole gallery.
#
# The six losses, each with its own chapter:
#
# | loss | takes | intent | chapter |
# |---|---|---|---|
# | $\mathcal{L}_{trip}$ | $s_L^T, p^+, p^-$ | sketch query nearer its photo than others | 3 |
# | $\mathcal{L}_{comp}$ | $s_L^{T,\Delta}, s_L^T, p^+$ | adding "text" moves the query towards its photo | 4 |
# | $\mathcal{L}_{reg}$ | $s_L^{T,N}, s_L^T, p^+$ | uninformative words do not pull the query away | 5 |
# | $\mathcal{L}_{TT}$ | $s_L^T, s_F^T$ | the learned prompt stays close to real English prompts | 6 |
# | $\mathcal{L}_{RT}$ | $s_L^T, p_s^\pm$ | region-aware photo embeddings | 7 |
# | $\mathcal{L}_{rec}$ | $G(s_L^T), G(s_L^{T,\Delta}), \mathcal{P}^+$ | decode the photo from the query | 8 |
#
# On the embedded world the book adds a seventh term of its own, $\mathcal{L}_{words}$
# (chapter 09): the frozen CLIP writes an appearance phrase for each training photo from
# its zero-shot reading, and the query $[P^L; s^w; \text{phrase}]$ must find that photo.
# It is a labelled deviation; a zero weight trains the paper's six.
#
# ## Chapter map

# %%
rows = chapter_map()
table = ["| chapter | title | kind | available |", "|---|---|---|---|"]
table += [
    f"| {r['chapter'][:2]} | {r['title']} | {r['kind']} | {'yes' if r['available'] else 'planned'} |"
    for r in rows
]
display(Markdown("\n".join(table)))

# %% [markdown]
# ## Run profiles
#
# One notebook serves three audiences. Its parameters cell holds the **teach** values;
# the runner passes the others from `duet_lib.config`, which is the only place they are
# defined.

# %%
for name in PROFILES:
    print(f"{name:>6}: {PROFILE_VALUES[name]}")

# %% [markdown]
# A wrong profile name is caught before any work starts, with the valid names in the
# message:

# %%
try:
    validate_params(profile="fast")
except ParameterError as err:
    message = str(err)
    print(message)

# %% [markdown]
# ## How to run a chapter
#
# **In JupyterLab.** `make book` (or `make install`) creates the project's `.venv`; then
# `.venv/bin/jupyter lab` and open any `chapters/NN_*.ipynb`. Both halves of a pair are
# kept in sync on save (`jupytext.toml`). If your JupyterLab lives in another environment,
# register the book's kernel once with
# `.venv/bin/python -m ipykernel install --user --name duet-book` and pick it.
#
# **With papermill.** Executed notebooks never overwrite the committed pair:
#
# ```bash
# .venv/bin/papermill chapters/00_duet_at_a_glance.ipynb \
#     build/executed/00_duet_at_a_glance.smoke.ipynb -k python3 -p profile smoke
# .venv/bin/python -m duet_lib.book run --profile smoke 00     # the same, recorded
# .venv/bin/python -m duet_lib.book run                        # the whole book (teach)
# ```
#
# Results land in `build/results/` (one JSON per chapter and `summary.md`), figures and
# checkpoints in `build/outputs/<chapter>/<profile>/`.
#
# **On a GPU with the real backbone.** The `paper` profile uses ViT-B-32 with OpenAI's
# weights at 224 px and the real ShoeV2 / ChairV2 data (see the README for where to place
# them):
#
# ```bash
# HF_HUB_OFFLINE=0 .venv/bin/python -m duet_lib.book run --profile paper 09 10
# .venv/bin/python -m duet_lib.book run --profile smoke -p device cuda 09   # a short GPU check
# ```

# %% [markdown]
# ## Checks
#
# This chapter claims that the map lists every chapter pair that exists, that the
# pipeline figure shows both paths, and that parameter validation names the valid
# profiles when it refuses one.

# %%
from pathlib import Path  # noqa: E402

pairs = sorted(p.stem for p in Path(".").glob("[0-9][0-9]_*.ipynb"))
listed = [r["chapter"] for r in rows]
assert all(p in listed for p in pairs), (
    f"chapters missing from the map: {set(pairs) - set(listed)}"
)
assert all(r["available"] == (r["chapter"] in pairs) for r in rows)
assert [a.get_title(loc="left") for a in fig.axes] == ["training", "test"]
assert all(name in message for name in PROFILES), message
save_metrics(out_dir, {"chapters_listed": len(rows), "chapters_available": len(pairs)})
print(f"{len(rows)} chapters in the map, {len(pairs)} available")

# %% [markdown]
# ## Summary
#
# - A sketch carries fine shape, text carries appearance and context; fine-grained
#   retrieval among look-alikes needs both.
# - The duet reads a sketch as a pseudo-word for a frozen CLIP text encoder and learns to
#   compose it with words, using $\Delta = p^+ - s$ in place of the missing text.
# - Only the image encoder's LayerNorms, a word converter, a three-token prompt and a
#   training-time decoder are trained.
# - Every chapter runs in three profiles: `smoke` (tests), `teach` (your laptop) and
#   `paper` (a GPU with the real data).
#
# ## Exercises
#
# 1. Run this chapter with papermill in the smoke profile and open
#    `build/results/summary.md`.
# 2. Pass an invalid parameter (`-p seed -1`) to the runner and read the error.
# 3. Write down three queries from your own life where a sketch alone fails and three
#    where words alone fail. Which attributes did each miss?
# 4. (Open) The test path uses no $\Delta$. Why can a model trained with $\Delta$ read
#    real words at test time? Keep your answer and revisit it after chapter 4.
#
# ## References
#
# - Koley, S., Bhunia, A. K., Sain, A., Chowdhury, P. N., Xiang, T., Song, Y.-Z. *You'll
#   Never Walk Alone: A Sketch and Text Duet for Fine-Grained Image Retrieval.* CVPR 2024.
# - Yu, Q., Liu, F., Song, Y.-Z., Xiang, T., Hospedales, T. M., Loy, C. C. *Sketch Me That
#   Shoe.* CVPR 2016.
# - Radford, A. et al. *Learning Transferable Visual Models From Natural Language
#   Supervision* (CLIP). ICML 2021.
