"""Run a printed request snippet (curl, python, node) and read the response it printed."""

from __future__ import annotations

import ast
import subprocess
import sys

from tfserve_magic.wire_json import decode_json


def run_snippet(kind: str, code: str) -> str:
    command = {
        "curl": ["bash", "-c", code],
        "python": [sys.executable, "-c", code],
        "node": ["node", "-e", code],
    }[kind]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def response_of(kind: str, output: str):
    """The response JSON a snippet printed (curl: the body; python/node: 'status body')."""
    if kind == "curl":
        return decode_json(output.encode())
    status, _, rest = output.partition(" ")
    assert status == "200", output
    return ast.literal_eval(rest) if kind == "python" else decode_json(rest.encode())
