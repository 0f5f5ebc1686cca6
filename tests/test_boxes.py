"""Boxes parsed per family format and mapped to uploaded-image pixels through the crop/pad frame."""
from __future__ import annotations

import pytest
from transformers import CLIPImageProcessor

from explorer.boxes import iou, parse_boxes, to_pixels
from explorer.models.families import crop_frame


def test_parse_llava_and_qwen_formats():
    assert parse_boxes("It is at [0.10, 0.20, 0.50, 0.60].", "normalised") == [(0.1, 0.2, 0.5, 0.6)]
    assert parse_boxes("<|box_start|>(100,200),(500,600)<|box_end|>", "qwen") == [(0.1, 0.2, 0.5, 0.6)]
    assert parse_boxes("no box here", "normalised") == []


def test_centre_crop_frame_maps_back_to_upload():
    proc = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    frame = crop_frame(proc)((800, 400))  # wide image: the crop keeps the middle 400x400
    assert frame == pytest.approx((0.25, 0.0, 0.75, 1.0))
    assert to_pixels((0.0, 0.0, 1.0, 1.0), frame, (800, 400)) == [200.0, 0.0, 600.0, 400.0]


def test_pad_to_square_frame_maps_back_to_upload():
    proc = CLIPImageProcessor(do_center_crop=False, size={"shortest_edge": 336})
    proc.do_pad = True  # original LLaVA: pad to a square, boxes normalised to the padded square
    frame = crop_frame(proc)((400, 200))
    assert to_pixels((0.25, 0.5, 0.75, 0.75), frame, (400, 200)) == [100.0, 100.0, 300.0, 200.0]


def test_iou():
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
