"""Dataset manifests: what a dataset copy must contain, and a check that it does.

Each dataset the book can use is described by ``data_manifests/<name>.yaml`` (the
schema is in ``data_manifests/README.md``): its licence and citation, the on-disk
layout read by :mod:`duet_lib.data.loaders`, the fixed files with their SHA-256, and
the sketch/photo counts per split. :func:`verify` compares a local copy with its
manifest and lists precisely what is missing or different; ``python -m
duet_lib.data verify NAME --root DIR`` runs it from the shell. Introduced in
chapter 01.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from duet_lib.data.loaders import LAYOUTS, load_dataset
from duet_lib.data.records import SPLITS

__all__ = [
    "MANIFEST_DIR",
    "REQUIRED_FIELDS",
    "ManifestError",
    "UnknownManifestError",
    "VerifyReport",
    "available_manifests",
    "load_manifest",
    "manifest_path",
    "sha256_file",
    "verify",
]

#: The committed manifests: ``<repo root>/data_manifests``.
MANIFEST_DIR = Path(__file__).resolve().parents[2] / "data_manifests"

#: Keys every manifest has (a stub may set most of them to null).
REQUIRED_FIELDS = (
    "name",
    "status",
    "version",
    "license",
    "citation",
    "homepage",
    "manual",
    "layout",
    "files",
    "splits",
    "notes",
)
STATUSES = ("ready", "stub")
# Count groups a manifest may state; "train+val" is the raw train split before the
# validation hold-out, "all" is every sketch and every photo file.
COUNT_GROUPS = ("train", "val", "test", "train+val", "all")


class ManifestError(ValueError):
    """A manifest file that is missing fields or has malformed values."""


class UnknownManifestError(ManifestError):
    """No manifest of that name."""


def available_manifests(directory: str | Path | None = None) -> list[str]:
    """Names of the manifests in ``directory`` (default :data:`MANIFEST_DIR`)."""
    directory = Path(directory) if directory is not None else MANIFEST_DIR
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))


def manifest_path(
    name_or_path: str | Path, directory: str | Path | None = None
) -> Path:
    """Resolve a manifest name (``chairv2``) or a path to a ``.yaml`` file.

    Raises:
        UnknownManifestError: neither an existing file nor a known name; the message
            lists the available names.
    """
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    directory = Path(directory) if directory is not None else MANIFEST_DIR
    path = directory / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    names = available_manifests(directory)
    raise UnknownManifestError(
        f"unknown dataset manifest {str(name_or_path)!r}; available in {directory}: "
        f"{', '.join(names) if names else '(none)'}"
    )


def _check_counts(where: str, counts: Any) -> None:
    if counts is None:
        return
    if not isinstance(counts, dict):
        raise ManifestError(f"{where}: splits.counts must be a mapping or null")
    for group, value in counts.items():
        if group not in COUNT_GROUPS:
            raise ManifestError(
                f"{where}: unknown count group {group!r}; valid: {', '.join(COUNT_GROUPS)}"
            )
        if not isinstance(value, dict) or not set(value) <= {"sketches", "photos"}:
            raise ManifestError(
                f"{where}: splits.counts.{group} must map 'sketches'/'photos' to ints"
            )
        for k, v in value.items():
            if v is not None and (not isinstance(v, int) or v < 0):
                raise ManifestError(f"{where}: splits.counts.{group}.{k} = {v!r}")


def load_manifest(
    name_or_path: str | Path, directory: str | Path | None = None
) -> dict[str, Any]:
    """Read and check one manifest.

    Args:
        name_or_path: manifest name (file stem in ``directory``) or a YAML path.
        directory: where names are looked up (default :data:`MANIFEST_DIR`).

    Returns:
        The manifest as a dict with at least :data:`REQUIRED_FIELDS`.

    Raises:
        UnknownManifestError: no such manifest.
        ManifestError: malformed YAML, missing fields or bad values.
    """
    path = manifest_path(name_or_path, directory)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping at the top level")
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing field(s) {', '.join(missing)}")
    if data["status"] not in STATUSES:
        raise ManifestError(f"{path}: status must be one of {STATUSES}")
    if data["status"] == "ready":
        if data["layout"] not in LAYOUTS:
            raise ManifestError(
                f"{path}: layout {data['layout']!r} is not one of {', '.join(LAYOUTS)}"
            )
        if not isinstance(data["files"], list):
            raise ManifestError(f"{path}: files must be a list")
        for i, entry in enumerate(data["files"]):
            if not isinstance(entry, dict) or "path" not in entry:
                raise ManifestError(f"{path}: files[{i}] needs a 'path'")
            if entry.get("type", "file") not in ("file", "dir"):
                raise ManifestError(f"{path}: files[{i}].type must be 'file' or 'dir'")
        if not isinstance(data["splits"], dict):
            raise ManifestError(f"{path}: splits must be a mapping")
        _check_counts(str(path), data["splits"].get("counts"))
        if not isinstance(data.get("loader_args") or {}, dict):
            raise ManifestError(f"{path}: loader_args must be a mapping")
    data["_path"] = str(path)
    return data


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`.

    Attributes:
        name: manifest name.
        root: the folder checked.
        checks: lines that passed.
        problems: lines that failed (missing files, wrong hashes, wrong counts).
        notes: information that is neither (hashes not recorded, profile-dependent
            counts).
        counts: what the loader found, {group: {"sketches": n, "photos": m}}.
    """

    name: str
    root: Path
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def format(self) -> str:
        """Readable multi-line report."""
        lines = [f"verify {self.name} at {self.root}"]
        lines += [f"  ok       {c}" for c in self.checks]
        lines += [f"  PROBLEM  {p}" for p in self.problems]
        lines += [f"  note     {n}" for n in self.notes]
        if self.ok:
            lines.append(f"RESULT: ok ({len(self.checks)} checks passed)")
        else:
            lines.append(f"RESULT: NOT OK ({len(self.problems)} problem(s))")
        return "\n".join(lines)


