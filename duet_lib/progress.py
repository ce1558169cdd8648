"""Progress bars of the book: widgets for readers, plain text for recorded runs.

In JupyterLab (with ``ipywidgets``, part of the ``book`` extra) ``tqdm.auto``
draws widget bars. A notebook executed by papermill has no browser to draw them:
its saved copy would keep only the widget's first frame ("0%"). The book runner
therefore sets ``DUET_PROGRESS=text`` before it executes chapters, and every bar
of ``duet_lib`` is then tqdm's plain text bar, whose final state is what the
executed notebook shows.

Usage::

    from duet_lib.progress import tqdm
"""

from __future__ import annotations

import os

#: Environment variable that selects the bar kind: "text" or "auto" (default).
PROGRESS_ENV = "DUET_PROGRESS"
_KINDS = ("auto", "text")


def progress_kind() -> str:
    """The bar kind the environment asks for: "auto" or "text".

    Raises:
        ValueError: ``DUET_PROGRESS`` holds another value.
    """
    kind = os.environ.get(PROGRESS_ENV, "auto").strip().lower() or "auto"
    if kind not in _KINDS:
        raise ValueError(
            f"{PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r} is not a progress kind; "
            f"valid: {', '.join(_KINDS)}"
        )
    return kind


if progress_kind() == "text":
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm

__all__ = ["PROGRESS_ENV", "progress_kind", "tqdm"]
