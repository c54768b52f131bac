"""Start, find and stop model-server processes for this user (no IPython, no TensorFlow).

A server is a child process (``sys.executable -m tfserve_magic serve ...``, or the real
``tensorflow_model_server``) whose output goes to a log file. It is recorded in the per-user
state folder as ``<name>.json`` (``records.ServerRecord``); the embedded server also writes
``<name>.info.json`` (``records.ServerInfo``) once its port is bound and its models are loaded.
``start`` waits for that file (or REST readiness for the real binary) or for the child's exit,
then confirms with the REST status call. Servers started here stop when this process exits
(atexit), and watch this process's pid so a SIGKILLed kernel leaves no orphan; ``detach=True``
opts out of both. A server reused by another process belongs to it too (``owners.py``): it
stops when its last owner is gone.

Modules, one job each: ``api`` (start/stop/servers/status/logs/find), ``spec`` (what a start
request means), ``launch`` (run the child, wait until it serves, reuse rules), ``control``
(name locks, signals, the exit hook), ``state`` (records, handles), ``handle``
(``ServerHandle``), ``views`` (tables), ``results``, ``rest``, ``logfiles``, ``supervise``.
"""

from tfserve_magic.manager.api import (
    DEFAULT_PORT_RETRIES,
    default_workers,
    find_model,
    logs,
    running_record,
    servers,
    start,
    start_result,
    status,
    stop,
)
from tfserve_magic.manager.handle import ServerHandle
from tfserve_magic.manager.logfiles import LOG_TAIL_LINES
from tfserve_magic.manager.results import (
    Failed,
    GpuMemoryWarning,
    Launched,
    Reused,
    StartError,
    TimedOut,
)
from tfserve_magic.manager.spec import MODEL_SERVER_BINARY, MODEL_SERVER_VAR
from tfserve_magic.manager.state import find
from tfserve_magic.manager.views import ServerTable, StatusView, format_servers, format_status
from tfserve_magic.records import RECORD_FORMAT, ServerRecord
from tfserve_magic.registry import HOME_VAR, state_dir

__all__ = [
    "DEFAULT_PORT_RETRIES", "HOME_VAR", "LOG_TAIL_LINES", "MODEL_SERVER_BINARY",
    "MODEL_SERVER_VAR", "RECORD_FORMAT", "Failed", "GpuMemoryWarning", "Launched", "Reused",
    "ServerHandle", "ServerRecord", "ServerTable", "StartError", "StatusView", "TimedOut",
    "default_workers", "find", "find_model", "format_servers", "format_status", "logs",
    "running_record", "servers", "start", "start_result", "state_dir", "status", "stop",
]