def _check_file(entry: dict[str, Any], root: Path, report: VerifyReport) -> None:
    rel = str(entry["path"])
    kind = entry.get("type", "file")
    if any(ch in rel for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(root / rel)))
        matches = [p for p in matches if (p.is_dir() if kind == "dir" else p.is_file())]
        if not matches:
            report.problems.append(f"missing {kind} matching {rel!r} in {root}")
            return
        if len(matches) > 1:
            report.problems.append(
                f"several {kind}s match {rel!r}: {', '.join(p.name for p in matches)}"
            )
            return
        path = matches[0]
        rel = path.relative_to(root).as_posix()
    else:
        path = root / rel
    if kind == "dir":
        if not path.is_dir():
            report.problems.append(f"missing folder {rel}/ (expected at {path})")
            return
        entries = entry.get("entries")
        n = sum(1 for p in path.iterdir() if not p.name.startswith("."))
        if entries is not None and n != entries:
            report.problems.append(f"folder {rel}/ has {n} entries, expected {entries}")
        else:
            report.checks.append(f"folder {rel}/ ({n} entries)")
        return
    if not path.is_file():
        report.problems.append(f"missing file {rel} (expected at {path})")
        return
    size = path.stat().st_size
    want_bytes = entry.get("bytes")
    if want_bytes is not None and size != want_bytes:
        report.problems.append(f"file {rel} has {size} bytes, expected {want_bytes}")
        return
    digest = sha256_file(path)
    want = entry.get("sha256")
    if want is None:
        report.checks.append(f"file {rel} ({size} bytes)")
        report.notes.append(
            f"sha256 of {rel} not recorded in the manifest; got {digest}"
        )
    elif digest != str(want).lower():
        report.problems.append(f"file {rel}: sha256 {digest}, expected {want}")
    else:
        report.checks.append(f"file {rel} ({size} bytes, sha256 {digest[:12]}...)")


def _group_counts(ds: Any) -> dict[str, dict[str, int]]:
    counts = ds.counts()
    counts["train+val"] = {
        k: counts["train"][k] + counts["val"][k] for k in ("sketches", "photos")
    }
    counts["all"] = {"sketches": len(ds.sketches), "photos": len(ds.photos)}
    return counts


