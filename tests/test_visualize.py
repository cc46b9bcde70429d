"""Pictures (saa.visualize): the panels a method can draw, one colour scale with a colour bar, the
score, the verdict and the predicted outline on every panel, open-ended colour bars and the legend of
the marks, a banner line that fits the picture."""
from __future__ import annotations

import numpy as np
import pytest

from saa import visualize as V
from saa.prediction import Prediction


def _rgb(h=60, w=80):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_panels_choice_and_missing_inputs():
    rgb = _rgb()
    amap = np.zeros((60, 80), np.float32)
    amap[10:20, 10:30] = 1
    cands = [dict(stage="defect", kept=True, box_xyxy=[5, 5, 30, 25], caption="crack.", score=0.3, rescored=0.5,
                  dropped=None),
             dict(stage="defect", kept=False, box_xyxy=[40, 10, 70, 50], caption="hole.", score=0.2, rescored=None,
                  dropped="area"),
             dict(stage="object", kept=True, box_xyxy=[0, 0, 80, 60], caption="bottle", score=0.9)]
    p = V.panel_images(rgb, anomaly_map=amap, candidates=cands)
    assert list(p) == ["image", "anomaly_map", "boxes"]  # no mask, no saliency: not drawn
    p = V.panel_images(rgb, anomaly_map=amap, gt_mask=amap > 0, saliency=amap, candidates=cands, panels="all")
    assert list(p) == list(V.PANELS)
    boxes = p["boxes"]
    assert (boxes[5, 5:30] == V.KEPT_COLOR).all(axis=-1).any()  # kept box edge is green
    strip = V.compose(p, height=100)
    assert strip.shape[0] == 100 + 22 and strip.dtype == np.uint8
    assert V.parse_panels("image, boxes") == ("image", "boxes")
    with pytest.raises(ValueError, match="unknown panel"):
        V.parse_panels("image,heat")
    assert V.png_bytes(strip)[:8] == b"\x89PNG\r\n\x1a\n"


