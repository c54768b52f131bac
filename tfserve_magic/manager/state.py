"""The manager's files in the per-user state folder: records of live servers, their owners and
log files, and the handles built from them (stale records of dead servers are pruned here)."""

from __future__ import annotations

from pathlib import Path

from tfserve_magic.manager.handle import ServerHandle
from tfserve_magic.manager.rest import live_models
from tfserve_magic.records import ServerRecord
from tfserve_magic.registry import all_records, record_path, state_dir
from tfserve_magic.server.process import children


def owners_path(name: str) -> Path:
    return state_dir() / f"{name}.owners"


def log_path(name: str) -> Path:
    logs_dir = state_dir() / "logs"
    logs_dir.mkdir(mode=0o700, exist_ok=True)
    return logs_dir / f"{name}.log"


def save(record: ServerRecord) -> None:
    """Write ``record`` as ``<name>.json`` (atomically); a new start forgets an old failure."""
    record.write(record_path(record.name))
    failed_path(record.name).unlink(missing_ok=True)


def failed_path(name: str) -> Path:
    return state_dir() / f"{name}.failed"


def failure_in_log(name: str) -> str | None:
    """Why server ``name`` stopped by itself, from its log's ``Server failed: ...`` line (the
    workers' parent writes one after a crash loop), or None."""
    from tfserve_magic.server.workers import FAILED_PREFIX

    try:
        lines = log_path(name).read_text(encoding="utf-8", errors="replace").splitlines()[-200:]
    except OSError:
        return None
    found = [line.split(FAILED_PREFIX, 1)[1].strip() for line in lines if FAILED_PREFIX in line]
    return found[-1] if found else None


def failures() -> dict[str, str]:
    """name -> why, for servers that stopped by themselves since their last start."""
    result = {}
    for path in sorted(state_dir().glob("*.failed")):
        try:
            result[path.stem] = path.read_text(encoding="utf-8").strip()
        except OSError:
            continue
    return result


def remove_files(record: ServerRecord) -> None:
    """Remove a server's record, info file and owners file (its log stays)."""
    for path in (record_path(record.name), record.info_path, record.owners_path):
        if path:
            try:
                Path(path).unlink()
            except FileNotFoundError:
                pass


def live_records() -> list[ServerRecord]:
    """Records of running servers; records of dead ones are removed."""
    live = []
    for record in all_records():
        if record.alive():
            live.append(record)
        else:
            children.pop(record.pid, None)
            remove_files(record)
            reason = failure_in_log(record.name)
            if reason:
                failed_path(record.name).write_text(reason + "\n", encoding="utf-8")
    return live


def record_for(name: str) -> ServerRecord:
    """The record of the running server ``name``; LookupError lists what runs."""
    records = live_records()
    for record in records:
        if record.name == name:
            return record
    running = ", ".join(r.name for r in records) or "none"
    reason = failures().get(name)
    if reason:
        raise LookupError(f"server {name!r} stopped by itself: {reason} (see %tfserve logs {name}; "
                          f"running: {running})")
    raise LookupError(f"no running server named {name!r} (running: {running})")


def handle_for(record: ServerRecord, *, refresh: bool = False) -> ServerHandle:
    """The handle of a recorded server; ``refresh`` asks it which versions are AVAILABLE now."""
    handle = ServerHandle.from_record(record)
    if refresh and handle.url:
        live = live_models(handle.url, list(handle.models), timeout=1.0)
        handle.healthy = live is not None
        if live is not None:
            handle.models = live
    return handle


def find(name: str) -> ServerHandle | None:
    """The live server called ``name``, or None."""
    for record in live_records():
        if record.name == name:
            return handle_for(record)
    return None
