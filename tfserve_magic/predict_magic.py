"""``%%predict`` and ``%predict``: parse the line, build the request, show the result.

The cell body is a Python expression evaluated in the notebook's namespace (an array, a list, a
dict of named inputs), or, when it starts with ``{`` and is valid JSON, a TF Serving request body
sent byte for byte. Every failure is a ``UsageError`` with the helpful message, not a traceback.
"""

from __future__ import annotations

import json
import shlex

import numpy as np
from IPython.core.error import UsageError

from tfserve_magic.magic_args import MagicArgumentParser
from tfserve_magic.outputs import TASKS
from tfserve_magic.predict_view import SNIPPET_KINDS

__all__ = ["run_predict_magic", "split_line", "build_parser"]

VALUE_FLAGS = ("--signature", "--version", "--label", "--labels", "--top", "-o", "--show",
               "--task", "--class-names", "--threshold")
BOOL_FLAGS = ("--columnar", "--grpc", "-h", "--help")
_BODY_KEYS = {"instances", "inputs", "signature_name"}


def build_parser() -> MagicArgumentParser:
    p = MagicArgumentParser(
        prog="%%predict",
        description="Send a predict request; the cell (or EXPR) is a Python expression or a "
        "literal TF Serving JSON body starting with '{'.",
    )
    p.add_argument("name", help="model or server name (see %%tfserve list), or a URL")
    p.add_argument("--signature", metavar="S", help="signature name (default serving_default)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, metavar="N", help="model version")
    which.add_argument("--label", metavar="L", help="version label (from the model config)")
    p.add_argument("--columnar", action="store_true", help="send 'inputs' instead of 'instances'")
    p.add_argument("--labels", metavar="EXPR", help="true labels to compare with")
    p.add_argument("--task", choices=TASKS,
                   help="how to read the outputs (default: inferred, and the reason shown)")
    p.add_argument("--class-names", dest="class_names", metavar="A,B,C",
                   help="names of the classes (or labels), comma-separated or a list variable")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="probability threshold of binary and multi-label models (default 0.5)")
    p.add_argument("--top", type=int, metavar="K", help="classes shown per instance")
    p.add_argument("-o", dest="output", metavar="VAR", help="store the result in VAR")
    p.add_argument("--grpc", action="store_true",
                   help="send over TF Serving's gRPC API (the server's gRPC port)")
    p.add_argument("--show", choices=SNIPPET_KINDS, help="print the equivalent request")
    return p


def _word_spans(line: str) -> list[tuple[int, int]]:
    """Whitespace-separated words; quotes and brackets keep ``f(a, b)`` one word."""
    spans, i, n = [], 0, len(line)
    while i < n:
        if line[i].isspace():
            i += 1
            continue
        start, depth, quote = i, 0, None
        while i < n:
            char = line[i]
            if quote:
                if char == "\\":
                    i += 1
                elif char == quote:
                    quote = None
            elif char in "'\"":
                quote = char
            elif char in "([{":
                depth += 1
            elif char in ")]}":
                depth = max(0, depth - 1)
            elif char.isspace() and depth == 0:
                break
            i += 1
        spans.append((start, min(i, n)))
    return spans


def _unquote(word: str) -> str:
    try:
        parts = shlex.split(word)
    except ValueError:
        return word
    return parts[0] if len(parts) == 1 else word


def split_line(line: str) -> tuple[list[str], str]:
    """The line as (argv for argparse, Python expression as typed).

    Known flags and their values, and the first other word (NAME), go to argparse; everything
    else is the expression of ``%predict NAME EXPR``, kept exactly as typed.
    """
    spans = _word_spans(line)
    argv: list[str] = []
    expression: list[tuple[int, int]] = []
    option_spans: list[tuple[int, int]] = []
    name_seen = False
    k = 0
    while k < len(spans):
        start, end = spans[k]
        word = line[start:end]
        flag, has_value, _ = word.partition("=")
        if flag in VALUE_FLAGS and flag.startswith("-"):
            if has_value:
                argv.append(f"{flag}={_unquote(word[len(flag) + 1 :])}")
            else:
                argv.append(word)
                if k + 1 < len(spans):
                    k += 1
                    end = spans[k][1]
                    argv.append(_unquote(line[spans[k][0] : end]))
            option_spans.append((start, end))
        elif word in BOOL_FLAGS or (word.startswith("--") and not expression):
            argv.append(word)  # unknown --flags reach argparse, which names them
            option_spans.append((start, end))
        elif not name_seen and not word.startswith("-"):
            argv.insert(0, _unquote(word))
            name_seen = True
        else:
            expression.append((start, end))
        k += 1
    if not expression:
        return argv, ""
    first, last = expression[0][0], expression[-1][1]
    if any(first < s < last for s, _ in option_spans):
        raise UsageError("%predict: put the options before or after the expression, not inside it")
    return argv, line[first:last]


def _parse_json(text: str):
    """json.loads that also takes TF Serving's NaN/Infinity tokens; None if not JSON."""
    try:
        return json.loads(text), None
    except ValueError as exc:
        return None, exc


