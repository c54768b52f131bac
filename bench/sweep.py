"""A small sweep of batching parameters for the ``--enable_batching`` peer.

Each setting runs as its own server on the cell the batching target is about (1-image requests
at concurrency 32). The main run keeps using ``bench/batching.pbtxt``; the sweep shows whether
another setting would do better on this machine.
"""

from __future__ import annotations

from pathlib import Path

from bench import load
from bench.model import BenchAssets
from bench.peers import start_peer, wait_ready

# (max_batch_size, batch_timeout_micros, num_batch_threads)
SETTINGS = (
    (128, 0, 1), (128, 500, 1), (128, 1000, 1), (128, 1000, 2), (128, 2000, 1), (128, 2000, 2),
)


def parameters_text(max_batch_size: int, timeout_micros: int, threads: int) -> str:
    return (
        f"max_batch_size {{ value: {max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {timeout_micros} }}\n"
        "max_enqueued_batches { value: 100 }\n"
        f"num_batch_threads {{ value: {threads} }}\n"
    )


def sweep(assets: BenchAssets, workdir: Path, seconds: float, generator: str,
          n_images: int = 1, concurrency: int = 32, log=print) -> list:
    """req/s, p50 and p99 of every setting (errors, if any, are counted)."""
    rows = []
    workdir.mkdir(parents=True, exist_ok=True)
    body = assets.body_bytes(n_images)
    check = load.prediction_checker(assets.expected[("A", n_images)])
    for max_batch_size, timeout_micros, threads in SETTINGS:
        tag = f"_{max_batch_size}_{timeout_micros}_{threads}"
        params = workdir / f"batching{tag}.pbtxt"
        params.write_text(parameters_text(max_batch_size, timeout_micros, threads))
        peer = start_peer("ours_batching", assets.versions["A"], assets.base_path, workdir,
                          batching_file=params, tag=tag)
        try:
            wait_ready(peer, body)
            load.run_python(peer.url, body, 8, 1.0, check)  # warm-up
            if generator == "wrk":
                wrong = load.check_sample(peer.url, body, check)
                result = load.run_wrk(peer.url, assets.bodies[n_images], concurrency, seconds)
                result.errors += wrong
            else:
                result = load.run_python(peer.url, body, concurrency, seconds, check)
        except RuntimeError as exc:
            log(f"  batching {tag}: failed: {exc}")
            continue
        finally:
            peer.stop()
        rows.append({"max_batch_size": max_batch_size, "batch_timeout_micros": timeout_micros,
                     "num_batch_threads": threads, **result.to_dict()})
        log(f"  batching max_batch_size={max_batch_size} timeout={timeout_micros}us "
            f"threads={threads}: {result.per_second:.0f} req/s, p99 {result.p99_ms:.1f} ms")
    return rows
