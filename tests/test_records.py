"""The registry's records and info files: one typed reader and writer (records.py), the lookup by
name built on them (registry.py), and the one rule for the address a local client dials."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tfserve_magic import records, registry
from tfserve_magic.records import RecordError, ServerInfo, ServerRecord


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.HOME_VAR, str(tmp_path))
    return tmp_path


def _record(home, name="MLP", **changes) -> ServerRecord:
    fields = dict(name=name, pid=os.getpid(), log_path=str(home / f"{name}.log"),
                  info_path=str(home / f"{name}.info.json"), models=("MLP",),
                  gpu="none", poll=2.5, workers="2", extra_args=("--enable_batching",),
                  port_retries=0, timeout=30.0, key={"port": 0})
    fields.update(changes)
    return ServerRecord(**fields)


def _info(port=8601, host="127.0.0.1", **changes) -> ServerInfo:
    fields = dict(pid=os.getpid(), host=host, port=port, url=f"http://127.0.0.1:{port}",
                  models={"MLP": {"base_path": "/m", "versions": [3, 1]}}, grpc_port=8600,
                  workers=[{"index": 0, "pid": 11, "rss_bytes": 5}])
    fields.update(changes)
    return ServerInfo(**fields)


def test_a_record_round_trips_with_every_start_option(home):
    record = _record(home)
    path = registry.record_path("MLP")
    record.write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = records.read_record(path)
    assert again == record
    data = json.loads(path.read_text())
    assert data["extra_args"] == ["--enable_batching"] and data["workers"] == "2"
    assert data["format"] == records.RECORD_FORMAT and data["models"] == ["MLP"]


def test_bad_records_are_unreadable_and_unknown_keys_are_ignored(home):
    path = home / "x.json"
    good = _record(home).to_json()
    path.write_text(json.dumps({**good, "added_by_a_newer_writer": 1}))
    assert records.read_record(path) == _record(home)
    for broken in ({**good, "pid": "12"}, {k: v for k, v in good.items() if k != "pid"},
                   {**good, "extra_args": [1]}, {**good, "poll": "fast"}):
        path.write_text(json.dumps(broken))
        assert records.read_record(path) is None
    path.write_text(json.dumps(good)[:-5])  # a partial file
    assert records.read_record(path) is None
    with pytest.raises(RecordError, match="port_retries"):
        _record(home, port_retries=None)


def test_endpoint_comes_from_the_info_file_once_written(home):
    record = _record(home, host="127.0.0.1", grpc_port=None)
    where = record.endpoint()
    assert (where.url, where.port, where.models) == ("", 0, {"MLP": []})  # still starting
    _info().write(record.info_path)
    where = record.endpoint()
    assert where.url == "http://127.0.0.1:8601" and where.models == {"MLP": [1, 3]}
    assert where.grpc_target == "127.0.0.1:8600" and where.info.workers[0].pid == 11


def test_one_rule_for_a_server_bound_to_every_ipv6_address(home):
    record = _record(home, host="::", port=8700, grpc_port=8701, info_path=None)
    where = record.endpoint()
    assert where.url == "http://[::1]:8700" and where.grpc_target == "[::1]:8701"


def test_lookup_reads_live_records_only(home):
    live = _record(home)
    live.write(registry.record_path(live.name))
    _info().write(live.info_path)
    dead = _record(home, name="Gone", pid=2**22 + 12345, info_path=None, port=8800)
    dead.write(registry.record_path(dead.name))
    (home / "junk.json").write_text("{not json")
    assert [r.name for r in registry.all_records()] == ["Gone", "MLP"]
    address = registry.lookup("MLP")
    assert (address.server, address.model, address.url) == ("MLP", "MLP", "http://127.0.0.1:8601")
    assert [a.server for a in registry.live_addresses()] == ["MLP"]
    with pytest.raises(LookupError, match="no running server or model named 'Gone'"):
        registry.lookup("Gone")
