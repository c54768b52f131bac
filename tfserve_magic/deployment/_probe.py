"""Preflight probe, run as ``python -m tfserve_magic.deployment._probe`` in a fresh interpreter.

It imports only TensorFlow (never Keras or an add-on library such as tensorflow-text), so its op
registry is TensorFlow's core registry: an op it does not know was registered by an add-on, and
stock TF Serving will not know it either. Then it loads each version as our server would and
measures how much resident memory the load added. Input: JSON on stdin
(``{"paths": [...], "tags": ["serve"], "load": true}``); output: one JSON document on stdout.
"""

from __future__ import annotations

import json
import os
import sys


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except (ImportError, OSError):
        return 0


def _graph_ops(meta_graph) -> set[str]:
    """Op names used by the graph and every function in its library (calls excluded)."""
    library = meta_graph.graph_def.library
    functions = {f.signature.name for f in library.function}
    ops = {node.op for node in meta_graph.graph_def.node}
    for function in library.function:
        ops.update(node.op for node in function.node_def)
    return {op for op in ops if op and op not in functions}


def _signatures(meta_graph) -> dict:
    from tensorflow.core.framework import types_pb2

    result = {}
    for name, sig in meta_graph.signature_def.items():
        inputs = {}
        for key, info in sig.inputs.items():
            shape = info.tensor_shape
            dims = None if shape.unknown_rank else [int(d.size) for d in shape.dim]
            inputs[key] = {"dtype": types_pb2.DataType.Name(info.dtype), "shape": dims}
        result[name] = {"method_name": sig.method_name, "inputs": inputs}
    return result


def _loader_kind(path: str, tags: list[str]):
    """(kind, note): #11's ``loader_kind`` where it exists, else a plain tf.saved_model.load."""
    try:
        from tfserve_magic.server.models import loader_kind
    except ImportError:
        loader_kind = None
    if loader_kind is not None:
        return loader_kind(path, tags=tuple(tags)), ""
    import tensorflow as tf

    tf.saved_model.load(path, tags=list(tags))
    return "tf2", "this version of tfserve_magic has no session fallback; loaded with tf.saved_model.load"


def _warmup(path: str) -> dict | None:
    """The version's TF Serving warm-up file, read as TF Serving reads it: None when there is
    none, else {"records": n} or {"records": n, "error": why TF Serving would fail the load}."""
    from tfserve_magic.server.warmup import MAX_RECORDS, requests_path

    file = requests_path(path)
    if not os.path.exists(file):
        return None
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    try:
        for record in tf.data.TFRecordDataset(file):
            entry = prediction_log_pb2.PredictionLog()
            entry.ParseFromString(record.numpy())
            if entry.WhichOneof("log_type") in ("session_run_log", "predict_streamed_log"):
                return {"records": count, "error": f"record {count + 1} is a "
                        f"{entry.WhichOneof('log_type')}, which TF Serving cannot replay"}
            count += 1
    except tf.errors.OpError as exc:
        return {"records": count, "error": f"bad TFRecord framing ({exc.message})"}
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError: reported, not raised
        return {"records": count, "error": f"record {count + 1} is not a PredictionLog ({exc})"}
    if count > MAX_RECORDS:
        return {"records": count, "error": f"more than {MAX_RECORDS} records"}
    return {"records": count}


def probe(paths: list[str], tags: list[str], load: bool) -> dict:
    from tfserve_magic.server import _no_keras

    _no_keras.install()
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    from tfserve_magic.server.models import read_meta_graph

    out = {"tf_version": tf.__version__, "models": {}}
    for path in paths:
        entry: dict = {"path": path}
        out["models"][path] = entry
        try:
            meta_graph = read_meta_graph(path, tags)
        except (OSError, LookupError, ValueError) as exc:
            entry["error"] = str(exc).strip() or type(exc).__name__
            continue
        info = meta_graph.meta_info_def
        entry["tensorflow_version"] = info.tensorflow_version or None
        entry["ops"] = sorted(_graph_ops(meta_graph))
        entry["unknown_ops"] = [op for op in entry["ops"] if op_def_registry.get(op) is None]
        entry["signatures"] = _signatures(meta_graph)
        entry["warmup"] = _warmup(path)
        if not load or entry["unknown_ops"]:
            continue
        before = _rss_bytes()
        try:
            kind, note = _loader_kind(path, tags)
        except Exception as exc:  # noqa: BLE001 - reported to the user as a refusal
            entry["load_error"] = (str(exc).strip() or type(exc).__name__).split("\n\n")[0][:2000]
            continue
        entry["loader"] = kind
        if note:
            entry["loader_note"] = note
        entry["rss_delta_bytes"] = max(0, _rss_bytes() - before)
    out["rss_bytes"] = _rss_bytes()
    return out


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    request = json.loads(sys.stdin.read() or "{}")
    result = probe(list(request.get("paths", [])), list(request.get("tags", ["serve"])),
                   bool(request.get("load", True)))
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
