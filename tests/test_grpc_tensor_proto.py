"""tfserve_magic.tensor_proto against TensorFlow's own TensorProto code (``tf.io.parse_tensor``
runs ``Tensor::FromProto``; ``tf.make_ndarray`` reads the typed fields), the import-without-TF
path of the client's protos, and the gRPC handler's INTERNAL guard."""

from __future__ import annotations

import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tfserve_magic import tensor_proto


def _tf_parse(proto, dtype):
    return tf.io.parse_tensor(proto.SerializeToString(), out_type=dtype).numpy()


def _proto(dtype, shape=None, **fields):
    proto = tensor_pb2.TensorProto(dtype=dtype)
    if shape is not None:
        proto.tensor_shape.SetInParent()
        for size in shape:
            proto.tensor_shape.dim.add().size = size
    for name, values in fields.items():
        if name == "tensor_content":
            proto.tensor_content = values
        else:
            getattr(proto, name).extend(values)
    return proto


@pytest.mark.parametrize(
    "proto, tf_dtype",
    [
        (_proto(types_pb2.DT_FLOAT, None, float_val=[2.0]), tf.float32),  # no shape: scalar
        (_proto(types_pb2.DT_FLOAT, [3], float_val=[4.0]), tf.float32),  # repeat the last
        (_proto(types_pb2.DT_FLOAT, [2], float_val=[1.0, 2.0, 3.0]), tf.float32),  # cut
        (_proto(types_pb2.DT_FLOAT, [2, 2]), tf.float32),  # zeros
        (_proto(types_pb2.DT_FLOAT, [2], int_val=[5, 6]), tf.float32),  # wrong field: zeros
        (_proto(types_pb2.DT_FLOAT, [0]), tf.float32),
        (_proto(types_pb2.DT_DOUBLE, [2], double_val=[1.5, 2.5]), tf.float64),
        (_proto(types_pb2.DT_INT32, [2, 1], int_val=[-7, 8]), tf.int32),
        (_proto(types_pb2.DT_UINT8, [3], int_val=[1, 255, 256]), tf.uint8),
        (_proto(types_pb2.DT_INT8, [2], int_val=[-128, 200]), tf.int8),
        (_proto(types_pb2.DT_INT64, [2], int64_val=[2**40, -1]), tf.int64),
        (_proto(types_pb2.DT_UINT32, [1], uint32_val=[2**32 - 1]), tf.uint32),
        (_proto(types_pb2.DT_UINT64, [1], uint64_val=[2**64 - 1]), tf.uint64),
        (_proto(types_pb2.DT_BOOL, [3], bool_val=[True, False]), tf.bool),
        (_proto(types_pb2.DT_HALF, [2], half_val=[15872, 46080]), tf.float16),
        (_proto(types_pb2.DT_HALF, [3], half_val=[15872]), tf.float16),
        (_proto(types_pb2.DT_COMPLEX64, [2], scomplex_val=[1, 2, 3, 4]), tf.complex64),
        (_proto(types_pb2.DT_STRING, [3], string_val=[b"a", b"\xff"]), tf.string),
        (_proto(types_pb2.DT_STRING, None, string_val=[b"only"]), tf.string),
        (_proto(types_pb2.DT_FLOAT, [2], tensor_content=np.array([1, 2], "<f4").tobytes(),
                float_val=[9.0]), tf.float32),  # content wins
        (_proto(types_pb2.DT_INT64, [2, 2], tensor_content=np.arange(4, dtype="<i8").tobytes()),
         tf.int64),
    ],
)
def test_decode_matches_tensorflow(proto, tf_dtype):
    ours = tensor_proto.to_numpy(proto)
    theirs = np.asarray(_tf_parse(proto, tf_dtype), dtype=object if tf_dtype == tf.string else None)
    assert ours.shape == theirs.shape
    assert ours.dtype == theirs.dtype or (tf_dtype == tf.string and ours.dtype == object)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.parametrize(
    "proto",
    [
        _proto(types_pb2.DT_INVALID, [1], float_val=[1.0]),
        _proto(types_pb2.DT_FLOAT, [-1], float_val=[1.0]),
        _proto(types_pb2.DT_FLOAT, [3], tensor_content=b"\0" * 8),
    ],
)
def test_decode_refuses_what_tensorflow_refuses(proto):
    with pytest.raises(tensor_proto.TensorProtoError):
        tensor_proto.to_numpy(proto)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _tf_parse(proto, tf.float32)