def run_predict_magic(magics, line: str, cell: str | None):
    """Entry point of ``%%predict``/``%predict`` (called by ``TFServeMagics.predict``)."""
    argv, expression = split_line(line or "")
    args = build_parser().parse_line(argv)
    if args is None:  # --help was shown
        return None
    if cell is not None and expression:
        raise UsageError(
            f"%%predict: the cell body is the request; the line takes NAME and options only "
            f"(unexpected {expression!r})"
        )
    source = cell if cell is not None else expression
    if not source or not source.strip():
        raise UsageError(
            "%predict NAME EXPR needs an expression, or use %%predict NAME with the request "
            "(a Python expression or a JSON body) in the cell"
        )
    if args.top is not None and args.top < 1:
        raise UsageError("--top K needs K >= 1")
    if args.output is not None and not args.output.isidentifier():
        raise UsageError(f"-o needs a variable name, got {args.output!r}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold needs a probability within 0..1, got {args.threshold}")
    class_names = class_names_arg(magics, args.class_names) if args.class_names else None

    from tfserve_magic.client import ServingError

    labels = magics._value(args.labels, "labels") if args.labels else None
    client = _client(magics, args.name, "grpc" if args.grpc else "rest")
    send, snippet_body, inputs = _request(magics, client, args, source)
    if (args.grpc or args.show == "grpc") and isinstance(snippet_body, bytes):
        raise UsageError(
            "a literal JSON body is REST only: for --grpc or --show grpc write the request as a "
            "Python expression (an array, or a dict of named inputs)"
        )
    # written before sending, so a snippet that cannot be written is a UsageError up front
    snippet = _snippet(magics, client, args, snippet_body) if args.show else None
    try:
        prediction = send(client)
    except ServingError as exc:  # the server's message and the client's hint
        raise UsageError(str(exc)) from None
    except (ValueError, TypeError) as exc:  # the body cannot be sent as it is
        raise UsageError(f"%predict: {exc}") from None
    finally:
        if snippet:  # also when the request failed: the snippet shows what was sent
            print(snippet)

    from tfserve_magic.predict_view import PredictionResult

    try:
        result = PredictionResult(
            prediction,
            labels=labels,
            top_k=args.top if args.top is not None else magics.top_k,
            max_rows=magics.max_rows,
            name=client.model_name,
            task=args.task,
            class_names=class_names,
            inputs=inputs,
            threshold=0.5 if args.threshold is None else args.threshold,
        )
    except ValueError as exc:
        given = [f"--{k.replace('_', '-')} {v}" for k, v in
                 (("labels", args.labels), ("task", args.task), ("class_names", args.class_names))
                 if v is not None]
        raise UsageError(f"{', '.join(given) or '%predict'}: {exc}") from None
    if args.output:
        magics.shell.user_ns[args.output] = result
    return result


