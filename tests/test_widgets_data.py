"""Examples (how the inputs show in a view), the request and the views' numbers, without a
server."""

from __future__ import annotations

import numpy as np
import pytest

from tfserve_magic import scoring
from tfserve_magic.inputs import prepare_inputs, take
from tfserve_magic.widgets._data import Examples

SIGNATURE = {"serving_default": {"inputs": {"age": ("float32", (None, 1)),
                                            "sex": ("string", (None, 1))}, "outputs": {}}}


def test_every_form_of_named_inputs_reads_the_same():
    pd = pytest.importorskip("pandas")
    columns = {"age": np.array([22.0, 38.5, 4.0]), "sex": ["male", "female", "female"]}
    rows = [{"age": 22.0, "sex": "male"}, {"age": 38.5, "sex": "female"},
            {"age": 4.0, "sex": "female"}]
    for x in (columns, pd.DataFrame(columns), rows):
        examples = Examples(x)
        assert examples.kind == "tabular" and len(examples) == 3
        request = prepare_inputs(x, SIGNATURE)
        assert request["age"].shape == (3, 1) and request["sex"].tolist() == [
            ["male"], ["female"], ["female"]]
        assert examples.text(1) == "age=38.5, sex=female"
        assert "<b>sex</b>&nbsp;female" in examples.cell_html(1)
    assert take(columns, 2)["sex"] == ["male", "female"]
    assert len(take(pd.DataFrame(columns), 2)) == 2
    with pytest.raises(ValueError, match="missing column 'sex'"):
        prepare_inputs({"age": columns["age"]}, SIGNATURE)
    with pytest.raises(ValueError, match="extra column 'cabin'"):
        prepare_inputs({**columns, "cabin": ["A", "B", "C"]}, SIGNATURE)
    with pytest.raises(ValueError, match="different lengths"):
        Examples({"age": [1.0, 2.0], "sex": ["m"]})
    with pytest.raises(ValueError, match="row 1 has other keys than row 0 .*sex"):
        Examples([{"age": 1.0, "sex": "m"}, {"age": 2.0}])


def test_sentences_are_reshaped_for_the_signature_and_cut_for_display():
    texts = ["short one", "a long review " * 20, b"bytes too"]
    examples = Examples(texts)
    assert examples.kind == "text"
    wants_column = {"serving_default": {"inputs": {"text": ("string", (None, 1))}}}
    assert prepare_inputs(texts, wants_column).tolist() == [["short one"], [texts[1]],
                                                            [b"bytes too"]]
    wants_flat = {"serving_default": {"inputs": {"text": ("string", (None,))}}}
    assert prepare_inputs(texts, wants_flat).tolist() == ["short one", texts[1], b"bytes too"]
    assert examples.text(2) == "bytes too"
    cell = examples.cell_html(1)
    assert "…" in cell and f'title="{texts[1]}"' in cell and len(cell) < len(texts[1]) * 2 + 60
    images = Examples(np.zeros((2, 28, 28, 1), np.float32))
    assert images.kind == "images" and images.detail_html(0).startswith("<img")
    assert Examples(np.zeros((2, 4))).kind == "values"


def test_the_views_numbers_equal_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth, pred = rng.normal(size=50), rng.normal(size=50)
    m = scoring.regression_metrics(truth, pred)
    assert m.mae == pytest.approx(sk.mean_absolute_error(truth, pred))
    assert m.rmse == pytest.approx(np.sqrt(sk.mean_squared_error(truth, pred)))
    assert m.r2 == pytest.approx(sk.r2_score(truth, pred))
    assert np.isnan(scoring.regression_metrics([1, 1], [1, 2]).r2)
    labels, scores = rng.integers(0, 2, 80), rng.random(80)
    curve = scoring.precision_recall_curve(labels, scores)
    for t, p, r in zip(curve.thresholds, curve.precision, curve.recall):
        assert p == pytest.approx(sk.precision_score(labels, scores >= t))
        assert r == pytest.approx(sk.recall_score(labels, scores >= t))
    multi = rng.integers(0, 2, (30, 3))
    active = rng.random((30, 3)) > 0.5
    columns = scoring.precision_recall_f1(multi, active)
    for k in range(3):
        one = scoring.precision_recall_f1(multi[:, k], active[:, k])
        assert one.f1 == pytest.approx(sk.f1_score(multi[:, k], active[:, k]))
        assert one.precision == pytest.approx(sk.precision_score(multi[:, k], active[:, k]))
        assert (one.tp, one.support) == (columns.tp[k], multi[:, k].sum())
        assert columns.recall[k] == pytest.approx(sk.recall_score(multi[:, k], active[:, k]))
    none = scoring.precision_recall_f1([True, False], [False, False])
    assert (none.precision, none.recall, none.f1, none.fn) == (0.0, 0.0, 0.0, 1)


def test_a_summary_that_fails_still_lets_the_widget_display():
    from tfserve_magic.widgets.latency import LatencyView

    view = LatencyView()
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "no requests yet" in bundle["text/html"] and "static snapshot" in bundle["text/plain"]

    class Broken(LatencyView):
        def summary_html(self):
            raise RuntimeError("boom")

    assert "no summary: RuntimeError: boom" in Broken()._repr_mimebundle_()["text/html"]
