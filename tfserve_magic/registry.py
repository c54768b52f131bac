"""Where running servers are recorded, and which one answers to a name (no IPython, no TF).

The one home of server-name lookup: the manager writes the records (``<name>.json``) and the
server its info file (``<name>.info.json``) in the per-user state folder, both typed and read
through ``records.py``; this module finds them by name. Both the manager (start/stop/list)
and the client (``Client("MLP")``) import it, and it imports neither, so the arrows point one
way: manager -> client -> registry -> records, manager -> registry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from tfserve_magic.records import ServerRecord, read_record

HOME_VAR = "TFSERVE_MAGIC_HOME"


def state_dir() -> Path:
    """The per-user folder (mode 0700) of records and logs; read from the environment each call."""
    home = os.environ.get(HOME_VAR)
    if home:
        path = Path(home)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "tfserve_magic"
    else:
        path = Path.home() / ".cache" / "tfserve_magic"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix" and (path.stat().st_mode & 0o077):
        os.chmod(path, 0o700)
    return path


def record_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def info_path(name: str) -> Path:
    return state_dir() / f"{name}.info.json"


def all_records() -> list[ServerRecord]:
    """Every readable record in the state folder (live or not), by name."""
    records = []
    for path in sorted(state_dir().glob("*.json")):
        if path.name.endswith(".info.json"):
            continue
        record = read_record(path)
        if record is not None:
            records.append(record)
    return records


# ---- lookup by name ----


@dataclass(frozen=True)
class Address:
    """Where one model of a running server answers."""

    server: str  # the server's name
    model: str
    url: str  # REST base URL, "" while starting
    grpc_target: str | None  # "127.0.0.1:8500" for grpc.insecure_channel, or None
    models: tuple = ()


def _address(record: ServerRecord, model: str) -> Address:
    where = record.endpoint()
    return Address(record.name, model, where.url, where.grpc_target, tuple(where.models))


def live_addresses() -> list[Address]:
    """One Address (first model) per live recorded server."""
    result = []
    for record in all_records():
        if record.alive():
            address = _address(record, "")
            result.append(replace(address, model=address.models[0] if address.models else ""))
    return result


def lookup(name: str, model: str | None = None) -> Address:
    """The server (by server name, or by a model it serves) that ``Client(name)`` means.

    A model name wins over a server name; ``model=`` picks a model of the server ``name``.
    LookupError lists what runs.
    """
    addresses = [_address(r, "") for r in all_records() if r.alive()]
    order = sorted(range(len(addresses)), key=lambda i: addresses[i].server != name)
    if model is None:
        for i in order:
            if name in addresses[i].models and addresses[i].url:
                return replace(addresses[i], model=name)
    for i in order:
        found = addresses[i]
        if found.server == name and found.url and found.models:
            chosen = model or found.models[0]
            return replace(found, model=chosen)
    if model is not None:
        for i in order:
            if name in addresses[i].models and addresses[i].url:
                return replace(addresses[i], model=model)
    listing = "; ".join(
        f"{a.server} at {a.url} (models: {', '.join(a.models) or '?'})" for a in addresses
    )
    raise LookupError(
        f"no running server or model named {name!r}. "
        + (f"Running: {listing}." if listing else "No server is running.")
        + " Start one with `%tfserve start NAME BASE_PATH`, or pass a URL such as "
        "http://127.0.0.1:8501/v1/models/NAME."
    )
