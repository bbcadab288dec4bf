"""Rectification health: the rows' vertical misalignment measured from sparse matches that start at the
network's disparity, on a real pair shifted by known sub-pixel amounts."""
import cv2
import numpy as np
import pytest

from ges_core.rectification import row_alignment


def shifted(image, dy):
    m = np.float32([[1, 0, 0], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("dy", [0.0, 0.4, 0.8, -1.3])
def test_a_known_vertical_shift_is_measured(dy, motorcycle_full):
    left, right, gt, valid = motorcycle_full
    got = row_alignment(left, shifted(right, dy), gt, valid)
    assert got is not None and got.matches >= 100
    assert got.offset_px == pytest.approx(dy, abs=0.15)
    # past a pixel most matches are off their row; well within it few are
    assert (got.misaligned_share > 0.5) == (abs(dy) > 1.0)


def test_no_estimate_without_texture_and_shapes_are_checked(motorcycle_full):
    left, right, gt, valid = motorcycle_full
    blank = np.full_like(left, 128)
    assert row_alignment(blank, blank, gt, valid) is None
    with pytest.raises(ValueError, match="differ"):
        row_alignment(left, right, gt[:10], valid[:10])


def test_the_pipeline_checks_one_pair_in_row_check_every(tiny_weights, motorcycle_small):
    from ges_core import load_predictor
    from ges_core.pipeline import PipelineParams, StereoPipeline
    left, right, _, _, _ = motorcycle_small
    pipe = StereoPipeline(load_predictor(str(tiny_weights), backend="torch"), PipelineParams(row_check_every=3,
                                                                                             input_scale=1.0))
    results = [pipe.run(left, right) for _ in range(6)]
    checked = ["row_check" in r.timings_ms for r in results]
    assert checked == [True, False, False, True, False, False]
    pipe.params = PipelineParams(row_check_every=0, input_scale=1.0)
    assert "row_check" not in pipe.run(left, right).timings_ms
