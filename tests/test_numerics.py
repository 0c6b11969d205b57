"""The golden numerics pinned to the spec: literal values from docs/numerics.md.

Every other test compares the RTL with ``rpaccel.sim.numerics``; if both agreed on a wrong
rounding, those tests would all pass. These do not compare with anything computed: each
expected value is written out by hand from docs/numerics.md (the examples it gives and the
edge cases it implies: saturation limits, shifts 0 and 63, ties in top-k).
"""

import numpy as np
import pytest

from rpaccel.sim import numerics
from rpaccel.sim.numerics import NumericsError


def rq(acc, mult, shift, relu=False):
    return numerics.requantize(np.array([acc]), mult, shift, relu=relu).tolist()[0]


@pytest.mark.parametrize("acc, mult, shift, expected", [
    # docs/numerics.md: round half up, towards +infinity: 2.5 -> 3, -2.5 -> -2
    (5, 1, 1, 3),         # 2.5
    (-5, 1, 1, -2),       # -2.5
    (-1, 1, 1, 0),        # -0.5
    (1, 1, 1, 1),         # 0.5
    (3, 1, 1, 2),         # 1.5
    (-3, 1, 1, -1),       # -1.5
    (7, 1, 2, 2),         # 1.75
    (-7, 1, 2, -2),       # -1.75
    (6, 1, 2, 2),         # 1.5
    (-6, 1, 2, -1),       # -1.5
    # shift 0: no rounding term, y = acc * M (then saturated)
    (3, 5, 0, 15),
    (-3, 5, 0, -15),
    (100, 2, 0, 127),
    (-100, 2, 0, -128),
    # shift 63 with the largest product: (acc*M + 2**62) >> 63
    (2**31 - 1, 65535, 63, 0),
    (-2**31, 65535, 63, 0),
    # multiplier 0 gives 0 whatever the accumulator
    (2**31 - 1, 0, 20, 0),
    # saturation at both ends and just inside them
    (127 << 8, 1, 8, 127),
    (128 << 8, 1, 8, 127),
    (-128 << 8, 1, 8, -128),
    (-129 << 8, 1, 8, -128),
    ((127 << 8) + 127, 1, 8, 127),     # 127.496... rounds to 127
    ((127 << 8) + 128, 1, 8, 127),     # 127.5 rounds up to 128, saturates
    ((-128 << 8) - 129, 1, 8, -128),   # -128.50390625 rounds to -129, saturates
    # the int32 extremes through a normalised multiplier
    (2**31 - 1, 32768, 31, 127),
    (-2**31, 32768, 31, -128),
    (1000, 32768, 16, 127),   # 500 saturates
    (200, 32768, 16, 100),
    (-201, 32768, 16, -100),  # -100.5 rounds up to -100
    (-199, 32768, 16, -99),   # -99.5 -> -99
])
def test_requantize_literal_values(acc, mult, shift, expected):
    assert rq(acc, mult, shift) == expected


@pytest.mark.parametrize("acc, shift, expected", [
    (-5, 1, 0), (-1, 1, 0), (5, 1, 3), (-1000, 0, 0), (1000, 0, 127), (0, 0, 0)])
def test_relu_applies_after_rounding_before_saturation(acc, shift, expected):
    assert rq(acc, 1, shift, relu=True) == expected


def test_linear_accumulates_bias_first_exactly():
    x = np.array([[1, -2, 3], [-128, 127, 0]])
    w = np.array([[2, -1], [4, 5], [-6, 7]])
    bias = np.array([10, -20])
    # row 0: 10 + 2 - 8 - 18 = -14 ; -20 - 1 - 10 + 21 = -10
    # row 1: 10 - 256 + 508 + 0 = 262 ; -20 + 128 + 635 = 743
    assert numerics.linear(x, w, bias).tolist() == [[-14, -10], [262, 743]]


def test_linear_raises_when_the_accumulator_leaves_int32():
    x = np.full((1, 1), 127)
    w = np.full((1, 1), 127)
    with pytest.raises(NumericsError, match="accumulator holds 2147483648"):
        numerics.linear(x, w, np.array([2**31 - 1 - 127 * 127 + 1]))
    assert numerics.linear(x, w, np.array([2**31 - 1 - 127 * 127])).tolist() == [[2**31 - 1]]


def test_mlp_layer_is_linear_then_requantize():
    x, w, bias = np.array([[3, 4]]), np.array([[2], [1]]), np.array([1])   # acc = 11
    assert numerics.mlp_layer(x, w, bias, 1, 1, relu=False).tolist() == [[6]]   # 5.5 -> 6
    assert numerics.mlp_layer(-x, w, bias, 1, 1, relu=False).tolist() == [[-4]]  # -4.5 -> -4
    assert numerics.mlp_layer(-x, w, bias, 1, 1, relu=True).tolist() == [[0]]


