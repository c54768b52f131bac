"""How ``%%predict`` shows a prediction, and the equivalent request as curl/Python/Node code.

``PredictionResult`` puts each instance's predicted class (probability, top-K) beside its true
label, with accuracy and latency; ``request_snippet`` writes a runnable request for the exact
body that was sent. No IPython import: reprs are plain ``__repr__``/``_repr_html_``.
"""

from __future__ import annotations

import getpass
import hashlib
import html
import json
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from tfserve_magic._text import html_table, text_table
from tfserve_magic.client import Prediction, decode_json, encode_json
from tfserve_magic.outputs import labels_per_instance, read_outputs
from tfserve_magic.proxy_url import curl_note

__all__ = [
    "PredictionResult", "RequestSnippet", "request_snippet", "grpc_snippet", "SNIPPET_KINDS",
]

SNIPPET_KINDS = ("curl", "python", "node", "grpc")
_MISMATCH_STYLE = "background-color:#fdd"


# ---------------------------------------------------------------------------------- result view
class PredictionResult:
    """A predict call shown per instance, beside the true labels when given.

    - ``predictions``: the outputs (numpy array, or dict of arrays); ``prediction`` the
      ``Prediction`` itself
    - ``reading``: how the outputs read (``tfserve_magic.outputs.Reading``: task, reason);
      ``task`` its task; ``task=`` overrides the inference
    - ``predicted_classes`` (ids, or names from a classify answer), ``probabilities`` (of the
      predicted class), ``top_classes``, ``top_scores``: for classifiers, else None
    - ``labels``, ``correct`` (bool per instance; multi-label: every label right),
      ``accuracy`` (0..1, classifiers), ``mismatches`` (indices)
    - ``evaluation``: the numbers that fit the task (``tfserve_magic.scoring``) when labels are
      given, else None; ``metrics(labels, threshold)`` computes them again
    - ``class_names``: names of the classes (``class_names=``), ``inputs``: what was sent, as
      given (shown beside a regression's worst rows), ``threshold`` (binary, multi-label)
    - ``latency_s``, ``n_requests``, ``request_body`` (dict or the exact bytes sent), ``url``
    """

    def __init__(
        self,
        prediction: Prediction,
        *,
        labels=None,
        top_k: int = 3,
        max_rows: int = 20,
        name: str | None = None,
        task: str | None = None,
        class_names=None,
        inputs=None,
        threshold: float = 0.5,
    ):
        self.prediction = prediction
        self.predictions = prediction.outputs
        self.latency_s = prediction.latency_s
        self.n_requests = prediction.n_requests
        self.request_body = prediction.request_body
        self.url = prediction.url
        self.name = name or (prediction.url or "").rsplit("/", 1)[-1] or "model"
        self.top_k = max(0, int(top_k))
        self.max_rows = max(1, int(max_rows))
        self.n = _batch_size(self.predictions)
        # the one rule for outputs (tfserve_magic.outputs), as every widget reads them
        self.reading = read_outputs(self.predictions, labels, task=task, class_names=class_names)
        self.threshold = float(threshold)
        if self.reading.task == "binary" and self.reading.probabilities is not None:
            positive = self.reading.probabilities[:, 1] >= self.threshold  # the class at T
            self.reading = replace(self.reading, class_ids=positive.astype(np.int64))
        self.class_names = self.reading.class_names
        self.inputs = inputs
        self._given_labels = labels
        self.labels = None if labels is None else labels_per_instance(
            labels, self.n, rows=not self.reading.is_classifier)
        self.task = self.reading.task
        self.score_name = self.reading.output
        self.kind = None  # "probabilities" | "scores" | "classes" | None (plain values)
        self.predicted_classes = self.probabilities = self.top_classes = self.top_scores = None
        if self.reading.is_classifier:
            self.predicted_classes = self.reading.predicted()
            top = self.reading.top(self.top_k)
            if top is None:
                self.kind = "classes"
            else:
                self.kind = "probabilities" if self.reading.score_kind == "probabilities" \
                    else "scores"
                self.top_classes, self.top_scores = top
                ids = self.reading.class_ids  # the predicted class's (binary: at threshold)
                self.probabilities = self.reading.scores[np.arange(len(ids)), ids]

        self.correct = self.accuracy = self.evaluation = None
        self.mismatches: list[int] = []
        if labels is not None and self.task is not None:
            self.evaluation = self.metrics()
            self.correct = self.reading.correct(labels)
        if self.correct is not None:
            if self.predicted_classes is not None:
                self.accuracy = float(self.correct.mean()) if self.n else None
            self.mismatches = [int(i) for i in np.flatnonzero(~self.correct)]

    def metrics(self, labels=None, threshold: float | None = None):
        """The numbers that fit the task (``tfserve_magic.scoring.metrics``) against
        ``labels`` (default: the labels given), at ``threshold`` (default: the one given)."""
        from tfserve_magic.scoring import metrics

        labels = self._given_labels if labels is None else labels
        if labels is None:
            raise ValueError("no labels: pass metrics(labels) or %%predict --labels Y")
        return metrics(self.reading, labels,
                       threshold=self.threshold if threshold is None else threshold,
                       inputs=self.inputs)

    # -- summary
    def summary(self) -> str:
        requests_text = "1 request" if self.n_requests == 1 else f"{self.n_requests} requests"
        parts = [
            f"{self.name}: {self.n} instance{'s' if self.n != 1 else ''}",
            f"{requests_text}, {self.latency_s * 1000:.1f} ms",
        ]
        if self.accuracy is not None:
            right = self.n - len(self.mismatches)
            parts.append(f"accuracy {self.accuracy:.1%} ({right}/{self.n})")
        return " | ".join(parts)

    def _rows(self):
        """Headers, rows and per-row mismatch flags for the shown instances."""
        shown = range(min(self.n, self.max_rows))
        if self.task == "multilabel":
            return self._label_rows(shown)
        if self.task == "regression" and self.evaluation is not None:
            e = self.evaluation
            rows = [[i, _values(e.predicted[i]), _values(e.true[i]), f"{e.abs_error[i]:.4g}"]
                    for i in shown]
            return ["#", "predicted", "true", "|error|"], rows, [False] * len(rows)
        if self.predicted_classes is None:
            outputs = self.predictions if isinstance(self.predictions, dict) else None
            if outputs is None:
                headers = ["#", "prediction"]
                rows = [[i, _abridge(_item(self.predictions, i))] for i in shown]
            else:
                headers = ["#", *outputs]
                rows = [[i, *(_abridge(_item(v, i)) for v in outputs.values())] for i in shown]
            if self.labels is not None:
                headers.append("true")
                for i, row in zip(shown, rows):
                    row.append(_abridge(self.labels[i]))
            return headers, rows, [False] * len(rows)
        headers = ["#", "predicted"]
        if self.kind in ("probabilities", "scores"):
            headers.append("probability" if self.kind == "probabilities" else "score")
            if self.top_k > 1:
                headers.append(f"top-{self.top_k}")
        if self.labels is not None:
            headers += ["true", ""]
        rows, flags = [], []
        for i in shown:
            row = [i, _label_text(self.predicted_classes[i])]
            if self.kind in ("probabilities", "scores"):
                row.append(f"{self.probabilities[i]:.3f}")
                if self.top_k > 1:
                    row.append(
                        ", ".join(
                            f"{self._class_text(c)} ({s:.3f})"
                            for c, s in zip(self.top_classes[i], self.top_scores[i])
                        )
                    )
            wrong = False
            if self.labels is not None:
                wrong = not bool(self.correct[i])
                row += [self._truth_text(self.labels[i]), "MISMATCH" if wrong else "ok"]
            rows.append(row)
            flags.append(wrong)
        return headers, rows, flags

    def _label_rows(self, shown):
        """Multi-label rows: the active labels by name (and the true ones)."""
        names = self.class_names or tuple(str(k) for k in range(self.reading.active.shape[1]))
        probabilities = self.reading.probabilities

        def listed(row):
            return ", ".join(names[k] for k in np.flatnonzero(row)) or "(none)"

        headers = ["#", "predicted labels", "scores"]
        if self.labels is not None:
            headers += ["true", ""]
        rows, flags = [], []
        for i in shown:
            active = probabilities[i] >= self.threshold
            row = [i, listed(active), " ".join(f"{p:.2f}" for p in probabilities[i])]
            wrong = False
            if self.labels is not None:
                wrong = not bool(self.correct[i])
                row += [listed(np.asarray(self.labels[i]).astype(bool)),
                        "MISMATCH" if wrong else "ok"]
            rows.append(row)
            flags.append(wrong)
        return headers, rows, flags

    def _truth_text(self, label) -> str:
        """A true class id by its name, when the classes have names and the label is an id."""
        names = self.reading.class_names
        if names is not None and np.asarray(label).dtype.kind in "iu" and not all(
                n.lstrip("-").isdigit() for n in names) and 0 <= int(label) < len(names):
            return names[int(label)]
        return _label_text(label)

    def _class_text(self, k) -> str:
        names = self.reading.class_names
        return names[int(k)] if names is not None else _label_text(k)

    def _footer(self) -> list[str]:
        lines = []
        if self.n > self.max_rows:
            lines.append(f"... {self.n - self.max_rows} more instances not shown (max_rows)")
        hidden = [i for i in self.mismatches if i >= self.max_rows]
        if hidden:
            listed = ", ".join(str(i) for i in hidden[:20])
            more = f" and {len(hidden) - 20} more" if len(hidden) > 20 else ""
            lines.append(f"mismatches further down: {listed}{more}")
        if self.labels is not None and self.task is None:
            lines.append(f"no classifier-shaped output ({self.reading.reason}): labels shown, "
                         "no accuracy")
        elif self.task is not None:
            lines.append(f"read as {self.task}: {self.reading.reason}")
        return lines

    def __repr__(self) -> str:
        headers, rows, _ = self._rows()
        parts = [self.summary(), text_table(headers, rows), *self._footer()]
        if self.evaluation is not None:
            parts += ["", repr(self.evaluation)]
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        headers, rows, flags = self._rows()
        styles = [_MISMATCH_STYLE if wrong else None for wrong in flags]
        table = html_table(headers, rows, row_styles=styles, caption=self.summary())
        footer = "".join(f"<div>{html.escape(line)}</div>" for line in self._footer())
        scores = "" if self.evaluation is None else self.evaluation._repr_html_()
        return f"<div class='tfserve-predict'>{table}{footer}{scores}</div>"


