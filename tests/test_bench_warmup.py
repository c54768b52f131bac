"""bench/warmup_first_request.py's docs section: appended once at the end, then replaced in place
(other sections of docs/benchmarks.md are never touched)."""

from __future__ import annotations

from bench.warmup_first_request import BEGIN, END, write_section


def result(first_cold: float) -> dict:
    timings = {"start_s": 20.0, "first_s": first_cold, "steady_s": 0.02, "swap_first_s": 0.3,
               "swap_steady_s": 0.05}
    warm = {**timings, "start_s": 25.0, "first_s": 0.05, "swap_first_s": 0.1}
    return {"median": {"cold": timings, "warm": warm}, "rounds": 1,
            "ratio_start": first_cold / 0.05, "ratio_swap": 3.0, "load_average": [1.5],
            "cpus": 2}


def test_section_is_appended_then_replaced(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Other\n\ntext\n")
    write_section(result(0.6), md)
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n## Other\n\ntext\n\n" + BEGIN)
    assert "| after start | 600 | 50 | 20 | 20 | **12.0x** |" in text
    assert "| after hot swap | 300 | 100 | 50 | 50 | **3.0x** |" in text
    assert "20.0 s without warm-up, 25.0 s with" in text
    write_section(result(1.0), md)
    again = md.read_text()
    assert again.count(BEGIN) == 1 and again.count(END) == 1
    assert "**20.0x**" in again and "**12.0x**" not in again
    assert again.startswith("# Benchmarks\n\n## Other\n\ntext\n\n")