def verify(
    manifest: str | Path | dict[str, Any],
    root: str | Path,
    *,
    directory: str | Path | None = None,
    check_images: bool = False,
) -> VerifyReport:
    """Check a local dataset copy against its manifest.

    Checks, in order: the root exists; every entry of ``files`` exists (files: size
    and SHA-256 where recorded; folders: number of entries where recorded); the
    layout's loader reads the copy; the counts per split group match
    ``splits.counts``; the number of skipped items matches ``splits.skipped`` when
    given. Loading never writes anything.

    Args:
        manifest: name, YAML path or an already loaded manifest dict.
        root: the dataset folder.
        directory: where manifest names are looked up.
        check_images: also decode every image (slower).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is the verdict.

    Raises:
        UnknownManifestError, ManifestError: the manifest itself is unusable.
    """
    data = (
        manifest if isinstance(manifest, dict) else load_manifest(manifest, directory)
    )
    root = Path(root)
    report = VerifyReport(name=str(data.get("name")), root=root)
    if data.get("status") != "ready":
        report.problems.append(
            f"manifest {data.get('name')!r} is a {data.get('status')}: it does not yet "
            "describe files or counts to check"
        )
        return report
    if not root.is_dir():
        report.problems.append(f"root folder {root} does not exist")
        return report
    for entry in data["files"]:
        _check_file(entry, root, report)
    if any(p.startswith("missing") for p in report.problems):
        report.notes.append("not loaded: expected files or folders are missing")
        return report

    kwargs = dict(data.get("loader_args") or {})
    kwargs.setdefault("dataset_name", data["name"])
    kwargs["check_images"] = check_images
    kwargs["quiet"] = True
    try:
        ds = load_dataset(data["layout"], root, **kwargs)
    except (FileNotFoundError, ValueError) as exc:
        report.problems.append(f"the {data['layout']!r} loader cannot read it: {exc}")
        return report
    report.counts = _group_counts(ds)
    report.checks.append(
        f"loaded with layout {data['layout']!r}: {len(ds.sketches)} sketches, "
        f"{len(ds.photos)} photos"
    )

    splits = data["splits"]
    expected = splits.get("counts")
    if expected is None:
        report.notes.append(
            "the manifest records no counts"
            + (f" ({splits['counts_note']})" if splits.get("counts_note") else "")
            + "; found "
            + ", ".join(
                f"{g} {c['sketches']}/{c['photos']}"
                for g, c in report.counts.items()
                if g in ("train", "val", "test")
            )
            + " sketches/photos"
        )
    else:
        for group, want in expected.items():
            got = report.counts[group]
            for what in ("sketches", "photos"):
                if want.get(what) is None:
                    continue
                if got[what] != want[what]:
                    report.problems.append(
                        f"{group}: {got[what]} {what}, expected {want[what]}"
                    )
                else:
                    report.checks.append(f"{group}: {got[what]} {what}")
    want_skipped = splits.get("skipped")
    if want_skipped is not None:
        if len(ds.skipped) != want_skipped:
            shown = "; ".join(f"{item}: {why}" for item, why in ds.skipped[:5])
            more = f" (+{len(ds.skipped) - 5} more)" if len(ds.skipped) > 5 else ""
            report.problems.append(
                f"{len(ds.skipped)} item(s) skipped by the loader, expected "
                f"{want_skipped}: {shown}{more}"
            )
        else:
            report.checks.append(f"{len(ds.skipped)} item(s) skipped")
    elif ds.skipped:
        report.notes.append(f"the loader skipped {len(ds.skipped)} item(s)")

    train, val, test = (set(ds.photo_ids(split)) for split in SPLITS)
    shared = sorted((train & val) | (train & test) | (val & test))
    if shared:
        report.problems.append(
            f"{len(shared)} photo(s) in more than one split: {', '.join(shared[:5])}"
        )
    else:
        report.checks.append("train, val and test photos are disjoint")
    return report