def _batch_size(outputs) -> int:
    if isinstance(outputs, dict):
        first = next(iter(outputs.values()), np.zeros(0))
        return int(np.shape(first)[0]) if np.ndim(first) else 1
    return int(np.shape(outputs)[0]) if np.ndim(outputs) else 1


def _item(value, i: int):
    """Instance i of an output; a scalar (rank-0 columnar output) is its own only instance."""
    return value if np.ndim(value) == 0 else value[i]


def _values(row) -> str:
    return ", ".join(f"{v:.4g}" for v in np.asarray(row, dtype=np.float64).reshape(-1))


def _label_text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    return str(value.item() if isinstance(value, np.generic) else value)


def _abridge(value, width: int = 60) -> str:
    if isinstance(value, float) or (
        isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0
        and np.asarray(value).dtype.kind == "f"
    ):  # a float (a regression target, say): 5 significant digits, not 17
        text = f"{float(np.asarray(value)):.5g}"
        text = text if any(c in text for c in ".eni") else text + ".0"
    elif isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        text = _label_text(np.asarray(value).item())
    elif isinstance(value, (np.ndarray, np.generic, list)):
        text = np.array2string(np.asarray(value), threshold=8, edgeitems=3, precision=4)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ---------------------------------------------------------------------------------- snippets
