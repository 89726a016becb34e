import ml_dtypes
import numpy as np
import pytest

from olive_bf16_pass.rounding import (
    BF16_MAX_BITS,
    RoundingStats,
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    round_segments,
)

EDGE_BITS = [
    0x00000000, 0x80000000,  # +-0
    0x00000001, 0x80000001, 0x007FFFFF, 0x00008000, 0x00018000,  # subnormals, incl. ties
    0x00800000, 0x3F800000, 0xBF800000,  # smallest normal, +-1
    0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,  # ties to even (down, up), just below/above
    0x7F7FFFFF, 0xFF7FFFFF,  # +-float32 max (rounds past bf16 max)
    0x7F7F7FFF, 0x7F7F8000,  # just below / at the tie to Inf
    0x7F800000, 0xFF800000,  # +-Inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F80FFFF,  # NaNs
]


def _bits(values):
    return np.array(values, dtype=np.uint32).view(np.float32)


def _ref(x):
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(ml_dtypes.bfloat16).view(np.uint16)


def test_matches_ml_dtypes_on_edges_without_saturation():
    x = _bits(EDGE_BITS)
    ours = float32_to_bfloat16_bits(x, saturate=False)
    finite_or_inf = ~np.isnan(x)
    np.testing.assert_array_equal(ours[finite_or_inf], _ref(x)[finite_or_inf])


