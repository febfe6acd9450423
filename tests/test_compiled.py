import numpy as np
import tensorflow as tf

from impala_tf.compiled import CompiledFunction
from impala_tf.unroll import Unroll


def _traced_scale():
    traces = []

    def scale(x, y):
        traces.append(x.shape)
        return 2.0 * x + tf.cast(tf.reduce_sum(y), tf.float32)

    return CompiledFunction(scale, jit_compile=False), traces


def test_traces_once_per_signature_and_returns_the_same_values_as_the_python_function():
    fn, traces = _traced_scale()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for shift in range(3):
        np.testing.assert_allclose(fn(x + shift, np.array([1, 2], np.int32)).numpy(), 2 * (x + shift) + 3)
    assert traces == [(2, 3)]


def test_a_new_shape_or_dtype_traces_again_and_each_signature_keeps_its_own_trace():
    fn, traces = _traced_scale()
    fn(np.zeros((2, 3), np.float32), np.zeros(2, np.int32))
    fn(np.zeros((4, 3), np.float32), np.zeros(2, np.int32))
    fn(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    fn(np.zeros((2, 3), np.float32), np.zeros(2, np.int32))
    assert len(traces) == 3


def test_takes_nested_arguments_such_as_an_unroll():
    fields = {name: np.full((3, 2), i, np.float32) for i, name in enumerate(Unroll._fields)}
    fn = CompiledFunction(lambda unroll: tf.add_n(list(unroll)), jit_compile=True)
    expected = sum(range(len(Unroll._fields)))
    np.testing.assert_allclose(fn(Unroll(**fields)).numpy(), np.full((3, 2), expected))