def test_pool_sum_is_exact_then_saturates_once():
    assert numerics.pool_sum(np.array([[100, -100, 5], [100, -100, -7]])).tolist() == [127, -128, -2]
    # intermediate sums beyond int8 are fine: 100 + 100 - 128 = 72, not sat(200) - 128 = -1
    assert numerics.pool_sum(np.array([[100], [100], [-128]])).tolist() == [72]
    assert numerics.pool_sum(np.array([[-128], [127], [1]])).tolist() == [0]
    assert numerics.pool_sum(np.zeros((0, 4), dtype=np.int64)).tolist() == [0, 0, 0, 0]


def test_interaction_pair_order_is_row_major_lower_triangle():
    assert numerics.interaction_pairs(4) == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert numerics.interaction_pairs(1) == []
    assert len(numerics.interaction_pairs(9)) == 36


def test_interaction_literal_values():
    z = np.array([[[1, 2], [3, -4], [-5, 6]]])
    # dots: (1,0) = 3 - 8 = -5 ; (2,0) = -5 + 12 = 7 ; (2,1) = -15 - 24 = -39
    # each with its own (mult, shift): -5 * 1 >> 1 -> -2 (-2.5 up), 7*3 = 21 >> 2 -> 5 (5.25),
    # -39 * 1 >> 0 = -39
    out = numerics.interaction(z, [1, 3, 1], [1, 2, 0])
    assert out.tolist() == [[-2, 5, -39]]
    # no ReLU in the interaction, saturation at both ends
    out = numerics.interaction(np.array([[[127, 127], [127, 127], [-127, -127]]]), [1, 1, 1],
                               [0, 0, 0])
    assert out.tolist() == [[127, -128, -128]]


def test_topk_ties_go_to_the_lower_id():
    scores = np.array([5, 7, 7, 3, 7, -1])
    ids = np.array([10, 4, 2, 8, 9, 0])
    # 7 (id 2, pos 2), 7 (id 4, pos 1), 7 (id 9, pos 4), 5 (pos 0), 3 (pos 3), -1 (pos 5)
    assert numerics.topk(scores, ids, 3).tolist() == [2, 1, 4]
    assert numerics.topk(scores, ids, 100).tolist() == [2, 1, 4, 0, 3, 5]
    assert numerics.topk(np.array([-2**31, 2**31 - 1]), np.array([0, 1]), 1).tolist() == [1]
    assert numerics.topk(np.zeros(4, dtype=np.int64), np.array([3, 1, 2, 0]), 2).tolist() == [3, 1]


@pytest.mark.parametrize("real, expected", [
    (0.5, (32768, 16)), (1.0, (32768, 15)), (0.75, (49152, 16)),
    (2.0 ** -40, (32768, 55)), (2.0 ** -60, (8, 63)),   # shift limit: M below 2**15
    (1.0 - 2.0 ** -20, (32768, 15)),                       # rounds up into a new bit
])
def test_quantize_multiplier_literal_values(real, expected):
    assert numerics.quantize_multiplier(real) == expected


def test_quantize_tensor_rounds_half_to_even_and_never_uses_minus_128():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 200.0, -200.0, 126.6])
    assert numerics.quantize_tensor(x, 1.0).tolist() == [0, 2, 2, 0, -2, -2, 127, -127, 127]


def test_wrap_and_saturate_limits():
    assert numerics.wrap(2**31) == -2**31
    assert numerics.wrap(-2**31 - 1) == 2**31 - 1
    assert numerics.wrap(np.array([2**32 + 5, -7])).tolist() == [5, -7]
    assert numerics.saturate(np.array([128, -129, 5])).tolist() == [127, -128, 5]
    assert (numerics.qmin(8), numerics.qmax(8), numerics.qmin(32)) == (-128, 127, -2**31)


@pytest.mark.parametrize("call, message", [
    (lambda: numerics.requantize(np.array([1]), 65536, 1), "multiplier 65536"),
    (lambda: numerics.requantize(np.array([1]), 1, 64), "shift 64"),
    (lambda: numerics.requantize(np.array([2**31]), 1, 1), "outside signed 32-bit"),
    (lambda: numerics.linear(np.array([[128]]), np.array([[1]]), np.array([0])), "holds 128"),
    (lambda: numerics.pool_sum(np.array([[-129]])), "holds -129"),
    (lambda: numerics.topk(np.array([1]), np.array([0]), 0), "k must be at least 1"),
    (lambda: numerics.topk(np.array([1, 2]), np.array([3, 3]), 1), "unique"),
    (lambda: numerics.topk(np.array([]), np.array([]), 1), "empty"),
])
def test_values_outside_the_spec_raise(call, message):
    with pytest.raises(NumericsError, match=message):
        call()