def test_matches_ml_dtypes_on_random_bit_patterns():
    bits = np.random.default_rng(1).integers(0, 2**32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    ours = float32_to_bfloat16_bits(x, saturate=False)
    keep = ~np.isnan(x)
    assert np.array_equal(ours[keep], _ref(x)[keep])


@pytest.mark.parametrize("rounding", ["nearest_even", "truncate"])
def test_nan_stays_nan_with_its_sign(rounding):
    nan_bits = [b for b in EDGE_BITS if np.isnan(_bits([b])[0])]
    x = _bits(nan_bits)
    out = float32_to_bfloat16_bits(x, rounding=rounding)
    back = bfloat16_bits_to_float32(out)
    assert np.isnan(back).all()
    np.testing.assert_array_equal(np.signbit(back), np.signbit(x))


@pytest.mark.parametrize("rounding", ["nearest_even", "truncate"])
def test_infinities_stay_infinite(rounding):
    out = bfloat16_bits_to_float32(float32_to_bfloat16_bits(_bits([0x7F800000, 0xFF800000]), rounding=rounding))
    assert list(out) == [np.inf, -np.inf]


def test_saturation_keeps_large_finite_values_finite():
    # float32's extremes, and the exact tie between bf16's max and Inf (rounds to even: Inf)
    x = np.concatenate([np.array([np.finfo(np.float32).max, np.finfo(np.float32).min], np.float32), _bits([0x7F7F8000, 0xFF7F8000])])
    stats = RoundingStats()
    out = float32_to_bfloat16_bits(x, stats=stats)
    assert set(out & 0x7FFF) == {BF16_MAX_BITS}
    np.testing.assert_array_equal(np.signbit(bfloat16_bits_to_float32(out)), [False, True, False, True])
    assert stats.saturated_count == 4 and stats.overflow_count == 0


def test_float32_minimum_of_attention_masks_stays_finite_by_default_and_inf_when_asked():
    mask = np.array([np.finfo(np.float32).min], np.float32)
    assert np.isfinite(bfloat16_bits_to_float32(float32_to_bfloat16_bits(mask)))[0]
    stats = RoundingStats()
    unsaturated = bfloat16_bits_to_float32(float32_to_bfloat16_bits(mask, saturate=False, stats=stats))
    assert unsaturated[0] == -np.inf and stats.overflow_count == 1


def test_truncate_is_the_seed_scripts_shift():
    x = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    np.testing.assert_array_equal(float32_to_bfloat16_bits(x, rounding="truncate"), x.view(np.uint32) >> 16)


def test_truncate_biases_towards_zero_and_nearest_even_does_not():
    x = np.random.default_rng(3).uniform(1, 2, 200_000).astype(np.float32)
    errs = {r: bfloat16_bits_to_float32(float32_to_bfloat16_bits(x, rounding=r)) - x for r in ("nearest_even", "truncate")}
    assert errs["truncate"].max() <= 0  # always towards zero for positive values
    assert abs(errs["nearest_even"].mean()) < abs(errs["truncate"].mean()) / 20
    assert np.abs(errs["truncate"]).mean() > 1.5 * np.abs(errs["nearest_even"]).mean()


def test_subnormals_round_like_ml_dtypes():
    x = _bits(np.arange(0, 0x00800000, 997, dtype=np.uint32))
    np.testing.assert_array_equal(float32_to_bfloat16_bits(x), _ref(x))


def test_stats_report_errors_and_specials():
    x = np.array([1.0, 1.00390625 + 1e-7, np.nan, np.inf, -np.inf, 0.0, 3.0e38], np.float32)
    stats = RoundingStats()
    float32_to_bfloat16_bits(x, stats=stats)
    assert (stats.nan_count, stats.inf_count, stats.elements) == (1, 2, 7)
    assert 0 < stats.max_rel_error <= 2**-8
    assert stats.max_abs_error > 0


def test_shape_is_kept_and_out_buffer_is_used():
    x = np.ones((3, 4, 5), np.float32)
    out = np.empty(60, np.uint16)
    result = float32_to_bfloat16_bits(x, out=out)
    assert result.shape == (3, 4, 5) and np.shares_memory(result, out)
    assert (result == 0x3F80).all()


def test_chunk_boundaries_do_not_matter():
    x = np.random.default_rng(4).standard_normal((1 << 18) * 3 + 17).astype(np.float32)
    np.testing.assert_array_equal(float32_to_bfloat16_bits(x), _ref(x))


def test_unknown_rounding_is_refused():
    with pytest.raises(ValueError, match="rounding must be one of"):
        float32_to_bfloat16_bits(np.ones(2, np.float32), rounding="stochastic")


@pytest.mark.parametrize("rounding", ["nearest_even", "truncate"])
@pytest.mark.parametrize("saturate", [True, False])
def test_rounding_runs_together_equals_rounding_each_alone(rounding, saturate):
    """Small tensors are rounded as runs of one array: every run's bits and figures must be its own."""
    rng = np.random.default_rng(7)
    edges = _bits(EDGE_BITS)
    for _ in range(40):
        runs = []
        for _ in range(int(rng.integers(1, 12))):
            n = int(rng.integers(0, 7))  # empty runs too
            run = (rng.standard_normal(n) * 10.0 ** int(rng.integers(-44, 39))).astype(np.float32)
            if n and rng.random() < 0.6:
                run[rng.integers(0, n)] = rng.choice(edges)
            if n and rng.random() < 0.1:
                run[:] = np.nan  # a run with no error to speak of
            runs.append(run)
        values = np.concatenate(runs) if runs else np.empty(0, np.float32)
        bits, figures = round_segments(values, [r.size for r in runs], rounding, saturate)
        start = 0
        for run, measured in zip(runs, figures):
            alone = RoundingStats()
            expected = float32_to_bfloat16_bits(run, rounding, saturate, stats=alone)
            np.testing.assert_array_equal(bits[start:start + run.size], expected)
            assert measured == alone
            start += run.size


def _general_path(monkeypatch):
    """Force every chunk through the general path (ml_dtypes, then separate figure passes)."""
    from olive_bf16_pass import rounding

    monkeypatch.setattr(rounding, "_fused_chunk", lambda *args: False)


@pytest.mark.parametrize("rounding", ["nearest_even", "truncate"])
@pytest.mark.parametrize("saturate", [True, False])
def test_fused_path_gives_the_general_paths_bits_and_figures(monkeypatch, rounding, saturate):
    """The fused path (error figures asked for) is bit-exact with the general one and ml_dtypes, and
    its figures are equal, not close: on random bit patterns of every magnitude, subnormals and
    zeros, and with a special value in some chunks (the general path then takes that chunk over)."""
    rng = np.random.default_rng(11)
    finite = rng.integers(0, 0x7F7F7FFF, size=(1 << 18) * 3 + 5, dtype=np.uint32)
    finite |= rng.integers(0, 2, size=finite.size, dtype=np.uint32) << 31
    finite[:1000] &= 0x807FFFFF  # subnormals and zeros
    with_specials = finite.copy()
    with_specials[[7, (1 << 18) + 9]] = [0x7FC00000, 0xFF7FFFFF]  # a NaN in one chunk, an overflow in another
    cases = [finite, with_specials, np.array(EDGE_BITS, np.uint32), finite[:3]]
    for bits in cases:
        x = bits.view(np.float32)
        fused_stats = RoundingStats()
        fused = float32_to_bfloat16_bits(x, rounding, saturate, stats=fused_stats)
        with monkeypatch.context() as m:
            _general_path(m)
            general_stats = RoundingStats()
            general = float32_to_bfloat16_bits(x, rounding, saturate, stats=general_stats)
        np.testing.assert_array_equal(fused, general)
        assert fused_stats == general_stats
        if rounding == "nearest_even" and saturate is False:
            nan = (bits & 0x7FFFFFFF) > 0x7F800000
            np.testing.assert_array_equal(fused[~nan], _ref(x)[~nan])


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_float32_at_an_odd_address_rounds_as_it_does_aligned(offset):
    """A tensor read through a map of its file sits at whatever offset the file gives it: numpy's
    loops would take their unaligned path, so the fused path rounds an aligned copy; bits and
    figures are those of the aligned array, special values (general path) included."""
    rng = np.random.default_rng(offset)
    bits = rng.integers(0, 0xFFFFFFFF, size=(1 << 18) + 3, dtype=np.uint32)
    bits[bits.size // 2] = 0x7FC00000  # one chunk goes to the general path
    raw = np.zeros(bits.nbytes + offset, np.uint8)
    raw[offset:] = bits.view(np.uint8)
    odd = raw[offset:].view(np.float32)
    assert not odd.flags.aligned
    odd_stats, aligned_stats = RoundingStats(), RoundingStats()
    got = float32_to_bfloat16_bits(odd, stats=odd_stats)
    expected = float32_to_bfloat16_bits(bits.view(np.float32), stats=aligned_stats)
    np.testing.assert_array_equal(got, expected)
    assert odd_stats == aligned_stats
