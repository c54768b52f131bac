"""The IPython layer: ``%tfserve <subcommand>``, ``%%predict`` and ``%predict``.

This module only parses lines, calls the same Python API a script would, and renders results.
It holds no process, HTTP or TensorFlow logic, and imports none of them at load time, so
``%load_ext tfserve_magic`` stays fast.
"""

from __future__ import annotations

import shlex

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, Unicode
from traitlets.config.configurable import Configurable

from tfserve_magic.magic_args import MagicArgumentParser
from tfserve_magic.outputs import TASKS

SUBCOMMANDS = {
    "export": "write MODEL as the next numbered SavedModel version under BASE_PATH",
    "start": "start (or reuse) a model server for NAME BASE_PATH",
    "stop": "stop a server (NAME or --all)",
    "list": "list this user's running servers",
    "status": "show the version states of a server's models",
    "logs": "show the end of a server's log",
    "explore": "predictions beside the truth (classifiers, text, tables, regression, multi-label)",
    "monitor": "live requests/s, latency, errors and batch sizes from a server's metrics",
    "draw": "draw-a-digit widget",
    "compare": "version-against-version widget",
    "deploy": "write a Docker/Kubernetes/KServe recipe for real TF Serving (checked first)",
}


def _subcommand_list() -> str:
    return "\n".join(f"  {name:<8} {text}" for name, text in SUBCOMMANDS.items())


