"""The overlay the runtime draws on every frame and the evaluation's heatmap panels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from destseg.overlay import NG_RGB, OK_RGB, OverlayError, heatmap_panel, overlay

GREY = np.full((96, 128, 3), 128, dtype=np.uint8)


def _outline_pixels(img: np.ndarray) -> np.ndarray:
    """Bright neutral pixels: on a black frame under a half-blended jet map only the outline is."""
    return img.min(axis=-1) > 150


def _has_text_in(img: np.ndarray, rgb) -> bool:
    """Anti-aliased text pixels: the verdict colour's channel strong, the other two near zero."""
    img = img.astype(int)
    main = int(np.argmax(rgb))
    others = [c for c in range(3) if c != main]
    return bool(((img[..., main] > 150) & (img[..., others] < 40).all(axis=-1)).any())


def test_result_is_a_new_frame_of_the_same_size():
    frame = GREY.copy()
    out = overlay(frame, np.ones((16, 16), np.float32), score=0.9, threshold=0.5, pixel_threshold=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(frame, GREY)  # the caller's frame is left alone


def test_low_values_are_blue_high_values_red_and_a_small_map_covers_the_frame():
    m = np.zeros((8, 8), np.float32)
    m[:, 4:] = 1.0
    out = overlay(GREY, m, alpha=1.0).astype(int)
    left, right = out[:, :40], out[:, 88:]
    assert (left[..., 2] > left[..., 0] + 60).all()  # blue dominates where the map is 0
    assert (right[..., 0] > right[..., 2] + 60).all()  # red dominates where it is 1


def test_maps_are_not_normalised_per_frame():
    """An all-good frame (probabilities up to 0.1) must stay blue, not be stretched to red."""
    m = np.linspace(0.0, 0.1, 64, dtype=np.float32).reshape(8, 8)
    out = overlay(GREY, m, alpha=1.0).astype(int)
    assert (out[..., 2] > out[..., 0]).all()
    assert not np.array_equal(overlay(GREY, m), overlay(GREY, m * 10))


def test_alpha_blends_frame_and_heatmap():
    m = np.zeros((96, 128), np.float32)
    assert np.array_equal(overlay(GREY, m, alpha=0.0), GREY)
    assert not np.array_equal(overlay(GREY, m, alpha=0.5), GREY)


@pytest.mark.parametrize("score, verdict_color", [(0.8, NG_RGB), (0.2, OK_RGB), (float("nan"), NG_RGB)])
def test_verdict_text_is_red_ng_or_green_ok(score, verdict_color):
    out = overlay(GREY, np.zeros((8, 8), np.float32), score=score, threshold=0.5)
    other = OK_RGB if verdict_color == NG_RGB else NG_RGB
    assert _has_text_in(out[:30], verdict_color) and not _has_text_in(out, other)


def test_score_without_threshold_gives_no_verdict_colour():
    out = overlay(GREY, np.zeros((8, 8), np.float32), score=0.8)
    assert not _has_text_in(out, NG_RGB) and not _has_text_in(out, OK_RGB)


def test_pixel_threshold_outlines_only_regions_above_it():
    m = np.zeros((32, 32), np.float32)
    m[12:20, 12:20] = 0.9
    black = np.zeros_like(GREY)
    outlined = overlay(black, m, pixel_threshold=0.5)
    ys, xs = np.nonzero(_outline_pixels(outlined))
    assert ys.size > 0
    # the outline sits around the blob, which covers x 48..80, y 36..60 of the 128 x 96 frame
    assert 40 <= xs.min() and xs.max() <= 84 and 30 <= ys.min() and ys.max() <= 64
    assert not _outline_pixels(overlay(black, m, pixel_threshold=0.95)).any()
    assert not _outline_pixels(overlay(black, m)).any()


def test_nan_map_and_batch_shaped_map_are_drawn():
    m = np.full((1, 1, 8, 8), np.nan, np.float32)
    assert overlay(GREY, m, score=0.1, threshold=0.5).shape == GREY.shape


@pytest.mark.parametrize(
    "frame, anomaly_map, match",
    [
        (GREY.astype(np.float32), np.zeros((8, 8)), "uint8 RGB"),
        (GREY[..., 0], np.zeros((8, 8)), "uint8 RGB"),
        (GREY, np.zeros((2, 8, 8)), "H x W"),
    ],
)
def test_bad_input_is_a_clear_error(frame, anomaly_map, match):
    with pytest.raises(OverlayError, match=match):
        overlay(frame, anomaly_map)


def test_heatmap_panel_is_input_truth_overlay_side_by_side():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:20, 30:40] = True
    panel = heatmap_panel(image, mask, np.zeros((64, 64), np.float32), 0.3)
    assert panel.shape[0] == 64 and panel.shape[1] > 3 * 64
    assert np.array_equal(panel[:, :64], image)
    truth = panel[:, panel.shape[1] // 2 - 32: panel.shape[1] // 2 + 32]  # the middle panel
    assert (truth[10:20, 30:40] == 255).all() and truth.sum() == 10 * 10 * 3 * 255
    empty = heatmap_panel(image, None, np.zeros((64, 64), np.float32), None)
    assert empty[:, panel.shape[1] // 2 - 32: panel.shape[1] // 2 + 32].sum() == 0


def test_drawn_at_the_outputs_size_is_drawn_on_the_resized_frame():
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    m = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    small = overlay(rgb, m, 0.7, 0.5, 0.6, size=(80, 60))
    assert small.shape == (60, 80, 3)
    assert np.array_equal(small, overlay(cv2.resize(rgb, (80, 60), interpolation=cv2.INTER_AREA), m, 0.7, 0.5, 0.6))
    assert np.array_equal(overlay(rgb, m, 0.7, size=(160, 120)), overlay(rgb, m, 0.7))
    assert overlay(rgb, m, size=(320, 240)).shape == (240, 320, 3)