class RequestSnippet:
    """A runnable request (``code``) for one body; ``body_path`` when the body is in a file."""

    def __init__(self, kind: str, code: str, body_path: Path | None, body_bytes: int):
        self.kind = kind
        self.code = code
        self.body_path = body_path
        self.body_bytes = body_bytes

    def __str__(self) -> str:
        return self.code

    def __repr__(self) -> str:
        return self.code

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.code)}</pre>"


def request_snippet(
    kind: str,
    url: str,
    body,
    *,
    max_inline: int = 2000,
    body_dir: str | os.PathLike | None = None,
    tls=None,
) -> RequestSnippet:
    """curl, Python ``requests`` or Node.js code that sends ``body`` to ``url``.

    ``body`` is the exact bytes/str that were sent, or a dict (encoded as the client encodes
    it). A body longer than ``max_inline`` characters is written in full to a file that the
    code reads, and only an abridged preview, marked as such, is shown inline. ``tls``: the
    client's ``tfserve_magic.client.tls.ClientTls``, written as the matching options.
    """
    if kind not in SNIPPET_KINDS or kind == "grpc":
        kinds = ", ".join(k for k in SNIPPET_KINDS if k != "grpc")
        raise ValueError(
            f"unknown snippet kind {kind!r}: use one of {kinds} (grpc_snippet writes gRPC code)"
        )
    data = body.encode("utf-8") if isinstance(body, str) else body
    if not isinstance(data, (bytes, bytearray)):
        data = encode_json(data)
    data = bytes(data)
    text = data.decode("utf-8", errors="replace")
    path = None
    preview = None
    if len(text) > max_inline:
        path = _save_body(data, url, body_dir)
        preview = _preview(data, max_inline // 4)
    maker = {"curl": _curl, "python": _python, "node": _node}[kind]
    code = maker(url, text, path, preview, len(data))
    if tls is not None:
        code = _with_tls(kind, code, tls)
    return RequestSnippet(kind, code, path, len(data))


def _with_tls(kind: str, code: str, tls) -> str:
    """The code with the client's certificates: curl --cacert/--cert/--key, requests'
    verify=/cert=, and for Node a note (its fetch takes a CA from the environment only)."""
    if kind == "curl":
        options = "".join(f"  {option} \\\n" for option in tls.curl_options())
        return code.replace(" \\\n", " \\\n" + options, 1)
    if kind == "python":
        arguments = "".join(f"    {name}={value!r},\n"
                            for name, value in tls.requests_arguments().items())
        return code.replace("    data=body,\n", "    data=body,\n" + arguments, 1)
    ca = tls.requests_arguments().get("verify")
    note = f"// HTTPS: run with NODE_EXTRA_CA_CERTS={ca}\n" if isinstance(ca, str) else ""
    if tls.cert is not None:
        note += "// (a client certificate needs an https.Agent or undici Agent with cert/key)\n"
    return note + code


def _save_body(data: bytes, url: str, body_dir) -> Path:
    folder = _requests_folder(body_dir)
    model = re.sub(r"[^\w.-]", "_", url.rsplit("/models/", 1)[-1].split(":")[0].split("/")[0])
    path = folder / f"{model or 'request'}-{hashlib.sha256(data).hexdigest()[:12]}.json"
    if not path.exists() or path.stat().st_size != len(data):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def _requests_folder(body_dir) -> Path:
    """Where large request bodies are saved for the snippets that read them."""
    if body_dir is None and os.environ.get("TFSERVE_MAGIC_HOME"):  # the per-user state folder
        folder = Path(os.environ["TFSERVE_MAGIC_HOME"]) / "requests"
    elif body_dir is None:
        try:
            user = getpass.getuser()
        except Exception:  # no user name in some containers
            user = str(os.getuid()) if hasattr(os, "getuid") else "user"
        folder = Path(tempfile.gettempdir()) / f"tfserve_magic-{user}" / "requests"
    else:
        folder = Path(body_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _preview(data: bytes, budget: int) -> str:
    """The body with long lists cut to their first items, as one line of at most ~budget."""
    try:
        parsed = decode_json(data)
    except ValueError:
        flat = " ".join(data.decode("utf-8", errors="replace").split())
        return flat[:budget] + " ..."

    def cut(value, depth=0):
        if isinstance(value, list):
            head = [cut(v, depth + 1) for v in value[:2]]
            return head + ([f"... {len(value) - 2} more"] if len(value) > 2 else [])
        if isinstance(value, dict):
            return {k: cut(v, depth + 1) for k, v in value.items()}
        return value

    flat = json.dumps(cut(parsed), allow_nan=True)
    flat = re.sub(r'"\.\.\. (\d+) more"', r"... (\1 more)", flat)
    return flat if len(flat) <= budget else flat[:budget] + " ..."


def _comment_lines(prefix: str, preview: str | None, size: int, path: Path | None) -> str:
    if path is None:
        return ""
    return (
        f"{prefix} The full body ({size:,} bytes) is in {path}; abridged, it reads:\n"
        f"{prefix}   {preview}\n"
    )


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _curl(url: str, text: str, path, preview, size) -> str:
    data = f"@{path}" if path is not None else text
    return (
        _comment_lines("#", preview, size, path)
        + curl_note(url)  # the same request through Jupyter's proxy, on JupyterHub/Binder
        + f"curl -sS -X POST {_shell_quote(url)} \\\n"
        + "  -H 'Content-Type: application/json' \\\n"
        + f"  --data-binary {_shell_quote(data)}"
    )


def _python(url: str, text: str, path, preview, size) -> str:
    if path is not None:
        body_line = f"body = open({str(path)!r}, 'rb').read()"
    else:
        body_line = f"body = {text!r}"
    return (
        _comment_lines("#", preview, size, path)
        + "import requests\n\n"
        + f"{body_line}\n"
        + "response = requests.post(\n"
        + f"    {url!r},\n"
        + "    data=body,\n"
        + "    headers={'Content-Type': 'application/json'},\n"
        + ")\n"
        + "print(response.status_code, response.json())"
    )


def _node(url: str, text: str, path, preview, size) -> str:
    if path is not None:
        body_line = f"const body = require('fs').readFileSync({json.dumps(str(path))});"
    else:
        body_line = f"const body = {json.dumps(text)};"
    return (
        _comment_lines("//", preview, size, path)
        + f"{body_line}\n"
        + f"fetch({json.dumps(url)}, {{\n"
        + "  method: 'POST',\n"
        + "  headers: { 'Content-Type': 'application/json' },\n"
        + "  body,\n"
        + "}).then(async (response) => console.log(response.status, await response.text()));"
    )


def grpc_snippet(target: str, request, *, timeout: float = 30.0, max_inline: int = 2000,
                 body_dir: str | os.PathLike | None = None, tls=None) -> RequestSnippet:
    """Python code with TF Serving's official gRPC stubs that sends ``request`` (a
    ``PredictRequest``) to ``target`` (``host:port``). Inputs are written as numpy literals, or
    saved to ``.npy`` files the code loads when they are larger than ``max_inline``. ``tls``:
    the client's ``ClientTls``, written as ``grpc.ssl_channel_credentials``."""
    from tfserve_magic import tensor_proto

    spec = request.model_spec
    lines = [
        "import grpc",
        "import numpy as np",
        "import tensorflow as tf",
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc",
        "",
        *_grpc_channel_lines(target, tls),
        "stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)",
        "request = predict_pb2.PredictRequest()",
        f"request.model_spec.name = {spec.name!r}",
    ]
    if spec.signature_name:
        lines.append(f"request.model_spec.signature_name = {spec.signature_name!r}")
    which = spec.WhichOneof("version_choice")
    if which == "version":
        lines.append(f"request.model_spec.version.value = {spec.version.value}")
    elif which == "version_label":
        lines.append(f"request.model_spec.version_label = {spec.version_label!r}")
    total = 0
    first_path = None
    for name, proto in request.inputs.items():
        array = tensor_proto.to_numpy(proto)
        total += array.nbytes
        literal = _numpy_literal(array)
        if len(literal) > max_inline:
            path = _save_array(array, spec.name, body_dir)
            first_path = first_path or path
            lines.append(f"# {name}: {array.dtype} {list(array.shape)}, saved by %%predict")
            literal = f"np.load({str(path)!r}, allow_pickle={array.dtype == object})"
        lines.append(f"request.inputs[{name!r}].CopyFrom(tf.make_tensor_proto({literal}))")
    if request.output_filter:
        lines.append(f"request.output_filter.extend({list(request.output_filter)!r})")
    lines += [
        f"response = stub.Predict(request, {timeout:g})  # timeout in seconds",
        "outputs = {name: tf.make_ndarray(t) for name, t in response.outputs.items()}",
        "print(response.model_spec.version.value, outputs)",
    ]
    return RequestSnippet("grpc", "\n".join(lines), first_path, total)


def _grpc_channel_lines(target: str, tls) -> list[str]:
    options = ["    options=[('grpc.max_send_message_length', -1),",
               "             ('grpc.max_receive_message_length', -1)],"]
    if tls is None:
        return ["channel = grpc.insecure_channel(", f"    {target!r},", *options, ")"]
    shown = tls.grpc_files()
    if shown["server_name"]:
        options[-1] = options[-1][:-2] + ","
        options.append(f"             ('grpc.ssl_target_name_override', {shown['server_name']!r})],")
    return [
        "channel = grpc.secure_channel(",
        f"    {target!r},",
        "    grpc.ssl_channel_credentials(",
        *[f"        {name}=open({path!r}, 'rb').read()," for name, path in shown["files"].items()],
        "    ),",
        *options,
        ")",
    ]


def _numpy_literal(array: np.ndarray) -> str:
    if array.dtype == object:
        return f"np.array({array.tolist()!r}, dtype=object)"
    return f"np.array({array.tolist()!r}, dtype={array.dtype.name!r})"


def _save_array(array: np.ndarray, model: str, body_dir) -> Path:
    data = array.tobytes() if array.dtype != object else repr(array.tolist()).encode()
    digest = hashlib.sha256(data + str(array.shape).encode()).hexdigest()[:12]
    safe = re.sub(r"[^\w.-]", "_", model) or "request"
    path = _requests_folder(body_dir) / f"{safe}-{digest}.npy"
    if not path.exists():
        np.save(path, array, allow_pickle=array.dtype == object)
    return path
