"""Inputs as people hold them -> what a signature takes (``tfserve_magic.inputs``), against
metadata in both forms (the client's parsed ``ModelMetadata`` and TF Serving's raw JSON)."""

from __future__ import annotations

import numpy as np
import pytest

from tfserve_magic.client import ModelMetadata
from tfserve_magic.inputs import (
    count,
    describe_instance,
    prepare_inputs,
    signature_inputs,
    take,
)

pd = pytest.importorskip("pandas")


def _raw(inputs: dict) -> dict:
    """TF Serving's metadata JSON for a serving_default signature with these inputs."""
    tf_names = {"float32": "DT_FLOAT", "int64": "DT_INT64", "string": "DT_STRING"}
    return {
        "model_spec": {"name": "M", "version": "1"},
        "metadata": {"signature_def": {"signature_def": {"serving_default": {
            "inputs": {name: {"dtype": tf_names[dtype], "name": name, "tensor_shape": {
                "dim": [{"size": str(d)} for d in dims]}} for name, (dtype, dims) in
                inputs.items()},
            "outputs": {}, "method_name": "tensorflow/serving/predict"}}}},
    }


TABULAR = _raw({"age": ("float32", (-1, 1)), "fare": ("float32", (-1,)),
                "sex": ("string", (-1, 1))})
TEXT = _raw({"text": ("string", (-1, 1))})
MATRIX = _raw({"features": ("float32", (-1, 3))})


@pytest.mark.parametrize("metadata", [TABULAR, ModelMetadata(TABULAR)])
def test_named_inputs_from_dataframe_dict_and_rows(metadata):
    frame = pd.DataFrame({"sex": ["male", "female"], "age": [22, 38], "fare": [7.25, 71.3]})
    expected = prepare_inputs(frame, metadata)
    assert list(expected) == ["age", "fare", "sex"]  # the signature's order
    assert expected["age"].dtype == np.float32 and expected["age"].shape == (2, 1)
    assert expected["fare"].dtype == np.float32 and expected["fare"].shape == (2,)
    assert expected["sex"].tolist() == [["male"], ["female"]]  # strings stay strings
    rows = [{"age": 22, "fare": 7.25, "sex": "male"}, {"age": 38, "fare": 71.3, "sex": "female"}]
    as_dict = {"age": np.array([22, 38]), "fare": [7.25, 71.3], "sex": ["male", "female"]}
    for other in (prepare_inputs(rows, metadata), prepare_inputs(as_dict, metadata)):
        for name in expected:
            np.testing.assert_array_equal(other[name], expected[name])
            assert other[name].dtype == expected[name].dtype


def test_missing_extra_and_wrong_columns_are_named():
    frame = pd.DataFrame({"age": [1.0], "sex": ["m"], "survived": [1]})
    with pytest.raises(ValueError, match="missing column 'fare'; extra column 'survived' .*"
                       "inputs are age float32\\[-1,1\\], fare float32\\[-1\\], sex string"):
        prepare_inputs(frame, TABULAR)
    with pytest.raises(ValueError, match="input 'age' takes float32 numbers, got strings"):
        prepare_inputs({"age": ["old"], "fare": [1.0], "sex": ["m"]}, TABULAR)
    with pytest.raises(ValueError, match="input 'sex' takes strings, got int"):
        prepare_inputs({"age": [1.0], "fare": [1.0], "sex": [3]}, TABULAR)
    with pytest.raises(ValueError, match="row 1 has other keys"):
        prepare_inputs([{"age": 1}, {"fare": 2}], TABULAR)
    with pytest.raises(ValueError, match="takes named inputs age"):
        prepare_inputs(np.zeros((2, 3)), TABULAR)
    with pytest.raises(ValueError, match="different lengths"):
        prepare_inputs({"age": [1.0, 2.0], "fare": [1.0], "sex": ["m"]}, TABULAR)
    with pytest.raises(ValueError, match="no signature 'nope'"):
        prepare_inputs([1.0], TABULAR, "nope")


def test_sentences_and_single_inputs():
    sentences = ["a fine film", "dull"]
    sent = prepare_inputs(sentences, TEXT)
    assert sent.shape == (2, 1) and sent.tolist() == [["a fine film"], ["dull"]]
    assert prepare_inputs(np.array(sentences), ModelMetadata(TEXT)).tolist() == sent.tolist()
    assert prepare_inputs({"text": sentences}, TEXT)["text"].shape == (2, 1)
    with pytest.raises(ValueError, match="a list of strings .* not one string"):
        prepare_inputs("one sentence", TEXT)
    # numeric columns feeding one [-1, 3] input: the DataFrame's matrix in the input's dtype
    frame = pd.DataFrame({"cyl": [4, 6], "hp": [90.0, 150.0], "year": [70, 82]})
    matrix = prepare_inputs(frame, MATRIX)
    assert matrix.dtype == np.float32 and matrix.tolist() == [[4, 90, 70], [6, 150, 82]]
    with pytest.raises(ValueError, match="has 2 columns named cyl, hp"):
        prepare_inputs(frame[["cyl", "hp"]], MATRIX)
    ints = prepare_inputs([[1, 2, 3]], MATRIX)
    assert ints.dtype == np.float32
    # without metadata only the form changes
    assert prepare_inputs(frame, None)["hp"].tolist() == [90.0, 150.0]
    assert prepare_inputs(sentences, None) is sentences
    assert signature_inputs(None) is None
    assert signature_inputs(TEXT) == {"text": ("string", (None, 1))}


def test_count_take_and_describe():
    frame = pd.DataFrame({"age": [22.0, 38.5, 26.0], "sex": ["m", "f", "f"]})
    rows = frame.to_dict("records")
    named = {"age": frame["age"].to_numpy(), "sex": ["m", "f", "f"]}
    for x in (frame, rows, named):
        assert count(x) == 3
        assert describe_instance(x, 1) == "age=38.5, sex=f"
        assert count(take(x, 2)) == 2 and describe_instance(take(x, [2]), 0) == "age=26, sex=f"
    assert type(take(frame, 2)).__name__ == "DataFrame"
    assert describe_instance(["a long sentence " * 10], 0, width=20).endswith("…")
    assert describe_instance(np.arange(12.0).reshape(3, 4), 2) == "[ 8. 9. 10. 11.]"
    assert count(np.zeros((5, 2))) == 5 and take(np.arange(5), 3).tolist() == [0, 1, 2]
