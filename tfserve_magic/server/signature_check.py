"""``--enable_signature_method_name_check``: TF Serving's check of a signature's method name.

Off by default (TF2 exports name every signature ``tensorflow/serving/predict``); on, a predict
call needs a predict, classify or regress signature (INTERNAL otherwise, as ``predict_util.cc``)
and classify/regress need their own method name (INVALID_ARGUMENT, as ``classifier.cc`` and
``regressor.cc``).
"""

from __future__ import annotations

from tfserve_magic.server.status import ServingError, invalid

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

enabled = False


def configure(flags: dict) -> None:
    global enabled
    enabled = bool(flags.get("enable_signature_method_name_check", False))


def check(signature, api: str) -> None:
    """Raise TF Serving's error when the check is on and the method name does not fit."""
    if not enabled:
        return
    method = getattr(signature, "method_name", "")
    if api == "predict" and method not in (PREDICT, CLASSIFY, REGRESS):
        raise ServingError(
            "INTERNAL",
            f"Expected prediction signature method_name to be one of {{{PREDICT}, {CLASSIFY}, "
            f"{REGRESS}}}. Was: {method}")
    if api == "classify" and method != CLASSIFY:
        raise invalid(f"Expected classification signature method_name to be {CLASSIFY}. "
                      f"Was: {method}")
    if api == "regress" and method != REGRESS:
        raise invalid(f"Expected regression signature method_name to be {REGRESS}. "
                      f"Was: {method}")
