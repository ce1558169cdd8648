"""Command line for the dataset manifests (chapter 01).

    python -m duet_lib.data list
    python -m duet_lib.data verify chairv2 --root /path/to/ChairV2

``verify`` exits with 0 when the copy matches its manifest and 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from duet_lib.data.manifests import (
    ManifestError,
    available_manifests,
    load_manifest,
    verify,
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m duet_lib.data",
        description="List the book's dataset manifests or check a local copy.",
    )
    parser.add_argument(
        "--manifest-dir",
        default=None,
        help="folder of manifests (default: data_manifests/ of the project)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the available manifests")
    ver = sub.add_parser("verify", help="check a dataset copy against its manifest")
    ver.add_argument("name", help="manifest name (e.g. chairv2) or path to a .yaml")
    ver.add_argument("--root", required=True, help="the dataset folder to check")
    ver.add_argument(
        "--check-images", action="store_true", help="also decode every image file"
    )
    return parser


def _list(directory: str | None) -> int:
    names = available_manifests(directory)
    if not names:
        print("no manifests found")
        return 1
    rows = []
    for name in names:
        try:
            m = load_manifest(name, directory)
            rows.append(
                (
                    name,
                    str(m["status"]),
                    str(m["layout"] or "-"),
                    "manual" if m["manual"] else "",
                    str(m.get("title") or ""),
                )
            )
        except ManifestError as exc:
            rows.append((name, "INVALID", "", "", str(exc)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[4])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = _build_parser().parse_args(argv)
    if args.command == "list":
        return _list(args.manifest_dir)
    try:
        report = verify(
            args.name,
            args.root,
            directory=args.manifest_dir,
            check_images=args.check_images,
        )
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
