"""Entropy coding: integer tables, bit-exact round trips, corrupt data caught."""

import numpy as np
import pytest

from coinpp import entropy
from coinpp.errors import FormatError
from coinpp.training import tables


def _symbols(levels=16, n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(levels / 2, levels / 6, size=(n, d)).round(), 0, levels - 1).astype(np.int32)


def test_table_rows_are_integer_sum_exactly_and_never_zero():
    table = tables.frequency_table(_symbols(), 16)
    assert table.dtype == np.int32
    assert (table.sum(axis=1) == 1 << entropy.TABLE_PRECISION).all()
    assert table.min() >= 1  # a symbol never seen in training is still codable


@pytest.mark.parametrize("levels", [2, 16, 256])
def test_round_trip_is_bit_exact(levels):
    train = _symbols(levels, seed=1)
    table = tables.frequency_table(train, levels)
    test = _symbols(levels, n=57, seed=2)
    test[0, :] = levels - 1  # rare symbols included
    test[1, :] = 0
    data = entropy.encode(test, table)
    assert np.array_equal(entropy.decode(data, 57, table), test)


def test_skewed_table_compresses():
    train = np.zeros((1000, 4), dtype=np.int32)
    table = tables.frequency_table(train, 32)
    data = entropy.encode(np.zeros((100, 4), dtype=np.int32), table)
    assert len(data) * 8 < 100 * 4 * 0.1  # far below the 5 bits a fixed-length code needs


def test_odd_length_payload_is_a_format_error():
    table = tables.frequency_table(_symbols(), 16)
    with pytest.raises(FormatError):
        entropy.decode(b"\x01\x02\x03", 10, table)


def test_random_payload_never_crashes():
    table = tables.frequency_table(_symbols(), 16)
    rng = np.random.default_rng(3)
    for _ in range(50):
        data = rng.integers(0, 256, size=4 * int(rng.integers(0, 20)), dtype=np.uint8).tobytes()
        try:
            out = entropy.decode(data, 10, table)
            assert out.shape == (10, 8) and out.min() >= 0 and out.max() < 16
        except FormatError:
            pass


def test_previous_row_context_round_trips_and_saves():
    rng = np.random.default_rng(0)
    walk = np.clip(np.cumsum(rng.integers(-1, 2, size=(200, 6)), axis=0) + 8, 0, 15).astype(np.int32)
    table = tables.frequency_table(walk, 16)
    delta = tables.frequency_table(entropy.residuals(walk, 16), 31, prior=0.1)
    plain, ctx = entropy.encode(walk, table), entropy.encode(walk, table, delta)
    assert np.array_equal(entropy.decode(ctx, 200, table, delta), walk)
    assert len(ctx) < len(plain) / 2  # a slow random walk: differences are cheap
    assert np.array_equal(entropy.decode(entropy.encode(walk[:1], table, delta), 1, table, delta), walk[:1])


def test_previous_row_context_rejects_symbols_out_of_range():
    import constriction

    table = tables.frequency_table(np.zeros((4, 2), np.int32), 16)
    delta = tables.frequency_table(np.full((4, 2), 30, np.int32), 31)
    # A stream no encoder writes: row 0 at the top level 15, then a residual of +15 on top of it.
    coder = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    coder.encode(np.array([15, 15], np.int32), model, table.astype(np.float32) / 65536)
    coder.encode(np.array([30, 30], np.int32), model, delta.astype(np.float32) / 65536)
    data = coder.get_compressed().astype("<u4").tobytes()
    with pytest.raises(FormatError, match="out of range"):
        entropy.decode(data, 2, table, delta)


