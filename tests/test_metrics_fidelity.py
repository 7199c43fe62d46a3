"""FID / KID / IS / precision-recall offline, with a feature network the test builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_torchscript

from progan.errors import UserError
from progan.metrics import fidelity

pytest.importorskip("torchmetrics")


def test_identical_features_give_zero_and_shift_grows():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 8)).astype(np.float32)
    same = fidelity.fidelity_metrics(
        ["fid", "kid", "pr"], real, real.copy(), kid_subset_size=100, kid_subsets=10
    )
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0
    fids, kids = [], []
    for shift in (0.2, 0.5, 1.0):
        fake = rng.standard_normal((400, 8)).astype(np.float32) + shift
        m = fidelity.fidelity_metrics(["fid", "kid"], real, fake, kid_subset_size=100, kid_subsets=10)
        fids.append(m["fid"])
        kids.append(m["kid_mean"])
    assert fids == sorted(fids) and kids == sorted(kids)
    assert abs(same["kid_mean"]) < 0.1 * kids[-1]  # unbiased: fluctuates around 0 for equal sets
    # FID of two Gaussians: |mu1 - mu2|^2 + trace term ~ 0 for equal covariances
    assert fids[-1] == pytest.approx(8 * 1.0**2, rel=0.15)


def test_precision_recall_sees_mode_collapse():
    rng = np.random.default_rng(1)
    real = rng.standard_normal((300, 4)).astype(np.float32)
    collapsed = (0.1 * rng.standard_normal((300, 4))).astype(np.float32)  # all fakes near one mode
    p, r = fidelity.precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.5


def test_inception_score_bounds():
    uniform = np.zeros((100, 10), np.float32)
    assert fidelity.fidelity_metrics(["is"], None, np.zeros((100, 4), np.float32), uniform)["is_mean"] == (
        pytest.approx(1.0, abs=1e-5)
    )
    confident = np.full((100, 10), -30.0, np.float32)
    confident[np.arange(100), np.arange(100) % 10] = 30.0
    assert fidelity.fidelity_metrics(["is"], None, np.zeros((100, 4), np.float32), confident, is_splits=1)[
        "is_mean"
    ] == (pytest.approx(10.0, rel=1e-3))


def test_torchscript_weights_file(tmp_path):
    ext = fidelity.load_inception(str(tiny_torchscript(tmp_path / "net.pt")))
    imgs = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    pool, logits = fidelity.extract_features(ext, [imgs[:4], imgs[4:]], want_logits=True)
    assert pool.shape == (6, 16) and logits.shape == (6, 10)
    np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, rtol=1e-4)


def test_missing_weights_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="nope.pt: no such file.*weights-inception-2015-12-05"):
        fidelity.load_inception(str(tmp_path / "nope.pt"))
    monkeypatch.setattr(fidelity, "_torch_fidelity_inception_class", lambda: None)
    with pytest.raises(UserError, match="weights-inception-2015-12-05-6726825d.pth.*--inception-weights"):
        fidelity.load_inception(None)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="junk.pth is not a TorchScript Inception"):
        fidelity.load_inception(str(junk))


def test_download_failure_is_a_user_error(monkeypatch):
    class Failing:
        def __init__(self, *a, **k):
            raise OSError("network unreachable")

    monkeypatch.setattr(fidelity, "_torch_fidelity_inception_class", lambda: Failing)
    with pytest.raises(UserError, match="downloading weights-inception-2015-12-05-6726825d.pth failed"):
        fidelity.load_inception(None)
