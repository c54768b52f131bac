"""`tfserve deploy` with TF Serving warm-up files (issue 22): the recipes carry
``assets.extra/tf_serving_warmup_requests`` with the version, the preflight report says for each
version whether one is there, and a file TF Serving would refuse stops the deploy."""

from __future__ import annotations

import shutil

import pytest

tf = pytest.importorskip("tensorflow")

from tests.helpers.warmup import read_records, warmup_file, write_records  # noqa: E402
from tfserve_magic.deployment import DeployError, deploy  # noqa: E402
from tfserve_magic.warmup import write_warmup  # noqa: E402


class Affine(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x + 1.0}


@pytest.fixture(scope="module")
def affine_base(tmp_path_factory):
    """``affine`` v1 (no warm-up file) and v2 (three records from tfm.write_warmup)."""
    base = tmp_path_factory.mktemp("deploy-warmup") / "affine"
    for version in (1, 2):
        module = Affine()
        tf.saved_model.save(module, str(base / str(version)),
                            signatures={"serving_default": module.serve})
    write_warmup(base / "2", [[1.0, 2.0, 3.0]] * 3, n=3)
    return base


@pytest.mark.parametrize("target", ["docker", "kubernetes"])
def test_recipes_carry_the_warmup_file_and_the_preflight_says_so(affine_base, tmp_path, target):
    result = deploy("affine", affine_base, target=target, out=tmp_path / target)
    carried = warmup_file(result.out / "models" / "affine" / "2")
    assert read_records(carried) == read_records(warmup_file(affine_base / "2"))
    assert len(read_records(carried)) == 3
    assert result.preflight.warmup_records == {"affine/2": 3}
    report = result.preflight.report()
    assert "affine/2: written by TensorFlow" in report
    assert "3 warm-up request(s), replayed by TF Serving before it serves" in report
    assert f"affine/2: written by TensorFlow {tf.__version__}; 3 warm-up" in str(result)


def test_a_version_without_warmup_is_reported_as_such(affine_base, tmp_path):
    base = tmp_path / "plain"
    shutil.copytree(affine_base / "1", base / "1")
    result = deploy("plain", base, target="docker", out=tmp_path / "out")
    assert result.preflight.warmup_records == {"plain/1": None}
    assert "plain/1: written by TensorFlow" in result.preflight.report()
    assert "no warm-up requests (assets.extra/tf_serving_warmup_requests)" in (
        result.preflight.report())


@pytest.mark.parametrize("records, words", [
    ([b"not a PredictionLog"], "record 1 is not a PredictionLog"),
    (None, "bad TFRecord framing"),
])
def test_a_warmup_file_tf_serving_would_refuse_stops_the_deploy(affine_base, tmp_path, records,
                                                                words):
    base = tmp_path / "bad"
    shutil.copytree(affine_base / "2", base / "2")
    if records is None:  # a good file cut short: TF's reader reports the truncated record
        path = warmup_file(base / "2")
        path.write_bytes(path.read_bytes()[:-5])
    else:
        write_records(warmup_file(base / "2"), records)
    with pytest.raises(DeployError, match="would fail the load in TF Serving") as err:
        deploy("bad", base, target="docker", out=tmp_path / "out")
    assert words in str(err.value)
    assert "tfm.write_warmup" in str(err.value)
    assert not (tmp_path / "out").exists()
