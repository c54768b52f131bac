"""``%tfserve export`` driven through a real InteractiveShell."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from IPython.core.error import UsageError

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tests.helpers.export_models import (  # noqa: E402
    Calculator,
    UndecoratedSubclassed,
    build_tutorial_subclassed,
)
from tfserve_magic.export import ExportResult  # noqa: E402


def export(shell, line: str):
    return shell.run_line_magic("tfserve", f"export {line}")


def test_export_magic_writes_the_next_version(shell, trained_mlp, mnist, tmp_path, capfd):
    shell.user_ns["model"] = trained_mlp
    shell.user_ns["x_test"] = mnist.x_test
    base = tmp_path / "saved model"  # a space: the line is split like a shell line
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.INFO)  # as chatty as in a kernel: "Assets written to ..."
    try:
        result = export(shell, f"model '{base}'")
    finally:
        tf_logger.setLevel(level)
    noise = capfd.readouterr()
    assert "Assets written" not in noise.out + noise.err
    assert isinstance(result, ExportResult)
    assert result.path == base / "1" and (base / "1" / "saved_model.pb").is_file()
    second = export(shell, f"model '{base}' --sample x_test[:4] --name digits")
    assert second.version == 2
    assert "--model_name=digits" in second.server_command
    assert "your sample" in repr(second)
    served = tf.saved_model.load(str(second.path)).signatures["serving_default"]
    out = served(inputs=tf.constant(mnist.x_test[:10]))["output_0"].numpy()
    np.testing.assert_allclose(out, trained_mlp.predict(mnist.x_test[:10], verbose=0), atol=1e-5)


def test_version_and_overwrite_flags(shell, trained_mlp, tmp_path):
    shell.user_ns["model"] = trained_mlp
    assert export(shell, f"model {tmp_path} --version 5").version == 5
    with pytest.raises(UsageError, match=r"version 5 already exists.*--overwrite"):
        export(shell, f"model {tmp_path} --version 5")
    assert export(shell, f"model {tmp_path} --version 5 --overwrite").version == 5
    assert export(shell, f"model {tmp_path} --no-verify").verified is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5", "6"]


def test_decorated_subclassed_call_signature(shell, mnist, tmp_path):
    shell.user_ns["tutorial"] = build_tutorial_subclassed(mnist, steps=2)
    result = export(shell, f"tutorial {tmp_path} --signature call=call")
    assert set(result.signatures) == {"serving_default", "call"}
    assert list(result.signatures["call"]["inputs"]) == ["x"]


def test_input_signature_as_text_and_as_variable(shell, tmp_path):
    shell.user_ns["sub"] = UndecoratedSubclassed()
    with pytest.raises(UsageError, match=r"not built.*--input-signature 'float32\[None,28,28,1\]'"):
        export(shell, f"sub {tmp_path}")
    result = export(shell, f"sub {tmp_path} --input-signature 'pixels:float32[None,28,28,1]'")
    assert list(result.signatures["serving_default"]["inputs"]) == ["pixels"]
    shell.user_ns["spec"] = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="img")
    again = export(shell, f"sub {tmp_path} --input-signature spec")
    assert list(again.signatures["serving_default"]["inputs"]) == ["img"]
    with pytest.raises(UsageError, match="cannot read the input signature"):
        export(shell, f"sub {tmp_path} --input-signature 'not a spec'")


def test_several_signatures_of_a_tf_module(shell, tmp_path):
    shell.user_ns["calc"] = Calculator()
    with pytest.raises(UsageError, match="--signature serving_default=affine"):
        export(shell, f"calc {tmp_path}")
    result = export(shell, f"calc {tmp_path} --signature affine=affine --signature stats=stats")
    assert list(result.signatures) == ["serving_default", "affine", "stats"]


def test_errors_are_usage_errors(shell, tmp_path):
    shell.user_ns["nothing"] = tf.Module()
    with pytest.raises(UsageError, match="nothing to serve"):
        export(shell, f"nothing {tmp_path}")
    with pytest.raises(UsageError, match="cannot evaluate model 'missing_model'"):
        export(shell, f"missing_model {tmp_path}")
    with pytest.raises(UsageError, match="NAME=METHOD"):
        export(shell, f"nothing {tmp_path} --signature justaname")
    with pytest.raises(UsageError, match="the following arguments are required"):
        export(shell, "nothing")
    assert list(tmp_path.iterdir()) == []


def test_help_does_not_raise(shell, capsys):
    assert shell.run_line_magic("tfserve", "export --help") is None
    assert "--input-signature" in capsys.readouterr().out


def test_a_base_path_under_a_file_and_a_mismatched_input_signature_are_usage_errors(
    shell, trained_mlp, tmp_path
):
    shell.user_ns["model"] = trained_mlp
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(UsageError, match="cannot create BASE_PATH .*notes.txt/saved: Not a dir"):
        export(shell, f"model {tmp_path / 'notes.txt' / 'saved'}")
    # Keras says why after a generic first line; the message must carry the reason
    with pytest.raises(UsageError, match=r"could not write the model.*shape \(None, 10\)"):
        export(shell, f"model {tmp_path / 'wrong'} --input-signature 'float32[None,10]'")
