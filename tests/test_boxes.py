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


def test_parse_qwen2_5_vl_and_qwen3_vl_formats():
    """Qwen2.5-VL: absolute pixels of the resized input (JSON bbox_2d, a bare list, or two points); Qwen3-VL: the
    same syntax on 0..1000. Both as fractions of the model's view."""
    answer = '```json\n[\n\t{"bbox_2d": [100, 50, 300, 150], "label": "cat"}\n]\n```'
    assert parse_boxes(answer, "qwen_pixels", (400, 200)) == [(0.25, 0.25, 0.75, 0.75)]
    assert parse_boxes("[100, 50, 300, 150]", "qwen_pixels", (400, 200)) == [(0.25, 0.25, 0.75, 0.75)]
    assert parse_boxes("<|box_start|>(100,50),(300,150)<|box_end|>", "qwen_pixels", (400, 200)) == [
        (0.25, 0.25, 0.75, 0.75)]
    assert parse_boxes(answer, "qwen_1000") == [(0.1, 0.05, 0.3, 0.15)]
    with pytest.raises(ValueError):
        parse_boxes(answer, "qwen_pixels")  # pixels without the resized input's size cannot be mapped
    with pytest.raises(ValueError):
        parse_boxes(answer, "no-such-format")


def test_qwen2_5_vl_box_maps_from_the_smart_resized_input_to_upload_pixels():
    """A 1000 x 700 photo with the hub processor's settings (patch 14, merge 2): the tower sees it smart-resized
    to 1008 x 700; a box the model gives in those pixels lands on the same place of the upload."""
    from types import SimpleNamespace

    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from explorer.models.families import family_class
    from explorer.models.layout import ImageLayout
    from explorer.results import answer_boxes

    inputs = Qwen2VLImageProcessorPil()(images=[Image.new("RGB", (1000, 700))], return_tensors="pt")
    model = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(patch_size=14, spatial_merge_size=2)))
    segments = family_class("qwen2_5_vl")().segments(model, inputs, 0, (1000, 700))
    assert segments[0].view_px == (1008, 700) and segments[0].grid == (25, 36)
    layout = [ImageLayout(0, 0, tuple(segments))]
    boxes = answer_boxes('{"bbox_2d": [504, 350, 1008, 700]}', "qwen_pixels", layout, [(1000, 700)])
    assert boxes[0]["box"] == [500.0, 350.0, 1000.0, 700.0]


def test_llava_onevision_box_frame_is_the_whole_upload():
    """LLaVA-OneVision answers [x1, y1, x2, y2] as 0..1 fractions of the image (LMMs-Lab's lmms-eval RefCOCO task
    asks for exactly that and normalises its references by the original width and height). The frame is the whole
    upload because the stock processor neither crops nor pads what the model keeps: with the hub settings (384 px
    tiles, anyres pinpoints up to 6x6) a 1000 x 700 photo's base tile is the whole photo squashed to 384 x 384 --
    a red left edge, blue right edge and green top edge all reach the tile's borders."""
    import numpy as np
    from PIL import Image
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil)

    from explorer.models.families import family_class

    pixels = np.full((700, 1000, 3), 128, np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, -20:] = (0, 0, 255)
    pixels[:20, 20:-20] = (0, 255, 0)
    pinpoints = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]
    proc = LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384}, image_grid_pinpoints=pinpoints,
                                           image_mean=[0.5] * 3, image_std=[0.5] * 3)
    base = proc(images=[Image.fromarray(pixels)], return_tensors="pt")["pixel_values"][0][0]  # (3, 384, 384)
    assert base.shape == (3, 384, 384)
    red, blue, green = base[:, 192, 1], base[:, 192, -2], base[:, 1, 192]  # -1..1 after the 0.5 mean / std
    assert red[0] > 0.9 and red[2] < -0.9 and blue[2] > 0.9 and blue[0] < -0.9 and green[1] > 0.9
    assert family_class("llava_onevision").box_format == "normalised"


def test_llava_onevision_box_maps_to_upload_pixels(engine, loaded):
    """A box the model gives on 0..1 lands on the same fractions of the uploaded 1000 x 700 image, for both of its
    grids (base and high-res) -- no crop or pad offset to undo."""
    from PIL import Image

    from explorer.results import answer_boxes

    lm = loaded["llava_onevision"]
    prep = engine.prepare(lm, [Image.new("RGB", (1000, 700), "gray")], "where is the circle ?")
    assert [s.frame for s in prep.layouts[0].segments] == [(0.0, 0.0, 1.0, 1.0)] * 2
    boxes = answer_boxes("The circle is at [0.5, 0.25, 1.0, 0.75].", lm.family.box_format, prep.layouts, prep.sizes)
    assert boxes[0]["box"] == [500.0, 175.0, 1000.0, 525.0] and boxes[0]["raw"] == [0.5, 0.25, 1.0, 0.75]