def _client(magics, name: str, protocol: str = "rest"):
    """A Client for NAME, reused while it resolves to the same URL (keep-alive)."""
    from tfserve_magic.client import Client

    if protocol == "grpc" and name.lower().startswith(("http://", "https://")):
        raise UsageError(
            f"{name} is a REST URL: gRPC needs the server or model name, or a gRPC address "
            "grpc://HOST:PORT/MODEL (drop --grpc to send over REST)"
        )
    try:
        fresh = Client(name, timeout=magics.request_timeout, chunk_size=magics.chunk_size,
                       protocol=protocol)
    except (LookupError, ValueError, TypeError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    cache = magics.__dict__.setdefault("_predict_clients", {})
    key = (fresh.url, fresh.default_version, fresh.default_label, fresh.timeout, fresh.chunk_size)
    if key in cache:
        fresh.close()
        return cache[key]
    cache[key] = fresh
    return fresh


def class_names_arg(magics, text: str) -> list[str]:
    """``--class-names``: ``a,b,c``, or a variable / expression holding a list of names."""
    text = text.strip()
    if text in magics.shell.user_ns or text[:1] in "[(":
        value = magics._value(text, "class names")
        if isinstance(value, str) or not hasattr(value, "__len__"):
            raise UsageError(f"--class-names {text}: needs a list of names, got "
                             f"{type(value).__name__}")
        return [str(v) for v in value]
    if "," not in text and text.isidentifier():
        raise UsageError(f"--class-names {text}: no variable named {text!r}; write the names "
                         "as a,b,c or name a list variable")
    return [name.strip() for name in text.split(",")]


def _metadata(client, args, signature):
    """The model's metadata for shaping named inputs and strings; None when it cannot be read
    (the request itself then fails with the server's own message)."""
    from tfserve_magic.client import ServingError

    try:
        return client.metadata(args.version, args.label)
    except (ServingError, AttributeError, ValueError, TypeError, OSError):
        return None


def _needs_metadata(value) -> bool:
    """Inputs whose form depends on the signature (named, strings, a DataFrame)."""
    if isinstance(value, (dict, list, tuple)) or type(value).__name__ == "DataFrame":
        return True
    return isinstance(value, np.ndarray) and value.dtype.kind in "USO"


def _prepared(client, args, value, signature):
    from tfserve_magic.inputs import prepare_inputs

    if not _needs_metadata(value):
        return value
    metadata = _metadata(client, args, signature)
    try:
        return prepare_inputs(value, metadata, signature)
    except ValueError as exc:
        raise UsageError(f"%predict: {exc}") from None


def _request(magics, client, args, source: str):
    """(function client -> Prediction, the body to show, the inputs as given or None) for the
    cell or expression."""
    from tfserve_magic.client import Client

    stripped = source.strip()
    json_error = None
    if stripped.startswith("{"):
        _, json_error = _parse_json(stripped)
        if json_error is None:
            if args.signature or args.columnar:
                raise UsageError(
                    "a JSON body is sent as typed: put \"signature_name\" (and 'inputs' for the "
                    "columnar format) in it instead of --signature/--columnar"
                )
            data = source.encode("utf-8")
            return (
                lambda c: c.predict_json(data, version=args.version, label=args.label),
                data,
                None,
            )
    try:
        value = magics.shell.ev(stripped)
    except Exception as exc:  # the user's expression: report, never traceback
        if json_error is not None:
            raise UsageError(
                f"the request starts with '{{' but is neither JSON ({json_error}) nor a Python "
                f"expression ({type(exc).__name__}: {exc})"
            ) from None
        raise UsageError(
            f"cannot evaluate the request {stripped[:80]!r}: {type(exc).__name__}: {exc}"
        ) from None

    signature = args.signature
    if _is_request_dict(value):  # a request body written in Python: {"instances": x[:3]}
        if "instances" in value and "inputs" in value:
            raise UsageError("the request has both 'instances' and 'inputs': keep one")
        body_signature = value.get("signature_name")
        if signature and body_signature and signature != body_signature:
            raise UsageError(f"--signature {signature} but the body says {body_signature!r}")
        signature = signature or body_signature
        columnar = "inputs" in value
        data = value["inputs"] if columnar else value["instances"]
    else:
        columnar, data = args.columnar, value
    given = data
    data = _prepared(client, args, data, signature)
    kwargs = {"inputs": data} if columnar else {"instances": data}
    try:
        body = Client.build_predict_body(**kwargs, signature_name=signature)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"%predict: {exc}") from None
    return (
        lambda c: c.predict(
            **kwargs, signature_name=signature, version=args.version, label=args.label
        ),
        body,
        given,
    )


def _is_request_dict(value) -> bool:
    """A dict of TF Serving request keys, as opposed to a dict of named inputs."""
    keys = set(value) if isinstance(value, dict) else set()
    return bool(keys) and keys <= _BODY_KEYS and bool(keys & {"instances", "inputs"})


def _snippet(magics, client, args, body) -> str:
    """The code of ``--show KIND`` for this request (REST code also when sent over gRPC)."""
    from tfserve_magic.predict_view import grpc_snippet, request_snippet

    if args.show == "grpc":
        grpc = client if client.protocol == "grpc" else _client(magics, args.name, "grpc")
        kwargs = {"inputs": body["inputs"]} if "inputs" in body else {
            "instances": body["instances"]}
        try:
            request = grpc.build_request(**kwargs, signature_name=body.get("signature_name"),
                                         version=args.version, label=args.label)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--show grpc: {exc}") from None
        return grpc_snippet(grpc.target, request, timeout=grpc.timeout, tls=grpc.tls).code
    url = _rest_predict_url(client, args)
    tls = client.tls if client.protocol == "rest" else None
    if client.protocol == "grpc" and url.startswith("https://"):  # the REST port's settings
        tls = _client(magics, args.name, "rest").tls
    code = request_snippet(args.show, url, body, tls=tls).code
    if client.protocol == "grpc":
        comment = "//" if args.show == "node" else "#"
        code = f"{comment} the REST request equivalent to the gRPC request sent\n{code}"
    return code


def _rest_predict_url(client, args) -> str:
    """The REST ``:predict`` URL of the model the client talks to, for curl/Python/Node code.

    A gRPC client knows no REST URL: the server's is looked up by NAME in the registry of
    running servers; a bare gRPC address has none, and that is a UsageError that says so.
    """
    if client.protocol != "grpc":
        try:
            return client.model_url(args.version, args.label) + ":predict"
        except ValueError as exc:
            raise UsageError(f"%predict: {exc}") from None
    from tfserve_magic import registry

    try:
        base = registry.lookup(args.name).url.rstrip("/")
    except LookupError:
        base = ""
    if not base:
        raise UsageError(
            f"--show {args.show} writes a REST request, and the REST address of "
            f"{args.name!r} is unknown (a gRPC address, not a running server's name): give the "
            "server or model name, drop --grpc, or use --show grpc"
        )
    path = f"{base}/v1/models/{client.model_name}"
    version = args.version if args.version is not None else client.default_version
    label = args.label if args.label is not None else client.default_label
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    return path + ":predict"
