"""``make bench``: our server against its peers, measured in one run on one machine.

Not part of the package or of ``make test``: the harness trains and caches a small MNIST MLP
under ``build/bench/``, starts every peer as its own process, drives them with a real HTTP load
generator and writes ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
"""
