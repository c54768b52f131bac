"""Where running servers are recorded, and which one answers to a name (no IPython, no TF).

The one home of server-name lookup: the manager writes the records (``<name>.json``) and the
server its info file (``<name>.info.json``) in the per-user state folder; this module reads
them. Both the manager (start/stop/list) and the client (``Client("MLP")``) import it, and it
imports neither, so the arrows point one way: manager -> client -> registry, manager -> registry.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

HOME_VAR = "TFSERVE_MAGIC_HOME"

# Popen objects of children started by this process (so they can be reaped, never zombies);
# the manager fills it, liveness checks here read it.
children: dict[int, subprocess.Popen] = {}


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


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def all_records() -> list[dict]:
    records = []
    for path in sorted(state_dir().glob("*.json")):
        if path.name.endswith(".info.json"):
            continue
        record = read_json(path)
        if record and isinstance(record.get("pid"), int) and isinstance(record.get("name"), str):
            records.append(record)
    return records


def pid_alive(pid: int, expect: Iterable[str] = ()) -> bool:
    """True if ``pid`` runs (not a zombie) and, where /proc tells, its command line matches."""
    proc = children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] in ("Z", "X"):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, IndexError):
        return True
    expect = [e for e in expect if e]
    return not expect or any(e in cmdline for e in expect)


def record_alive(record: dict) -> bool:
    return pid_alive(record["pid"], record.get("expect", ()))


# ---- lookup by name ----


def connect_host(host: str) -> str:
    """The address a local client dials for a server bound to ``host``."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class Address:
    """Where one model of a running server answers."""

    server: str  # the server's name
    model: str
    url: str  # REST base URL, "" while starting
    grpc_target: str | None  # "127.0.0.1:8500" for grpc.insecure_channel, or None
    models: tuple = ()


def _address(record: dict, model: str) -> Address:
    info = read_json(Path(record["info_path"])) if record.get("info_path") else None
    source = info or record
    host = source.get("host") or record.get("host", "127.0.0.1")
    port = int(source.get("port") or 0)
    url = f"http://{connect_host(host)}:{port}" if port else ""
    grpc_port = source.get("grpc_port", record.get("grpc_port"))
    grpc_target = f"{connect_host(host)}:{grpc_port}" if grpc_port else None
    models = tuple(source.get("models") or record.get("models") or ())
    return Address(record["name"], model, url, grpc_target, models)


def live_addresses() -> list[Address]:
    """One Address (first model) per live recorded server."""
    result = []
    for record in all_records():
        if record_alive(record):
            address = _address(record, "")
            result.append(_address(record, address.models[0] if address.models else ""))
    return result


def lookup(name: str, model: str | None = None) -> Address:
    """The server (by server name, or by a model it serves) that ``Client(name)`` means.

    A model name wins over a server name; ``model=`` picks a model of the server ``name``.
    LookupError lists what runs.
    """
    records = [r for r in all_records() if record_alive(r)]
    addresses = [_address(r, "") for r in records]
    order = sorted(range(len(records)), key=lambda i: addresses[i].server != name)
    if model is None:
        for i in order:
            if name in addresses[i].models and addresses[i].url:
                return _address(records[i], name)
    for i in order:
        found = addresses[i]
        if found.server == name and found.url and found.models:
            chosen = model or found.models[0]
            return _address(records[i], chosen)
    if model is not None:
        for i in order:
            if name in addresses[i].models and addresses[i].url:
                return _address(records[i], model)
    listing = "; ".join(
        f"{a.server} at {a.url} (models: {', '.join(a.models) or '?'})" for a in addresses
    )
    raise LookupError(
        f"no running server or model named {name!r}. "
        + (f"Running: {listing}." if listing else "No server is running.")
        + " Start one with `%tfserve start NAME BASE_PATH`, or pass a URL such as "
        "http://127.0.0.1:8501/v1/models/NAME."
    )