def _smooth_grid(rows=12, cols=9, d=5, levels=16, seed=4):
    """Symbols of a patch grid whose neighbours are alike (a smooth image's latents)."""
    rng = np.random.default_rng(seed)
    base = np.cumsum(np.cumsum(rng.integers(-1, 2, size=(rows, cols, d)), axis=0), axis=1) // 3
    return np.clip(base + levels // 2, 0, levels - 1).astype(np.int32)


def test_neighbour_context_round_trips_and_beats_the_static_table():
    grid = _smooth_grid()
    symbols = grid.reshape(-1, grid.shape[-1])
    table = tables.frequency_table(_symbols(16, d=5, seed=5), 16)  # a broad training table
    prior = tables.context_prior([_smooth_grid(seed=6), _smooth_grid(seed=7)], 16, 4)
    model = entropy.NeighbourContext(prior, 16)
    data = entropy.encode_context(symbols, (1, 12, 9), model)
    assert np.array_equal(entropy.decode_context(data, (1, 12, 9), model), symbols)
    assert len(data) < 0.8 * len(entropy.encode(symbols, table))
    # Two channel groups share one history; each walks its own grid.
    two = np.concatenate([symbols, symbols[::-1]])
    assert np.array_equal(entropy.decode_context(entropy.encode_context(two, (2, 12, 9), model), (2, 12, 9), model),
                          two)


def test_neighbour_context_codes_a_1d_layout_as_one_row():
    """Audio: patches in time order, each coded in the context of the one before (a one-row grid)."""
    run = _smooth_grid(rows=1, cols=40)
    symbols = run.reshape(-1, run.shape[-1])
    model = entropy.NeighbourContext(tables.context_prior([_smooth_grid(rows=1, cols=60, seed=6)], 16, 4), 16)
    data = model.encode(symbols, (1, 40))
    assert data == entropy.encode_context(symbols, (1, 1, 40), model)
    assert np.array_equal(model.decode(data, (1, 40)), symbols)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        model.encode(symbols, (1, 2, 4, 5))


def test_adaptive_rows_are_integer_and_sum_exactly():
    counts = np.array([[1, 0, 0, 5], [7, 7, 7, 7], [10**9, 1, 1, 1]], dtype=np.int64) + 1
    rows = entropy.adaptive_rows(counts)
    assert rows.dtype == np.int64 and (rows.sum(axis=1) == 1 << entropy.TABLE_PRECISION).all() and rows.min() >= 1


def test_neighbour_context_random_payload_never_crashes():
    model = entropy.NeighbourContext(tables.context_prior([_smooth_grid()], 16, 4), 8)
    rng = np.random.default_rng(3)
    for _ in range(30):
        data = rng.integers(0, 256, size=4 * int(rng.integers(0, 20)), dtype=np.uint8).tobytes()
        try:
            out = entropy.decode_context(data, (1, 3, 4), model)
            assert out.shape == (12, 5) and out.min() >= 0 and out.max() < 16
        except FormatError:
            pass


def test_rate_distortion_quantization_trades_a_little_distortion_for_rate():
    model = entropy.NeighbourContext(tables.context_prior([_smooth_grid(seed=6), _smooth_grid(seed=7)], 16, 4), 16)
    rng = np.random.default_rng(8)
    x = _smooth_grid().reshape(-1, 5) + rng.uniform(-0.5, 0.5, size=(108, 5))
    x[0, 0], x[1, 1] = -3.2, 19.0  # outside the range: clipped to the end levels whatever lambda
    grid = (1, 12, 9)
    plain, nearest = entropy.encode_context_rd(x, grid, model, 0.0)
    assert np.array_equal(nearest, np.clip(np.rint(x), 0, 15)) and plain == entropy.encode_context(nearest, grid, model)
    data, chosen = entropy.encode_context_rd(x, grid, model, 0.3)
    assert np.array_equal(entropy.decode_context(data, grid, model), chosen)  # a plain stream to the decoder
    inside = (x >= 0) & (x <= 15)
    assert np.all((chosen == np.floor(x)) | (chosen == np.ceil(x)) | ~inside)  # one of the two nearest levels
    assert chosen[0, 0] == 0 and chosen[1, 1] == 15
    assert (chosen != nearest).sum() > 5 and len(data) < len(plain)
    assert ((chosen - x)[inside] ** 2).sum() > ((nearest - x)[inside] ** 2).sum()
    # A larger lambda trades more: fewer bytes, more values off their nearest level.
    more_data, more = entropy.encode_context_rd(x, grid, model, 1.0)
    assert len(more_data) <= len(data) and (more != nearest).sum() > (chosen != nearest).sum()
    with pytest.raises(ValueError):
        entropy.encode_context_rd(x, grid, model, -1.0)


@pytest.mark.parametrize("kind", ["static", "series", "context"])
def test_every_entropy_model_round_trips_through_one_interface(kind):
    grid = _smooth_grid(rows=6, cols=7, d=5)
    symbols = grid.reshape(-1, 5)
    table = tables.frequency_table(_symbols(16, d=5, seed=5), 16)
    model = {"static": entropy.StaticTables(table),
             "series": entropy.SeriesDeltas(table, tables.frequency_table(entropy.residuals(symbols, 16), 31)),
             "context": entropy.NeighbourContext(tables.context_prior([_smooth_grid(seed=6)], 16, 4), 16)}[kind]
    layout = (1, 6, 7)
    data = model.encode(symbols, layout)
    assert np.array_equal(model.decode(data, layout), symbols)
    assert (model.dims, model.levels) == (5, 16)
    # Rounding by rate and distortion at lambda 0 is plain rounding, for every model.
    x = symbols + np.random.default_rng(1).uniform(-0.4, 0.4, symbols.shape)
    plain, chosen = model.encode_rd(x, layout, 0.0)
    assert np.array_equal(chosen, symbols) and plain == data
    with pytest.raises(ValueError):
        model.encode(symbols[:-1], layout)  # symbols that do not fill the layout
