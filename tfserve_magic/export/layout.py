"""The folders of a base path: numbered versions, hidden scratch folders of exports under way,
and the rename that installs a verified version (the atomic step)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from pathlib import Path

from tfserve_magic.server.process import pid_alive

from .result import ExportError, ServedVersionWarning


def numbered_versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


def default_model_name(base: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", base.name) or "model"
    return name


def resolve_base(base_path) -> Path:
    if base_path is None or str(base_path).strip() == "":
        raise ExportError("BASE_PATH is empty; give a folder such as ./saved/mnist")
    base = Path(os.path.expanduser(str(base_path))).absolute()
    if base.exists() and not base.is_dir():
        raise ExportError(f"BASE_PATH {base} is a file; give a folder (versions go inside it)")
    if (base / "saved_model.pb").exists():
        raise ExportError(
            f"{base} is itself a SavedModel version folder; give its parent as BASE_PATH "
            f"({base.parent}) so the new model becomes the next numbered version"
        )
    return base


# .tmp-export-PID-HEX: a version being written; .replaced-PID-N-HEX: an old one being swapped out
_SCRATCH = re.compile(r"^\.(?:tmp-export|replaced)-(\d+)-")


def scratch_path(base: Path) -> Path:
    """A new hidden folder beside the versions for this process's export to write into."""
    return base / f".tmp-export-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_stale_scratch(base: Path) -> None:
    """Remove ``.tmp-export-PID-*`` / ``.replaced-PID-*`` folders whose writer has exited
    (an export killed half-way); folders of running exports are left alone."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _SCRATCH.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _serving(base: Path, version: int) -> list[str]:
    """Names of this user's running servers that have ``version`` of ``base`` loaded."""
    try:
        from tfserve_magic import manager

        handles = manager.servers()
    except Exception:  # noqa: BLE001 - a warning must never break an export
        return []
    names = []
    for handle in handles:
        same = handle.base_path and Path(handle.base_path).absolute() == base
        if same and any(version in versions for versions in handle.models.values()):
            names.append(handle.name)
    return names


def warn_if_served(base: Path, version: int) -> list[str]:
    import warnings

    names = _serving(base, version)
    if not names:
        return []
    message = (
        f"version {version} of {base} is being served by {', '.join(names)}, which keeps "
        "answering with the model it loaded: a server (like TF Serving) does not reload a "
        f"version whose files change. Restart it (%tfserve start {names[0]} {base} "
        "--restart) or export a new version (leave out --version) to serve this model"
    )
    warnings.warn(message, ServedVersionWarning, stacklevel=3)
    return [message]


def install(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the verified temporary folder to its version number (the atomic step)."""
    if target.exists():
        if not overwrite:
            raise FileExistsError(str(target))
        old = target.with_name(f".replaced-{os.getpid()}-{target.name}-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.rename(tmp, target)




# ---- a full disk: said in plain words before TensorFlow's text

_NO_SPACE = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


def out_of_space(exc: BaseException | None) -> bool:
    """True if ``exc`` or what caused it is a full disk or quota. TensorFlow's errors carry no
    errno, only the system's text ('No space left on device', 'Disk quota exceeded')."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in _NO_SPACE:
            return True
        if any(os.strerror(code) in str(exc) for code in _NO_SPACE):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def no_space_message(base: Path, exc: BaseException) -> str:
    """The plain-words start of the error for an export that ran out of space under ``base``."""
    quota = hasattr(errno, "EDQUOT") and (
        getattr(exc, "errno", None) == errno.EDQUOT or os.strerror(errno.EDQUOT) in str(exc)
    )
    where = base
    while not where.exists() and where.parent != where:
        where = where.parent
    try:
        free = f"{_size_text(shutil.disk_usage(where).free)} free"
    except OSError:
        free = "free space unknown"
    return (
        f"cannot write the model to {base}: no space left on the device"
        f"{' (the disk quota is used up)' if quota else ''}, {free} there. Free some space or "
        "export to a BASE_PATH on another disk"
    )


def _size_text(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return ""
