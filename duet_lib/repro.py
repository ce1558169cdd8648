"""Reproducibility helpers: seeds, device choice and the environment report.

Every chapter calls :func:`env_report` first (so versions survive a later failure),
then :func:`seed_everything` and :func:`resolve_device`. Introduced in chapter 00.
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("torch", "torchvision", "open_clip_torch", "numpy", "pillow", "matplotlib")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy Generator for explicit use.

    Same seed, same numbers on CPU: we also ask torch for deterministic kernels
    (warning only where none exists).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """Turn 'auto' / 'cpu' / 'cuda[:N]' / 'mps' into a torch.device.

    Raises:
        RuntimeError: an accelerator was asked for explicitly but is not available.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={device!r} was requested but no CUDA GPU is visible; "
            "use device='auto' or 'cpu' on this machine"
        )
    if device == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RuntimeError("device='mps' was requested but MPS is not available")
    return torch.device(device)


def git_sha(short: bool = True) -> str:
    """The book's git commit, or 'unknown' outside a checkout."""
    args = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
    try:
        out = subprocess.run(
            args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def env_report(
    seed: int | None = None,
    device: str | torch.device | None = None,
    profile: str | None = None,
    quiet: bool = False,
) -> dict[str, str]:
    """Collect (and print) versions, device, threads, git SHA, seed and profile."""
    resolved = str(
        resolve_device(device) if isinstance(device, str) else device or "cpu"
    )
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        **{pkg: _version(pkg) for pkg in _PACKAGES},
        "device": resolved,
        "cuda": torch.version.cuda or "none",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "threads": str(torch.get_num_threads()),
        "git_sha": git_sha(),
        "seed": str(seed),
        "profile": str(profile),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "unset"),
    }
    if not quiet:
        width = max(map(len, report))
        print("\n".join(f"{k:<{width}}  {v}" for k, v in report.items()))
    return report
