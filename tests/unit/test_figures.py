import numpy as np
from PIL import Image

from break_a_scene.figures import MASK_COLOURS, masks_overlay


def test_masks_are_outlined_and_labelled_over_an_enlarged_input():
    image = Image.new("RGB", (32, 32), (255, 140, 0))  # an orange object fills the picture
    mask = np.zeros((2, 32, 32), dtype=np.float32)
    mask[0, 8:24, 8:24] = 1
    mask[1, 0:6, 26:32] = 1
    picture = np.asarray(masks_overlay(Image.fromarray(np.asarray(image)), mask, labels=["<asset0>", "<asset1>"]))
    assert picture.shape == (256, 256, 3)  # 32 px enlarged 8x
    assert tuple(picture[128, 64]) == MASK_COLOURS[0]  # on mask 0's left edge (x = 8 * 8 = 64)
    assert tuple(picture[128, 62]) == (0, 0, 0)  # its black edging just outside
    assert tuple(picture[128, 128]) == (255, 140, 0)  # the inside keeps the input's colours
    assert tuple(picture[40, 255]) == MASK_COLOURS[1]  # the second mask, at the image border
    label = picture[66:76, 66:110].astype(int)  # the label box at mask 0's top left: black, with text in red
    assert (label == 0).all(axis=-1).mean() > 0.5
    assert ((label[..., 0] > 100) & (label[..., 0] > 2 * label[..., 1])).any()
