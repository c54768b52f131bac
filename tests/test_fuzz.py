"""Fuzzing the REST API with a seeded mutator (issue 16): no generated request may get a 5xx,
stall the server, or break it for the next client.

``make test`` sends a few thousand requests; ``make fuzz`` many more
(``TFSERVE_FUZZ_CASES``, ``TFSERVE_FUZZ_SEED``). A failing case is printed with its seed and
index, so it can be replayed with ``_case(random.Random(seed), index)``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import time

import pytest
import requests

from tests.fixtures.server import server_models_config, start_server

CASES = int(os.environ.get("TFSERVE_FUZZ_CASES", "2500"))
SEED = int(os.environ.get("TFSERVE_FUZZ_SEED", "16"))
STALL_S = 30.0  # a request that takes longer is a stall

_SEEDS = [
    b'{"instances": [1.0, 2.0, 3.0]}',
    b'{"inputs": [1.5, -2.25]}',
    b'{"signature_name": "scalar", "instances": [1, 2]}',
    b'{"instances": [{"a": [1.0, 2.0], "b": 3}, {"a": [0.5, 0.5], "b": -1}]}',
    b'{"inputs": {"a": [[1.0, 2.0]], "b": [7]}}',
    b'{"instances": ["hello", {"b64": "aGVsbG8="}]}',
    b'{"inputs": {"text": ["x", "yz"]}}',
    b'{"signature_name": "classify", "examples": [{"x": 1.0}, {"x": [2.0]}]}',
    b'{"context": {"x": 1.0}, "examples": [{}, {"x": 3.5}]}',
    b'{"instances": [[[0.1, 0.2], [0.3, 0.4]]]}',
]
_TOKENS = [
    b"[", b"]", b"{", b"}", b'"', b",", b":", b" ", b"\\", b"NaN", b"-Infinity", b"Inf", b"1e999",
    b"-0", b"01", b"1.", b".5", b"true", b"null", b'"\\ud800"', b'"\\u0000"', b"\x00", b"\xff",
    b"\xef\xbb\xbf", b'{"b64": "!!"}', b'{"b64": 5}', b"9" * 400, b"1" * 30, b"[" * 64,
    b'"instances"', b'"inputs"', b'"signature_name"', b'"examples"', b'"context"',
    b"18446744073709551616", b"-9223372036854775809", b'"' + b"a" * 3000 + b'"', b"\n\t\r",
]
_PATHS = [
    "/v1/models/half:predict", "/v1/models/half/versions/1:predict",
    "/v1/models/half/labels/stable:predict", "/v1/models/multi:predict",
    "/v1/models/strings:predict", "/v1/models/half:classify", "/v1/models/half:regress",
    "/v1/models/half/versions/99999999999999999999999:predict", "/v1/models/nope:predict",
    "/v1/models/half/versions/-1:predict", "/v1/models/%ZZ:predict",
    "/v1/models/half/versions/" + "9" * 5000 + ":predict",
]
_TYPES = [None, "application/json", "text/plain", "application/octet-stream"]


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(8)
        at = rng.randint(0, len(data))
        if kind == 0 and data:  # flip a byte
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind == 1:  # insert a token
            data[at:at] = rng.choice(_TOKENS)
        elif kind == 2 and data:  # delete a span
            del data[at:at + rng.randint(1, 8)]
        elif kind == 3 and data:  # duplicate a span
            end = min(len(data), at + rng.randint(1, 32))
            data[at:at] = data[at:end]
        elif kind == 4:  # truncate
            del data[at:]
        elif kind == 5:  # wrap the payload, or a number, in more nesting
            depth = rng.choice([2, 65, 70, 254, 300, 301, 5000])
            inner = bytes(data) if rng.random() < 0.5 else b"1.5"
            data = bytearray(b'{"instances": ' + b"[" * depth + inner + b"]" * depth + b"}")
        elif kind == 6:  # repeat the whole body (trailing values, huge arrays)
            data = data * rng.choice([2, 3, 50])
        else:  # swap in another seed's piece
            other = rng.choice(_SEEDS)
            cut = rng.randint(0, len(other))
            data[at:] = other[cut:]
    return bytes(data)


def _case(rng: random.Random, index: int):
    """(path, body, headers) of case ``index`` (deterministic for a given generator state)."""
    body = _mutate(rng, rng.choice(_SEEDS)) if rng.random() < 0.95 else rng.choice(_SEEDS)
    headers = {}
    content_type = rng.choice(_TYPES)
    if content_type:
        headers["Content-Type"] = content_type
    if rng.random() < 0.05:
        body = gzip.compress(body) if rng.random() < 0.8 else body
        headers["Content-Encoding"] = "gzip"
    if rng.random() < 0.02:
        body = base64.b64encode(body)
    return rng.choice(_PATHS), body, headers


@pytest.fixture(scope="module")
def fuzz_server(server_test_models, tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz-server")
    config = work / "models.config"
    config.write_text(server_models_config(server_test_models, canary=False,
                                         names=("multi", "strings")))
    server = start_server(None, config_file=config, workdir=work)
    yield server
    assert server.stop() == 0


def test_fuzzed_requests_never_get_5xx_or_stall(fuzz_server):
    url = fuzz_server.url
    rng = random.Random(SEED)
    session = requests.Session()
    failures, statuses = [], {}
    for index in range(CASES):
        path, body, headers = _case(rng, index)
        started = time.monotonic()
        try:
            response = session.post(url + path, data=body, headers=headers, timeout=STALL_S)
        except requests.RequestException as exc:
            failures.append(f"case {index} (seed {SEED}) {path[:100]}: {type(exc).__name__}: {exc}")
            session = requests.Session()
            continue
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500 or time.monotonic() - started >= STALL_S:
            failures.append(f"case {index} (seed {SEED}) {path[:100]} {body[:120]!r}: "
                            f"{response.status_code} {response.text[:300]}")
        elif response.status_code != 200:  # TF Serving echoes request bytes, valid UTF-8 or not
            text = response.content.decode("utf-8", "replace")
            assert "error" in json.loads(text), (index, text[:300])
        if len(failures) >= 5:
            break
    assert not failures, "\n".join(failures)
    assert statuses.get(400, 0) > CASES // 4, statuses  # the mutations really were bad input
    # The server is still right afterwards.
    response = requests.post(f"{url}/v1/models/half/versions/1:predict",
                             json={"instances": [1.0, 2.0]}, timeout=30)
    assert response.json() == {"predictions": [2.5, 3.0]}
    assert requests.get(f"{url}/v1/models/half", timeout=30).status_code == 200
    assert fuzz_server.alive()
