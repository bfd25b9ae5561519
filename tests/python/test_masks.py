# attnkit.Mask objects: their pictures (to_array), densities, tile classes and combinations agree
# with the masks' definitions.
import numpy as np
import pytest

import attnkit
import torch_ref as ref

CASES = [
    (attnkit.masks.causal(), "causal", {}),
    (attnkit.masks.sliding_window(5), "sliding_window", {"w": 5}),
    (attnkit.masks.window(3, 2), "window", {"left": 3, "right": 2}),
    (attnkit.masks.window(None, 1), "window", {"left": None, "right": 1}),
    (attnkit.masks.chunked(7), "chunked", {"chunk": 7}),
]


@pytest.mark.parametrize("i", range(len(CASES)))
@pytest.mark.parametrize("sq,skv", [(30, 30), (9, 30), (30, 11)])
def test_to_array_and_density_follow_the_definition(i, sq, skv):
    mask, kind, params = CASES[i]
    want = ref.allowed(kind, sq, skv, **params).numpy()
    pic = mask.to_array(sq, skv)
    assert pic.dtype == np.bool_ and pic.shape == (sq, skv)
    np.testing.assert_array_equal(pic, want)
    assert mask.density(sq, skv) == pytest.approx(want.mean(), abs=1e-12)
    np.testing.assert_array_equal(mask.to_array(sq, skv, q_start=3, k_start=5),
                                  ref.allowed(kind, sq, skv, q_start=3, k_start=5, **params))
    assert mask.allowed(int(sq) - 1, 0) == bool(ref.allowed(kind, sq, sq, **params)[sq - 1, 0])


@pytest.mark.parametrize("i", range(len(CASES)))
def test_tile_classes_are_consistent_with_the_picture(i):
    mask = CASES[i][0]
    pic = mask.to_array(40)
    for q0 in range(0, 40, 8):
        for k0 in range(0, 40, 8):
            tile = pic[q0:q0 + 8, k0:k0 + 8]
            kind = mask.classify(q0, q0 + 8, k0, k0 + 8)
            assert kind in ("empty", "partial", "full")
            if kind == "empty":
                assert not tile.any()
            if kind == "full":
                assert tile.all()


def test_combinations_and_descriptions():
    a, b = attnkit.masks.chunked(8), attnkit.masks.sliding_window(3)
    np.testing.assert_array_equal((a & b).to_array(20), a.to_array(20) & b.to_array(20))
    np.testing.assert_array_equal((a | b).to_array(20), a.to_array(20) | b.to_array(20))
    np.testing.assert_array_equal(attnkit.masks.all_of([a, b]).to_array(20), (a & b).to_array(20))
    np.testing.assert_array_equal(attnkit.masks.any_of([a, b]).to_array(20), (a | b).to_array(20))
    assert repr(attnkit.masks.causal()).startswith("attnkit.Mask(")
    assert attnkit.masks.causal().describe()
    with pytest.raises(ValueError, match="at least one"):
        attnkit.masks.all_of([])
