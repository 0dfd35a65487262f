"""ensemble.core.bootstrap: problem and control-model resamples, resampled means."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.core.bootstrap import (model_resamples, problem_resamples, resample_counts,
                                resampled_means, resampled_model_means)


def test_model_resamples_have_their_own_stream_and_one_model_is_fixed():
    pidx, midx = problem_resamples(12, 50, 3), model_resamples(4, 50, 3)
    assert midx.shape == (50, 4) and midx.min() >= 0 and midx.max() <= 3
    assert len({tuple(r) for r in midx}) > 40  # really resampled
    assert np.array_equal(pidx, problem_resamples(12, 50, 3))  # untouched by models
    assert not model_resamples(1, 50, 3).any() and model_resamples(1, 50, 3).shape == (50, 1)
    assert model_resamples(4, 0, 3).shape == (0, 4)


def test_resampled_means_match_a_brute_force_gather():
    rng = np.random.default_rng(6)
    W = rng.random((3, 9, 5))
    pidx, midx = problem_resamples(9, 40, 1), model_resamples(3, 40, 1)
    got = resampled_model_means(W, pidx, midx)
    want = np.stack([W[midx[b]][:, pidx[b]].mean(axis=(0, 1)) for b in range(40)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    np.testing.assert_allclose(resampled_means(W[0], pidx),
                               np.stack([W[0][pidx[b]].mean(axis=0) for b in range(40)]),
                               rtol=0, atol=1e-14)
    # one model: the pigeonhole bootstrap is the plain problem bootstrap
    np.testing.assert_allclose(resampled_model_means(W[:1], pidx, model_resamples(1, 40, 1)),
                               resampled_means(W[0], pidx), rtol=0, atol=1e-14)
    counts = resample_counts(pidx, 9)
    assert counts.shape == (40, 9) and (counts.sum(axis=1) == 9).all()
    with pytest.raises(ValueError, match="indices cover 9 problems and 3 models"):
        resampled_model_means(W[:, :8], pidx, midx)
