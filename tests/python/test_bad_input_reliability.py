"""Python validates at the boundary (issue 13): each of these raised MemoryError, RuntimeError
("Unable to cast Python instance to C++ type"), an empty message, or was silently accepted."""
import numpy as np
import pytest

import attnkit


def qkv(n=8, d=16):
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 2, n, d), dtype=np.float32) for _ in range(3)]


@pytest.mark.parametrize("window,needle", [
    (2**63, "window"),            # "Unable to cast Python instance to C++ type"
    (-(2**63) - 1, "window"),
    (True, "bool"),               # taken as 1
    ((-5, 2), "window left"),     # accepted: only -1 / None mean unbounded
    ((2, -7), "window right"),
    ((2**64, 0), "window left"),
])
def test_window_values_are_value_errors(window, needle):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=needle):
        attnkit.attention(q, k, v, window=window)


def test_unbounded_window_sides_still_work():
    q, k, v = qkv()
    a = attnkit.attention(q, k, v, window=(-1, 0))
    b = attnkit.attention(q, k, v, causal=True)
    np.testing.assert_array_equal(a, b)


def test_indexer_cache_size_product_is_checked():
    # Accepted before the fix (the size wrapped to 0); an append then wrote past the buffer.
    with pytest.raises(ValueError, match="batch\\*capacity\\*index_dim"):
        attnkit.IndexerCache(1, 8, 2**61)


def test_huge_mask_density_is_refused_quickly():
    with pytest.raises(ValueError, match="tiles"):  # hung before the fix
        attnkit.masks.causal().density(2**40, 2**40)


def test_dsa_select_huge_top_k_is_a_value_error():
    rng = np.random.default_rng(1)
    qi = rng.standard_normal((1, 4, 2, 8), dtype=np.float32)
    w = rng.standard_normal((1, 4, 2), dtype=np.float32)
    ki = rng.standard_normal((1, 4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="top_k"):  # MemoryError before the fix
        attnkit.dsa_select(qi, w, ki, top_k=2**31)


def test_selection_refuses_indices_outside_the_keys():
    with pytest.raises(ValueError, match="seqlen_kv"):
        attnkit.masks.selection(np.array([[0, 9]], np.int32), q_start=0, seqlen_kv=4)
    with pytest.raises(ValueError, match="-1"):
        attnkit.masks.selection(np.array([[0, -3]], np.int32), q_start=0)
    # density() aligns bottom-right: the one query sits at position 3 and sees key 0 only.
    m = attnkit.masks.selection(np.array([[0, -1]], np.int32), q_start=3, seqlen_kv=4)
    assert m.density(1, 4) == pytest.approx(0.25)


def test_read_config_text_bad_bytes_has_a_message():
    with pytest.raises(ValueError) as e:
        attnkit.read_config_text(b"\xff\xfe")
    assert str(e.value).strip(), "empty ValueError message"