def test_colour_bar_open_ends_and_the_legend_of_the_marks():
    """Values beyond the scale (a normalised score above 1) get an open end on the colour bar; the
    panel says what the frame and the outline come from (image vs pixel threshold)."""
    from saa.prediction import Prediction

    scale = V.MapScale(0.0, 1.0, "normalised")
    closed, opened = V.colorbar(200, scale), V.colorbar(200, scale, over=1.41)
    assert opened.shape[1] > closed.shape[1]
    top_colour = V._jet(np.array([[1.0]], np.float32))[0, 0].astype(int)
    def width(bar, row, colour):  # pixels of ``colour`` in one row of the bar's column
        return int((np.abs(bar[row, 2:14].astype(int) - colour).sum(axis=-1) < 60).sum())

    # an arrow (narrow at its tip, wide at its base) in the end colour above the ramp; a closed bar
    # has its full-width ramp there
    assert 0 < width(opened, 12, top_colour) < width(opened, 20, top_colour)
    assert width(closed, 12, top_colour) >= 10 > width(opened, 12, top_colour)
    low = V._jet(np.array([[0.0]], np.float32))[0, 0].astype(int)
    under = V.colorbar(200, scale, under=-0.2)
    assert 0 < width(under, 200 - 32 + 10, low) < width(under, 200 - 32 + 3, low)  # and one below
    assert V.beyond(np.array([[0.2, 1.4]]), scale) == (pytest.approx(1.4), None)
    assert V.beyond(np.array([[-0.1, 0.5]]), scale) == (None, pytest.approx(-0.1))
    assert V.beyond(np.array([[0.0, 1.0]]), scale) == (None, None)
    lines = V.legend_lines("OK", 0.5, 0.3, True, scale, 1.4, None)
    assert lines[0] == "frame OK: image score vs image threshold 0.500"
    assert "pixel threshold 0.300" in lines[1] and "an OK part may show one" in lines[1]
    assert "up to 1.400, above the scale's top 1.000" in lines[2] and "highest value of the run" in lines[2]
    # an OK part with an outline and a map above the run's range: three lines under the verdict
    rgb = np.full((64, 64, 3), 128, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[20:30, 20:30] = 1.4
    pred = Prediction(category="c", anomaly_map=amap, anomaly_map_full=amap, method="toy", has_regions=False)
    marked = V.prediction_panels(rgb, pred, panels="image,anomaly_map", scale=scale, score=0.4, verdict="OK",
                                 threshold=0.5, defect_mask=amap > 0.3, pixel_threshold=0.3)
    plain = V.prediction_panels(rgb, pred, panels="image,anomaly_map", scale=V.MapScale(0.0, 1.4, "raw"), score=0.4)
    assert marked.shape[0] == plain.shape[0] + 3 * 18


# ---------------------------------------------------------------------------------------------
# pictures that decide


def test_one_scale_colour_bar_verdict_and_outline_on_every_panel():
    rng = np.random.default_rng(0)
    rgb = np.full((80, 100, 3), 128, np.uint8)
    low = np.full((80, 100), 0.1, np.float32)
    high = low.copy()
    high[20:40, 30:60] = 0.9
    scale = V.MapScale.of([low, high], "normalised")
    assert (scale.vmin, scale.vmax) == (pytest.approx(0.1), pytest.approx(0.9))
    # one scale: the same value has the same colour on both pictures, and the low map stays blue
    a, b = V.heat_overlay(rgb, low, scale=scale), V.heat_overlay(rgb, high, scale=scale)
    assert np.array_equal(a[0, 0], b[0, 0]) and a[0, 0, 2] > a[0, 0, 0]
    assert b[30, 45, 0] > b[30, 45, 2]  # the hot region is red
    # on its own scale (the old default) the low map would be as red as the high one
    assert V.heat_overlay(rgb, low + rng.random(low.shape).astype(np.float32) * 1e-3)[0, 0, 0] > 0

    pred = Prediction(category="c", anomaly_map=high, anomaly_map_full=high, method="toy", has_regions=False)
    mask = high >= 0.5
    plain = V.prediction_panels(rgb, pred, panels="image,anomaly_map")
    strip = V.prediction_panels(rgb, pred, panels="image,anomaly_map", scale=scale, score=0.9, verdict="DEFECT",
                                threshold=0.5, defect_mask=mask, pixel_threshold=0.5)
    assert strip.shape[1] > plain.shape[1]  # the colour bar
    bar = V.colorbar(200, scale)
    col = bar[10:180, 8]  # inside the frame of the ramp
    assert col[0, 0] > col[0, 2] and col[-1, 2] > col[-1, 0]  # red at the top (vmax), blue at the bottom
    magenta = np.all(strip == V.PREDICTED_COLOR, axis=-1)
    red = np.all(strip == V.DEFECT_COLOR, axis=-1)
    half = plain.shape[1] // 2
    for cols in (slice(0, half), slice(half, strip.shape[1])):  # both panels: outline and verdict frame
        assert magenta[:, cols].any() and red[26:, cols].sum() > 100
    assert red[:26].any()  # the banner
    ok = V.prediction_panels(rgb, pred, panels="image,anomaly_map", scale=scale, score=0.3, verdict="OK",
                             threshold=0.5)
    assert np.all(ok == V.OK_COLOR, axis=-1)[26:].sum() > 100
    assert not np.all(ok[:, :half] == V.DEFECT_COLOR, axis=-1).any()  # (the colour bar's ramp has that red)
    assert "DEFECT  score 0.900 >= threshold 0.500 (normalised)" == V.verdict_text(0.9, "DEFECT", 0.5, "normalised")


@pytest.mark.parametrize("width", [300, 900])
def test_banner_text_fits_the_picture(width):
    """The web UI writes a 32-character line above a picture as wide as the image: all of it must
    show (the last character changes the picture), none of it drawn past the right edge."""
    from saa.visualize import banner

    text = "score 0.1908 (raw, no threshold)"
    strip = np.zeros((50, width, 3), np.uint8)
    full = banner(strip, text, height=max(26, 900 // 12))
    assert not np.array_equal(full, banner(strip, text[:-1], height=max(26, 900 // 12)))
    ink = np.where((full[:-50] < 250).any(axis=2).any(axis=0))[0]
    assert ink.max() < width - 3


def test_numbers_that_differ_never_read_the_same():
    """A score just below a threshold is written with the digits that show it (REVIEW text too)."""
    t = 0.05777469
    s = float(np.nextafter(np.float32(t), np.float32(0)))
    a, b = V.format_apart(s, t)
    assert a != b and float(a) < float(b)
    assert V.format_apart(0.9, 0.5) == ["0.900", "0.500"]  # the pictures' own format when it is enough
    assert V.format_apart(0.5, None, 0.5) == ["0.500", "", "0.500"]
    text = V.verdict_text(s, "REVIEW", t, "raw", review_threshold=0.03)
    assert text.startswith("REVIEW  score ") and f"< threshold {b}" in text and ">= review 0.03," in text
    assert V.verdict_color("REVIEW") == V.REVIEW_COLOR


def test_close_marks_keep_their_lines_and_one_readable_name():
    """Two thresholds at almost one height (a bank's REVIEW and pixel thresholds): both lines are
    drawn, each in its colour, and only the first name is written (no names printed over each other)."""
    scale = V.MapScale(0.0, 1.0, "raw")
    one = V.colorbar(200, scale, marks=[(0.62, "px thr")])
    both = V.colorbar(200, scale, marks=[(0.62, "px thr"), (0.615, "review", V.REVIEW_COLOR)])
    apart = V.colorbar(200, scale, marks=[(0.62, "px thr"), (0.35, "review", V.REVIEW_COLOR)])
    text = slice(20, None)  # right of the ramp: where names and numbers are written

    assert np.all(both[:, :14] == V.REVIEW_COLOR, axis=-1).any()        # the REVIEW line, in its own colour
    assert np.array_equal(both[:, text], one[:, text])                  # ... but no name over "px thr"
    assert not np.array_equal(apart[:, text], one[:, text])             # apart, both names are written
