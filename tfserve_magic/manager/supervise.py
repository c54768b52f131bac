"""The small supervisor of ``tensorflow_model_server``, which cannot watch its parent itself:
``python -m tfserve_magic.manager supervise PARENT_PID [--owners_file=PATH] -- ARGV...``."""

from __future__ import annotations

import signal
import subprocess
import sys

from tfserve_magic import owners
from tfserve_magic.server.process import pid_alive

USAGE = "usage: python -m tfserve_magic.manager supervise PARENT_PID -- COMMAND..."


def supervise(parent_pid: int, argv: list[str], owners_path: str = "") -> int:
    """Run ``argv`` and stop it when ``parent_pid`` and every other owner listed in
    ``owners_path`` are gone. SIGTERM/SIGINT are forwarded to it."""
    child = subprocess.Popen(argv)

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if not pid_alive(parent_pid):
            others = owners.live_owners(owners_path, pid_alive, exclude=parent_pid)
            if others:
                parent_pid = others[0]
                continue
            child.terminate()
            try:
                return child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


def main(args: list[str]) -> int:
    owners_arg = ""
    if len(args) >= 3 and args[2].startswith("--owners_file="):
        owners_arg = args.pop(2).partition("=")[2]
    if len(args) >= 3 and args[0] == "supervise" and args[2] == "--":
        return supervise(int(args[1]), args[3:], owners_arg)
    print(USAGE, file=sys.stderr)
    return 2
