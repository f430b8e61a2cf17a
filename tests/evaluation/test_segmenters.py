import numpy as np
import pytest
import torch

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.segmenters import AttentionSegmenter, Generated, PanopticSegmenter, match_segments

ID2LABEL = {0: "person", 1: "cat", 2: "couch"}


def _panoptic():
    seg = torch.zeros(4, 4, dtype=torch.long)
    seg[:2, :2] = 1  # cat, 4 px
    seg[3, 3] = 2  # cat, 1 px
    seg[2:, :2] = 3  # couch, 4 px
    segments = [{"id": 1, "label_id": 1}, {"id": 2, "label_id": 1}, {"id": 3, "label_id": 2}]
    return seg, segments


def test_match_largest_union_alias_and_missing():
    seg, segments = _panoptic()
    cat, sofa, dog = match_segments(seg, segments, ID2LABEL, ["cat", "sofa", "dog"], "largest",
                                    aliases={"sofa": ["couch"]})
    assert cat.sum() == 4 and bool(cat[0, 0]) and not bool(cat[3, 3])
    assert sofa.sum() == 4 and bool(sofa[3, 0])
    assert dog is None
    (union,) = match_segments(seg, segments, ID2LABEL, ["Cat"], "union")
    assert union.sum() == 5 and bool(union[3, 3])


def test_attention_segmenter_thresholds_the_upsampled_map():
    # bilinear 2x2 -> 4x4 of [[1, 0], [0, 0]] is 1, .75, .25, 0 / .75, .5625, .1875, 0 / ...: four pixels >= 0.5
    generated = Generated(torch.zeros(3, 4, 4), ["<a>", "<b>"], ["cat", "dog"],
                          {"<a>": np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)})
    (masks,) = AttentionSegmenter(threshold=0.5)([generated])
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(masks[0], expected)
    assert masks[1] is None  # no map for <b>


def test_panoptic_segmenter_missing_weights_message(tmp_path):
    with pytest.raises(UserInputError, match="hf download .*segmenter=attention"):
        PanopticSegmenter.load(str(tmp_path / "nowhere"))
    with pytest.raises(UserInputError, match="'largest' or 'union'"):
        PanopticSegmenter(torch.nn.Linear(1, 1), None, match="biggest")
