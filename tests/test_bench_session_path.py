"""bench/session_path.py's report: its docs section is written once and replaced in place."""

from __future__ import annotations

from bench import session_path


def _result(session_us: float) -> dict:
    return {
        "calls_us": {"1": {"tf2": 100.0, "session": session_us},
                     "100": {"tf2": 400.0, "session": 400.0}},
        "http_per_second": {"1@1": {"tf2": 1000.0, "session": 950.0}},
        "worst_ratio": max(session_us / 100.0, 1000.0 / 950.0),
        "ok": session_us / 100.0 <= session_path.TARGET_RATIO,
        "quick": True,
    }


def test_markdown_reports_ratios_and_the_target():
    text = session_path.markdown(_result(105.0))
    assert "| 1 | 100.0 | 105.0 | 1.05 |" in text
    assert "| 1@1 | 1000 | 950 | 1.05 |" in text
    assert "(met)" in text
    assert "(missed)" in session_path.markdown(_result(130.0))
    assert "Not measured: boom" in session_path.markdown({"error": "boom"})


def test_section_is_appended_then_replaced(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nother text\n")
    session_path.write_section(_result(105.0), md)
    session_path.write_section(_result(130.0), md)
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nother text\n")
    assert text.count(session_path.BEGIN) == 1 and text.count(session_path.END) == 1
    assert "| 1 | 100.0 | 130.0 | 1.30 |" in text and "105.0" not in text