@pytest.mark.parametrize(
    "array",
    [
        np.array([[1.5, -2.0]], np.float32), np.array(3.25), np.array([1, 2], np.int8),
        np.array([7], np.uint16), np.array([2**40], np.int64), np.array([True]),
        np.array([0.5, -1.0], np.float16), np.array([1 + 2j], np.complex128),
        np.array([b"x", b"yz"], object), np.array(["\u00e9"]),
    ],
)
@pytest.mark.parametrize("content", [False, True])
def test_encode_round_trips_through_tensorflow(array, content):
    proto = tensor_proto.from_numpy(array, content=content)
    if not content or array.dtype.kind in "OU":
        assert proto.tensor_content == b""  # TF Serving's response form: typed fields
    back = tf.make_ndarray(proto)
    expected = np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array
    assert back.shape == array.shape and back.tolist() == expected.tolist()
    assert tensor_proto.to_numpy(proto).tolist() == expected.tolist()


def test_client_protos_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from tfserve_magic import _protos, tensor_proto\n"
        "_protos.apis('prediction_service_pb2_grpc'); _protos.apis('model_service_pb2_grpc')\n"
        "assert 'tensorflow.python' not in sys.modules and 'tensorflow' not in sys.modules\n"
        "import tensorflow as tf, numpy as np\n"
        "p = _protos.apis('predict_pb2').PredictRequest()\n"
        "p.inputs['x'].CopyFrom(tf.make_tensor_proto(np.ones(2, np.float32)))\n"
        "print(tf.make_ndarray(p.inputs['x']).tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[1.0, 1.0]")


class _Aborted(Exception):
    pass


class _Context:
    def abort(self, code, details):
        self.code, self.details = code, details
        raise _Aborted()


def test_a_bug_in_a_handler_is_internal_and_long_details_are_cut():
    from tfserve_magic.server.grpc_server import _Core
    from tfserve_magic.server.status import invalid

    core = _Core(manager=None)
    context = _Context()

    def buggy(request, context):
        return {}["missing"]

    with pytest.raises(_Aborted):
        core.call(buggy, None, context)
    assert context.code == grpc.StatusCode.INTERNAL
    assert context.details == "Internal server error (KeyError): 'missing'"

    def long_error(request, context):
        raise invalid("x" * 2000)

    with pytest.raises(_Aborted):
        core.call(long_error, None, context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert context.details == "x" * 1024 + "...TRUNCATED"


def test_channel_arguments_flag_parsing():
    from tfserve_magic.server.grpc_server import parse_channel_arguments

    assert parse_channel_arguments(
        "grpc.max_connection_age_ms=2000, grpc.lb_policy_name=grpclb,grpc.x=99999999999"
    ) == [("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb"),
          ("grpc.x", "99999999999")]
    assert parse_channel_arguments("") == []
    with pytest.raises(ValueError, match="not key=value"):
        parse_channel_arguments("grpc.so_reuseaddr")


def test_grpc_flags_are_parsed_and_checked():
    from tfserve_magic.server.main import FlagError, _check, parse_flags

    flags = parse_flags([
        "--model_base_path=/m", "--port=0", "--grpc_socket_path=/tmp/x.sock",
        "--grpc_max_threads=3", "--enable_grpc_healthcheck_service",
        "--grpc_channel_arguments=grpc.so_reuseaddr=1",
    ])
    assert (flags["port"], flags["grpc_socket_path"], flags["grpc_max_threads"]) == (
        0, "/tmp/x.sock", 3)
    assert flags["enable_grpc_healthcheck_service"] is True
    _check(flags)
    with pytest.raises(FlagError, match="'grpc.x' is not key=value"):
        _check(parse_flags(["--model_base_path=/m", "--grpc_channel_arguments=a=1,grpc.x"]))
    with pytest.raises(FlagError, match="--port must be between -1 and 65535"):
        _check(parse_flags(["--model_base_path=/m", "--port=70000"]))
