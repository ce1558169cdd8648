"""The book's figure style and small drawing helpers shared by chapters.

Chapters call :func:`use_book_style` once and never set rcParams themselves.
"""

from __future__ import annotations

import matplotlib as mpl

# Okabe & Ito's colour-blind-safe palette.
OKABE_ITO = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)


def use_book_style() -> None:
    """SVG inline figures, a colour-blind-safe palette, readable fonts."""
    mpl.rcParams.update(
        {
            "axes.prop_cycle": mpl.cycler(color=OKABE_ITO),
            "image.cmap": "viridis",
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "svg.fonttype": "none",
        }
    )
    try:  # only inside a Jupyter kernel
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("svg")
    except Exception:  # noqa: BLE001 - outside IPython there is nothing to set
        pass


def _box(ax, xy, text, color, width=1.6, height=0.55, frozen=False):
    from matplotlib.patches import FancyBboxPatch

    x, y = xy
    patch = FancyBboxPatch(
        (x - width / 2, y - height / 2),
        width,
        height,
        boxstyle="round,pad=0.04",
        facecolor=color,
        edgecolor="black",
        linewidth=1.0,
        linestyle="--" if frozen else "-",
        alpha=0.9,
    )
    ax.add_patch(patch)
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    return patch


def _arrow(ax, start, end, label=None, rad=0.0):
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": "->",
            "lw": 1.1,
            "color": "0.25",
            "connectionstyle": f"arc3,rad={rad}",
        },
    )
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        ax.text(
            mx, my + 0.12, label, ha="center", va="bottom", fontsize=7.5, color="0.3"
        )


def pipeline_figure():
    """Draw the duet's training and test paths (chapter 00).

    Trained blocks are solid, frozen blocks dashed. Returns the matplotlib figure; its
    two axes are titled "training" and "test" (chapter 00 asserts this).
    """
    import matplotlib.pyplot as plt

    trained, frozen, data, loss = OKABE_ITO[5], "#dddddd", "#fff7d6", OKABE_ITO[1]
    fig, (ax_train, ax_test) = plt.subplots(2, 1, figsize=(10, 7.2))
    for ax in (ax_train, ax_test):
        ax.set_xlim(0, 12)
        ax.set_axis_off()

    ax = ax_train
    ax.set_ylim(-0.05, 5)
    ax.set_title("training", loc="left", fontweight="bold")
    _box(ax, (0.9, 4.2), "sketch S", data, 1.3)
    _box(ax, (0.9, 2.4), "photo P⁺ (and P⁻)", data, 1.6)
    _box(ax, (3.0, 3.3), "V  (CLIP image\nencoder, LN only)", trained, 1.9, 0.8)
    _arrow(ax, (1.6, 4.2), (2.1, 3.5))
    _arrow(ax, (1.7, 2.4), (2.1, 3.1))
    _box(ax, (5.2, 4.2), "s", data, 0.6)
    _box(ax, (5.2, 2.4), "p⁺, p⁻, regions", data, 1.5)
    _arrow(ax, (3.95, 3.5), (4.9, 4.2))
    _arrow(ax, (3.95, 3.1), (4.45, 2.45))
    _box(ax, (5.2, 3.3), "Δ = p⁺ − s", data, 1.2, 0.45)
    _arrow(ax, (5.2, 3.93), (5.2, 3.53))
    _arrow(ax, (5.2, 2.67), (5.2, 3.08))
    _box(ax, (7.2, 3.8), "C_v2w", trained, 1.0)
    _arrow(ax, (5.5, 4.2), (6.7, 3.9), "s")
    _arrow(ax, (5.8, 3.3), (6.7, 3.7), "Δ")
    _box(
        ax,
        (7.2, 0.45),
        "P^L prompt · P^F prompts\n· neutral text N",
        trained,
        2.3,
        0.65,
    )
    _box(
        ax,
        (9.3, 3.0),
        "T_t  (frozen CLIP\ntext encoder)",
        frozen,
        1.9,
        0.8,
        frozen=True,
    )
    _arrow(ax, (7.7, 3.8), (8.35, 3.2), "s^w, Δ^w")
    _arrow(ax, (8.35, 0.7), (8.9, 2.6))
    _box(
        ax,
        (11.0, 4.2),
        "L_trip · L_comp\nL_reg · L_TT · L_RT",
        loss,
        1.7,
        0.75,
    )
    _box(ax, (11.0, 1.6), "G (UNet decoder)\n→ L_rec", loss, 1.7, 0.7)
    _arrow(ax, (10.25, 3.3), (10.4, 3.82))
    _arrow(ax, (10.25, 2.7), (10.5, 1.95))
    _arrow(ax, (5.2, 2.12), (11.6, 3.82), rad=0.35)

    ax = ax_test
    ax.set_ylim(0, 3.2)
    ax.set_title("test", loc="left", fontweight="bold")
    _box(ax, (0.9, 2.4), "sketch", data, 1.1)
    _box(ax, (0.9, 0.8), 'words: "in red\nwith stripes"', data, 1.6, 0.7)
    _box(ax, (3.0, 2.4), "V", trained, 0.8)
    _box(ax, (4.9, 2.4), "C_v2w → s^w", trained, 1.5)
    _box(ax, (4.9, 0.8), "token lookup T_w", frozen, 1.6, frozen=True)
    _arrow(ax, (1.45, 2.4), (2.6, 2.4))
    _arrow(ax, (3.4, 2.4), (4.15, 2.4))
    _arrow(ax, (1.7, 0.8), (4.1, 0.8))
    _box(
        ax,
        (7.3, 1.6),
        "[P^L ; s^w ; words]\n→ T_t (frozen)",
        frozen,
        2.0,
        0.8,
        frozen=True,
    )
    _arrow(ax, (5.65, 2.4), (6.3, 1.9))
    _arrow(ax, (5.7, 0.8), (6.3, 1.3))
    _box(
        ax, (10.4, 1.6), "rank gallery photos\nby cos(query, V(photo))", loss, 2.4, 0.8
    )
    _arrow(ax, (8.3, 1.6), (9.2, 1.6), "query")
    fig.tight_layout()
    return fig
