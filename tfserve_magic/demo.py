"""``make demo``: run the quickstart notebook headless and print its predictions beside the labels.

The quickstart (``notebooks/01_quickstart.ipynb``) trains the classic MNIST MLP, exports it,
serves it, asks the server for predictions and stops the server. This runs it top to bottom in a
fresh kernel (the same runner the tests use), writes the executed notebook to
``build/01_quickstart.ipynb``, and prints what the classic TF Serving client printed: each
prediction beside its label, and the served model's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tfserve_magic._nbrun import NotebookRunError, run_notebook
from tfserve_magic._text import text_table

# Relative to the current folder: `make demo` runs in the repository root, and an installed
# (non-editable) package has no notebooks next to it.
QUICKSTART = Path("notebooks") / "01_quickstart.ipynb"
DEFAULT_OUTPUT = Path("build") / "01_quickstart.ipynb"

# Run in the notebook's kernel after its last cell (the server is stopped by then; these are
# the answers the server gave while it ran).
PROBE = """\
import json as _json
print(_json.dumps({
    "predicted": [int(v) for v in predicted],
    "true": [int(v) for v in data.y_test[:len(predicted)]],
    "served_accuracy": float(served_accuracy),
    "notebook_accuracy": float(test_accuracy),
    "n_test": int(len(data.y_test)),
    "source": data.source,
    "url": server.url,
}))
"""


def format_predictions(predicted, true) -> str:
    """The classic tutorial's view: one row per test image, prediction beside label."""
    if len(predicted) != len(true):
        raise ValueError(f"{len(predicted)} predictions for {len(true)} labels")
    rows = [
        [index, int(p), int(t), "ok" if int(p) == int(t) else "WRONG"]
        for index, (p, t) in enumerate(zip(predicted, true))
    ]
    return text_table(["index", "predicted", "true", "ok"], rows)


def summary(result: dict) -> str:
    """The table plus the accuracy lines, from the probe's JSON."""
    right = sum(int(p) == int(t) for p, t in zip(result["predicted"], result["true"]))
    error_rate = 1.0 - result["served_accuracy"]
    lines = [
        f"Predictions from {result['url']} for the first {len(result['predicted'])} test images "
        f"({result['source']}):",
        "",
        format_predictions(result["predicted"], result["true"]),
        "",
        f"{right} of {len(result['predicted'])} right.",
        f"Served model on all {result['n_test']} test images: accuracy "
        f"{result['served_accuracy']:.4f} (inference error rate {error_rate:.2%}); "
        f"in the notebook before export: {result['notebook_accuracy']:.4f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tfserve_magic.demo",
        description="Run notebooks/01_quickstart.ipynb headless and print the predictions.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small data and one epoch (TFSERVE_MAGIC_HEADLESS=1), as in the tests",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where the executed notebook goes (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--notebook", type=Path, default=QUICKSTART, help=f"notebook to run (default {QUICKSTART})"
    )
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"{args.notebook} not found: run in the repository root or pass --notebook")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    mode = "quick (small data, one epoch)" if args.quick else "full"
    print(f"Running {args.notebook.name} headless, {mode} ...", flush=True)
    try:
        run = run_notebook(
            args.notebook, headless=args.quick, probe=PROBE, output_path=args.output,
            kernel_log=args.output.with_suffix(".kernel.log"),
        )
    except NotebookRunError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        print(f"the executed notebook (up to the failure) is in {args.output}", file=sys.stderr)
        return 1
    try:
        result = json.loads(run.probe_output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"demo failed: the notebook did not report its predictions:\n{run.probe_output}",
              file=sys.stderr)
        return 1
    print(summary(result))
    print(f"\nExecuted notebook: {args.output} ({run.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
