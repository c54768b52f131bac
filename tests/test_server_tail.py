"""The inline-or-pool estimate (server/inference.py ``learn``) under a busy machine's noise."""

from __future__ import annotations

from types import SimpleNamespace

from tfserve_magic.server.inference import learn as _learn


def _signature():
    return SimpleNamespace(seconds_per_element=None)


def test_one_slow_call_does_not_move_the_estimate():
    sig = _signature()
    _learn(sig, 1000, 0.001)  # 1 us per element
    _learn(sig, 1000, 0.020)  # this thread waited for a core once
    assert sig.seconds_per_element == 1e-6
    _learn(sig, 1000, 0.001)
    assert sig.seconds_per_element == 1e-6


def test_two_slow_calls_in_a_row_raise_it_at_once():
    sig = _signature()
    _learn(sig, 1000, 0.001)
    _learn(sig, 1000, 0.030)
    _learn(sig, 1000, 0.020)  # the model really is slower now (or its inputs are bigger)
    assert sig.seconds_per_element == 20e-6  # the smaller of the two slow samples


def test_faster_calls_lower_it_gradually():
    sig = _signature()
    _learn(sig, 10, 0.010)  # first call (run in the pool): taken as is
    assert sig.seconds_per_element == 1e-3
    _learn(sig, 10, 0.0)
    assert abs(sig.seconds_per_element - 0.9e-3) < 1e-12