@magics_class
class TFServeMagics(Magics, Configurable):
    """Export, serve and check TensorFlow models. Options: ``%config TFServeMagics``."""

    default_port = Int(8501, help="First REST port tried by %tfserve start.").tag(config=True)
    host = Unicode("127.0.0.1", help="Bind address for servers started here.").tag(config=True)
    gpu = Unicode("auto", help="Accelerator for servers: auto, none, or device ids 'N[,M]'.").tag(
        config=True
    )
    backend = Unicode(
        "auto", help="Server backend: auto, python, or tensorflow_model_server."
    ).tag(config=True)
    start_timeout = Float(120.0, help="Seconds to wait for a server to be AVAILABLE.").tag(
        config=True
    )
    poll_seconds = Float(1.0, help="Version polling interval of started servers.").tag(config=True)
    request_timeout = Float(30.0, help="Timeout in seconds of predict requests.").tag(config=True)
    chunk_size = Int(
        1000, help="Instances per request; larger inputs are split into chunks."
    ).tag(config=True)
    top_k = Int(3, help="Classes shown per instance by %%predict.").tag(config=True)
    max_rows = Int(20, help="Instances shown in %%predict output (all are returned).").tag(
        config=True
    )
    verify_export = Bool(True, help="Reload and compare every export with the live model.").tag(
        config=True
    )

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._parsers: dict[str, MagicArgumentParser] = {}

    # ------------------------------------------------------------------ router
    @line_magic
    def tfserve(self, line: str = ""):
        """Serve TensorFlow models from the notebook, TensorFlow-Serving compatible.

        Usage: %tfserve <subcommand> [options]; %tfserve <subcommand> --help for details.

        Subcommands:
          export   MODEL BASE_PATH   write the next numbered SavedModel version (verified)
          start    NAME BASE_PATH    start (or reuse) a server; --config FILE for several models
          stop     NAME | --all      stop servers
          list                       running servers of this user
          status   NAME              version states
          logs     NAME [-n N]       end of the server log
          explore  NAME X Y          predictions beside the truth (--task for the kind)
          monitor  NAME              live requests/s, latency, errors from the server's metrics
          draw     NAME              draw-a-digit widget
          compare  NAME X Y          version-against-version widget
          deploy   NAME [BASE_PATH] --target docker|kubernetes|kserve --out DIR
        """
        try:
            words = shlex.split(line, posix=True)
        except ValueError as exc:
            raise UsageError(f"%tfserve: cannot parse the line: {exc}") from None
        if not words:
            raise UsageError(f"%tfserve needs a subcommand:\n{_subcommand_list()}")
        command, rest = words[0], words[1:]
        handler = getattr(self, f"_cmd_{command}", None)
        if command not in SUBCOMMANDS or handler is None:
            raise UsageError(f"%tfserve: unknown subcommand {command!r}. Use one of:\n{_subcommand_list()}")
        args = self._parser(command).parse_line(rest)
        return None if args is None else handler(args)

    def _parser(self, command: str) -> MagicArgumentParser:
        if command not in self._parsers:
            parser = MagicArgumentParser(prog=f"%tfserve {command}", description=SUBCOMMANDS[command])
            getattr(self, f"_args_{command}")(parser)
            self._parsers[command] = parser
        return self._parsers[command]

    def _value(self, expression: str, what: str):
        """Evaluate a name or expression in the user's namespace, as a UsageError if it fails."""
        namespace = self.shell.user_ns
        if expression in namespace:
            return namespace[expression]
        try:
            return self.shell.ev(expression)
        except Exception as exc:  # the user's expression: report, never traceback
            raise UsageError(f"cannot evaluate {what} {expression!r}: {type(exc).__name__}: {exc}") from None

    # ------------------------------------------------------------------ export
    def _args_export(self, p: MagicArgumentParser) -> None:
        p.add_argument("model", help="variable holding the model (Keras model or tf.Module)")
        p.add_argument("base_path", help="folder whose numbered subfolders are the versions")
        p.add_argument("--version", type=int, help="version number (default: next free)")
        p.add_argument("--overwrite", action="store_true", help="replace an existing version")
        p.add_argument(
            "--signature",
            action="append",
            default=[],
            metavar="NAME=METHOD",
            help="export METHOD as signature NAME (repeatable); serving_default always exists",
        )
        p.add_argument(
            "--input-signature",
            metavar="SPEC",
            help="input spec, e.g. 'float32[None,28,28,1]' or a variable holding TensorSpecs",
        )
        p.add_argument("--sample", metavar="EXPR", help="probe inputs used to verify the export")
        p.add_argument("--no-verify", action="store_true", help="skip the reload-and-compare check")
        p.add_argument(
            "--warmup", metavar="EXPR",
            help="rows (or {signature: rows}) written as TF Serving's warm-up requests",
        )
        p.add_argument(
            "--name", help="model name in the printed server command (default: BASE_PATH's name)"
        )

    def _cmd_export(self, args):
        from tfserve_magic.export import ExportError, export_model

        model = self._value(args.model, "model")
        signatures = {}
        for item in args.signature:
            name, sep, method = item.partition("=")
            if not sep or not name or not method:
                raise UsageError(f"--signature expects NAME=METHOD, got {item!r}")
            signatures[name] = method
        input_signature = args.input_signature
        if input_signature is not None and input_signature in self.shell.user_ns:
            input_signature = self.shell.user_ns[input_signature]
        sample = self._value(args.sample, "sample") if args.sample else None
        warmup = self._value(args.warmup, "warmup") if args.warmup else None
        try:
            return export_model(
                model,
                args.base_path,
                version=args.version,
                overwrite=args.overwrite,
                signatures=signatures or None,
                input_signature=input_signature,
                sample=sample,
                verify=self.verify_export and not args.no_verify,
                model_name=args.name,
                warmup=warmup,
            )
        except ExportError as exc:
            raise UsageError(str(exc)) from None

    # ------------------------------------------------------------------ servers
    def _args_start(self, p: MagicArgumentParser) -> None:
        p.add_argument("name", nargs="?", help="model (and server) name, e.g. MLP")
        p.add_argument("base_path", nargs="?", help="SavedModel base path (numbered versions)")
        p.add_argument("--config", metavar="FILE", help="TF Serving model config file (several models)")
        p.add_argument(
            "--port", type=int, help="REST port, exactly (default: 8501 or the next free one; 0: any)"
        )
        p.add_argument("--host", help="bind address (default 127.0.0.1)")
        p.add_argument("--grpc-port", type=int, help="gRPC port")
        p.add_argument("--gpu", help="auto | none | N[,M]")
        p.add_argument("--poll", type=float, metavar="SECONDS", help="version polling interval")
        p.add_argument("--restart", action="store_true", help="restart instead of reusing a server")
        p.add_argument("--detach", action="store_true", help="keep the server after the kernel exits")
        p.add_argument("--backend", choices=["auto", "python", "tensorflow_model_server"])
        p.add_argument("--timeout", type=float, metavar="S", help="seconds to wait for AVAILABLE")
        p.add_argument("--workers", metavar="N|auto",
                       help="server processes sharing the port (default: 1 on small machines)")
        p.epilog = "Flags after `--` go to the server unchanged (tensorflow_model_server's flags)."
        p.passthrough = "extra"  # the words after `--`, as args.extra

    def _cmd_start(self, args):
        from tfserve_magic.manager import StartError, start

        if args.config is None and (args.name is None or args.base_path is None):
            raise UsageError("%tfserve start needs NAME BASE_PATH, or --config FILE")
        line = _StatusLine(self.shell)
        try:
            handle = start(
                args.name,
                args.base_path,
                config=args.config,
                port=args.port if args.port is not None else self.default_port,
                # the default port moves on to the next free one; an explicit --port must hold
                port_retries=0 if args.port is not None else 100,
                host=args.host or self.host,
                grpc_port=args.grpc_port,
                gpu=args.gpu or self.gpu,
                poll=args.poll if args.poll is not None else self.poll_seconds,
                restart=args.restart,
                detach=args.detach,
                backend=args.backend or self.backend,
                timeout=args.timeout if args.timeout is not None else self.start_timeout,
                extra_args=args.extra,
                progress=line.update,
                workers=args.workers,
            )
        except StartError as exc:
            if line.shown:  # close the "Starting ..." line; a refused request shows only the error
                line.update(f"Failed to start {args.name or args.config} (why: below)", final=True)
            raise UsageError(str(exc)) from None
        if _result_is_shown(self.shell):  # the handle's own display says it: say it once
            line.update("", final=True)
        else:
            line.update(handle.summary(), final=True)
        return handle

    def _args_stop(self, p: MagicArgumentParser) -> None:
        p.add_argument("name", nargs="?")
        p.add_argument("--all", action="store_true", help="stop every server of this user")

    def _cmd_stop(self, args):
        from tfserve_magic.manager import stop

        if not args.name and not args.all:
            raise UsageError("%tfserve stop needs a server NAME or --all")
        try:
            stopped = stop(args.name, all=args.all)
        except LookupError as exc:
            raise UsageError(str(exc)) from None
        print("\n".join(f"Stopped {h.name} (pid {h.pid})" for h in stopped) or "No server was running.")

    def _args_list(self, p: MagicArgumentParser) -> None:
        pass

    def _cmd_list(self, args):
        from tfserve_magic.manager import servers

        return servers()  # a ServerTable, with the servers that stopped by themselves

    def _args_status(self, p: MagicArgumentParser) -> None:
        p.add_argument("name")

    def _cmd_status(self, args):
        from tfserve_magic.manager import StatusView, status

        try:
            return StatusView(args.name, status(args.name))
        except (LookupError, RuntimeError) as exc:
            raise UsageError(str(exc)) from None

    def _args_logs(self, p: MagicArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("-n", type=int, default=20, help="number of lines (default 20)")

    def _cmd_logs(self, args):
        from tfserve_magic.manager import logs

        try:
            print(logs(args.name, n=args.n))
        except (LookupError, ValueError) as exc:
            raise UsageError(str(exc)) from None

    # ------------------------------------------------------------------ deploy
    def _args_deploy(self, p: MagicArgumentParser) -> None:
        from tfserve_magic.deployment import add_arguments

        add_arguments(p)

    def _cmd_deploy(self, args):
        from tfserve_magic.deployment import DeployError, deploy_from_args

        try:
            return deploy_from_args(args)
        except DeployError as exc:
            raise UsageError(str(exc)) from None

    # ------------------------------------------------------------------ widgets
    def _args_explore(self, p: MagicArgumentParser) -> None:
        p.add_argument("name", help="server/model name or URL")
        p.add_argument("x", help="variable with the inputs (e.g. x_test)")
        p.add_argument("y", help="variable with the true labels (e.g. y_test)")
        p.add_argument("--version", type=int)
        p.add_argument("--label")
        p.add_argument("--signature")
        p.add_argument("--task", choices=("multiclass", "binary", "multilabel", "regression"),
                       help="how to read the outputs (default: inferred from outputs and labels)")
        p.add_argument("--class-names", dest="class_names",
                       help="variable with the class (or label) names")
        p.add_argument("-n", type=int, default=500, help="number of instances (default 500)")

    def _cmd_explore(self, args):
        from tfserve_magic.inputs import take
        from tfserve_magic.widgets import PredictionExplorer

        x, y = self._value(args.x, "inputs"), self._value(args.y, "labels")
        names = self._value(args.class_names, "class names") if args.class_names else None
        if args.n < 1:
            raise UsageError("-n must be at least 1")
        try:  # a dict of arrays or a DataFrame: each column sliced
            x, y = take(x, args.n), take(y, args.n)
        except (TypeError, IndexError) as exc:
            raise UsageError(f"cannot take the first {args.n} of {args.x} or {args.y}: "
                             f"{exc}") from None
        return self._widget(
            PredictionExplorer,
            args.name,
            x,
            y,
            version=args.version,
            label=args.label,
            signature_name=args.signature,
            task=args.task,
            class_names=names,
        )

    def _args_monitor(self, p: MagicArgumentParser) -> None:
        p.add_argument("name", help="server/model name or URL (http://HOST:PORT)")
        p.add_argument("--interval", type=float, default=2.0, help="seconds between readings")
        p.add_argument("--path", default="/monitoring/prometheus/metrics",
                       help="the metrics endpoint (prometheus_config.path)")

    def _cmd_monitor(self, args):
        from tfserve_magic.widgets import ServerMonitor

        if args.interval <= 0:
            raise UsageError("--interval must be a positive number of seconds")
        try:
            monitor = ServerMonitor(args.name, path=args.path, interval=args.interval)
        except (LookupError, ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        if monitor.status.kind == "error":
            raise UsageError(monitor.status.text.removeprefix("Error: "))
        return monitor

    def _args_draw(self, p: MagicArgumentParser) -> None:
        p.add_argument("name", help="server/model name or URL")
        p.add_argument("--x", help="variable with test images for the fallback picker")
        p.add_argument("--y", help="variable with their labels")

    def _cmd_draw(self, args):
        from tfserve_magic.widgets import DrawDigit

        x = self._value(args.x, "images") if args.x else None
        y = self._value(args.y, "labels") if args.y else None
        return self._widget(DrawDigit, args.name, x=x, y=y)

    def _args_compare(self, p: MagicArgumentParser) -> None:
        p.add_argument("name", help="server/model name or URL")
        p.add_argument("x")
        p.add_argument("y")
        p.add_argument("--a", default="latest", help="version N, label L, or NAME[@N|:L] (default: latest)")
        p.add_argument("--b", required=True, help="version N, label L, or NAME[@N|:L]")
        p.add_argument("-n", type=int, default=500)
        p.add_argument("--task", choices=TASKS,
                       help="how to read the outputs (default: inferred, the reason shown)")
        p.add_argument("--class-names", dest="class_names", metavar="A,B,C",
                       help="names of the classes, comma-separated or a list variable")
        p.add_argument("--threshold", type=float, default=0.5, metavar="T",
                       help="probability threshold of binary and multi-label models")

    def _cmd_compare(self, args):
        from tfserve_magic import inputs
        from tfserve_magic.predict_magic import class_names_arg
        from tfserve_magic.widgets import VersionCompare

        x, y = self._value(args.x, "inputs"), self._value(args.y, "labels")
        names = class_names_arg(self, args.class_names) if args.class_names else None
        return self._widget(VersionCompare, args.name, inputs.take(x, args.n), y[: args.n],
                            a=args.a, b=args.b, task=args.task, class_names=names,
                            threshold=args.threshold)

    def _widget(self, cls, *args, **kwargs):
        from tfserve_magic._restart import restarter

        try:
            widget = cls(*args, timeout=self.request_timeout, restart=restarter(args[0]),
                         **kwargs)
        except (LookupError, ValueError, RuntimeError) as exc:
            raise UsageError(str(exc)) from None
        status = getattr(widget, "status", None)
        if getattr(status, "kind", None) == "error":  # the first predict failed: say so here
            raise UsageError(status.text.removeprefix("Error: "))
        return widget.show() if hasattr(widget, "show") else widget

    # ------------------------------------------------------------------ predict
    @no_var_expand  # JSON bodies and Python expressions: {x} and $x must reach us as typed
    @line_cell_magic
    def predict(self, line: str = "", cell: str | None = None):
        """Send a predict request to a served model and show it beside the labels.

        %%predict NAME [--signature S] [--version N | --label L] [--columnar]
                       [--labels EXPR] [--top K] [-o VAR] [--show curl|python|node]
        <python expression, or a literal TF Serving JSON body starting with '{'>

        %predict NAME EXPR   (one-line form)
        """
        from tfserve_magic.predict_magic import run_predict_magic

        return run_predict_magic(self, line, cell)


def _result_is_shown(shell) -> bool:
    """Whether the running cell ends with this magic's result as a bare, shown expression
    (``%tfserve start ...`` as the last line, no ``;``, no assignment)."""
    import ast

    try:
        kernel = getattr(shell, "kernel", None)
        if kernel is not None:  # the cell being run, from the kernel's execute request
            raw = kernel.get_parent()["content"]["code"]
        else:
            hist = shell.history_manager.input_hist_raw
            if len(hist) != shell.execution_count + 1:
                return False  # not a stored cell (run_cell(store_history=False)): unknown
            raw = hist[-1]
        if shell.displayhook.semicolon_at_end_of_expression(raw):
            return False
        tree = ast.parse(shell.transform_cell(raw))
    except Exception:
        return False
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return False
    call = tree.body[-1].value
    return (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "run_line_magic"
            and len(call.args) >= 2 and isinstance(call.args[1], ast.Constant)
            and str(call.args[1].value).split()[:1] == ["start"])


class _StatusLine:
    """One output line updated in place (a display handle) while a server starts.

    In a kernel every update replaces the line; in a terminal or a plain InteractiveShell,
    where an update would print a new line, only the first and the final text are printed.
    """

    def __init__(self, shell=None):
        self._in_kernel = getattr(shell, "kernel", None) is not None
        self._handle = None
        self._printed_first = False

    @property
    def shown(self) -> bool:
        """Whether a line was shown yet."""
        return self._printed_first or self._handle is not None

    def update(self, text: str, final: bool = False) -> None:
        if not self._in_kernel:
            if final and not text:
                return
            if final or not self._printed_first:
                print(text, flush=True)
                self._printed_first = True
            return
        from IPython.display import display

        data = {"text/plain": text}
        if self._handle is None:
            if not text:
                return
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)


_loaded: dict[int, TFServeMagics] = {}


def load_ipython_extension(ipython) -> None:
    magics = TFServeMagics(shell=ipython, config=ipython.config)
    ipython.register_magics(magics)
    if magics not in ipython.configurables:
        ipython.configurables.append(magics)
    _loaded[id(ipython)] = magics


def unload_ipython_extension(ipython) -> None:
    magics = _loaded.pop(id(ipython), None)
    if magics is None:
        return
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        for name in ("tfserve", "predict"):
            owner = getattr(table.get(name), "__self__", None)
            if owner is magics:
                del table[name]
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
