"""Which ``tensorflow/serving`` image runs a SavedModel written by a given TensorFlow version.

TF Serving releases one image per TensorFlow minor version (``X.Y.Z`` and ``X.Y.Z-gpu`` on
Docker Hub), built against that TensorFlow. A model is safest on the image of the TensorFlow
that wrote it: an older image may lack ops (or op attributes) the newer TensorFlow emits, a newer
one runs old models (TensorFlow keeps graph compatibility forwards).

The table lists, per minor version, the first release of that series: ``X.Y.0``, or the first
patch where the series had no ``.0`` release (2.5.1, 2.15.1, 2.16.1). It was taken from TF
Serving's release tags (github.com/tensorflow/serving, up to 2.20.0 of April 2026); every entry
also exists as ``-gpu``. Update ``SERVING_RELEASES`` when TF Serving releases a new minor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IMAGE = "tensorflow/serving"

# (major, minor) -> the image tag of that TF Serving series (see the module docstring).
SERVING_RELEASES: dict[tuple[int, int], str] = {
    (1, 10): "1.10.0", (1, 11): "1.11.0", (1, 12): "1.12.0", (1, 13): "1.13.0",
    (1, 14): "1.14.0", (1, 15): "1.15.0",
    (2, 0): "2.0.0", (2, 1): "2.1.0", (2, 2): "2.2.0", (2, 3): "2.3.0", (2, 4): "2.4.0",
    (2, 5): "2.5.1", (2, 6): "2.6.0", (2, 7): "2.7.0", (2, 8): "2.8.0", (2, 9): "2.9.0",
    (2, 10): "2.10.0", (2, 11): "2.11.0", (2, 12): "2.12.0", (2, 13): "2.13.0",
    (2, 14): "2.14.0", (2, 15): "2.15.1", (2, 16): "2.16.1", (2, 17): "2.17.0",
    (2, 18): "2.18.0", (2, 19): "2.19.0", (2, 20): "2.20.0",
}

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)")
_TAG_RE = re.compile(r"^(latest|\d+\.\d+\.\d+)(-gpu)?$")


@dataclass
class TagChoice:
    """The chosen tag, the TF version it serves and the notes that explain the choice."""

    tag: str
    serving_version: tuple[int, int] | None
    notes: list[str] = field(default_factory=list)

    @property
    def image(self) -> str:
        return f"{IMAGE}:{self.tag}"


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``"2.19.0"`` / ``"2.21.0-dev2025"`` -> ``(2, 19)``; None when unknown."""
    match = _VERSION_RE.match((text or "").strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def choose_tag(writer: str | None, *, gpu: bool = False, override: str | None = None,
               fallback: str | None = None) -> TagChoice:
    """The image tag for a model written by TensorFlow ``writer`` (its ``tensorflow_version``).

    ``fallback`` is the TensorFlow version to assume when the SavedModel does not record one
    (the TensorFlow installed here). ``override`` (``--image-tag``) wins, with a note when it is
    older than the writer.
    """
    suffix = "-gpu" if gpu else ""
    wanted = parse_version(writer)
    notes: list[str] = []
    if wanted is None:
        wanted = parse_version(fallback)
        if wanted is not None:
            notes.append(
                "the SavedModel does not record which TensorFlow wrote it; assuming "
                f"TensorFlow {_fmt(wanted)} (installed here)"
            )
    if override:
        if not _TAG_RE.match(override):
            notes.append(f"--image-tag {override!r} is not a released tag form (X.Y.Z[-gpu] or "
                         "latest); make sure it exists on Docker Hub")
        if gpu and not override.endswith("-gpu"):
            notes.append(f"--gpu with --image-tag {override}: the CPU image cannot use the GPU; "
                         f"use {override}-gpu")
        served = parse_version(override)
        if served and wanted and served < wanted:
            notes.append(
                f"--image-tag {override} runs TensorFlow {_fmt(served)}, older than the "
                f"TensorFlow {_fmt(wanted)} that wrote the model: ops or attributes it added may "
                "be missing there"
            )
        return TagChoice(override, served, notes)
    if wanted is None:
        newest = max(SERVING_RELEASES)
        notes.append(f"TensorFlow version unknown: using the newest image, {SERVING_RELEASES[newest]}")
        return TagChoice(SERVING_RELEASES[newest] + suffix, newest, notes)
    if wanted in SERVING_RELEASES:
        return TagChoice(SERVING_RELEASES[wanted] + suffix, wanted, notes)
    newest, oldest = max(SERVING_RELEASES), min(SERVING_RELEASES)
    if wanted > newest:
        notes.append(
            f"the model was written by TensorFlow {_fmt(wanted)}, newer than the newest TF "
            f"Serving image known here ({SERVING_RELEASES[newest]}): it runs if the graph uses "
            "no op or attribute added since; the preflight's op check and a smoke test tell "
            "(pass --image-tag when a newer image exists)"
        )
        return TagChoice(SERVING_RELEASES[newest] + suffix, newest, notes)
    if wanted < oldest:
        notes.append(f"TensorFlow {_fmt(wanted)} predates the images listed here; using "
                     f"{SERVING_RELEASES[oldest]}, which loads older graphs")
        return TagChoice(SERVING_RELEASES[oldest] + suffix, oldest, notes)
    later = min(v for v in SERVING_RELEASES if v > wanted)
    notes.append(f"no TF Serving release for TensorFlow {_fmt(wanted)}; using the next one, "
                 f"{SERVING_RELEASES[later]}")
    return TagChoice(SERVING_RELEASES[later] + suffix, later, notes)
