"""The reference code's image transforms, on PIL and torch, against PIL's own operations."""
import random

import numpy as np
import torch
from PIL import Image

from experiments.vision.transforms import ImageTransform, random_resized_crop_box


def test_transforms_follow_the_reference_semantics():
    image = Image.fromarray(np.tile(np.arange(60, dtype=np.uint8), (40, 1)), mode="L")  # grey, 60 x 40
    train = ImageTransform(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=True)
    evaluate = ImageTransform(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), train=False)
    random.seed(0)
    x = train(image)
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and torch.equal(x[0], x[1])  # grey -> RGB
    y = evaluate(image)
    # eval: shorter side to 24 (36 x 24), then the centre 24 columns: a horizontal ramp symmetric about its centre
    assert y.shape == (3, 24, 24)
    ramp = y[0, 0]
    assert torch.allclose(ramp + ramp.flip(0), torch.full_like(ramp, float(ramp[0] + ramp[-1])), atol=0.05)
    # normalised per channel with the given mean / std: against PIL's own resize and crop of the same image
    per_channel = ImageTransform(24, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1), train=False)(image)
    pixels = np.asarray(image.resize((36, 24), Image.BILINEAR).crop((6, 0, 30, 24)), dtype=np.float32) / 255
    for c, (mean, std) in enumerate(((0.5, 0.25), (0.4, 0.2), (0.3, 0.1))):
        assert torch.allclose(per_channel[c], torch.from_numpy((pixels - mean) / std), atol=1e-5)
    assert abs(float(y.mean() * 0.25 + 0.5) - (np.arange(60)[18:42].mean() / 255)) < 0.02
    rng = random.Random(1)
    for _ in range(200):  # every random crop lies inside the image, covers >= 8% and keeps the ratio range
        left, top, w, h = random_resized_crop_box(60, 40, rng)
        assert 0 <= left and left + w <= 60 and 0 <= top and top + h <= 40 and w * h >= 0.08 * 2400 * 0.9


def test_crop_scale_suits_the_image_size_and_flips_can_be_turned_off():
    from PIL import Image

    from experiments.vision.family import MIN_CROP_SIDE, crop_scale
    from experiments.vision.transforms import ImageTransform, random_resized_crop_box

    assert crop_scale("auto", 224) == [0.08, 1.0]                 # the reference's on ImageNet-sized images
    assert crop_scale("auto", 8) == [1.0, 1.0]                    # an 8x8 digit is never cropped to 2x2
    low, _ = crop_scale("auto", 28)
    rng = random.Random(0)
    sides = [min(random_resized_crop_box(28, 28, rng, scale=(low, 1.0))[2:]) for _ in range(2000)]
    assert min(sides) >= MIN_CROP_SIDE * 0.85                      # aspect jitter trims a little off one side
    assert crop_scale([0.5, 0.9], 28) == [0.5, 0.9]
    # a left-right asymmetric image: with flip off, no training view is mirrored
    image = Image.fromarray(np.concatenate([np.zeros((8, 4, 3)), np.full((8, 4, 3), 255)], axis=1).astype(np.uint8))
    random.seed(0)
    views = [ImageTransform(8, [0, 0, 0], [1, 1, 1], train=True, crop_scale=(1, 1), flip=False)(image)
             for _ in range(20)]
    assert all(v[0, :, 0].mean() < v[0, :, -1].mean() for v in views)
    random.seed(0)
    flipped = [ImageTransform(8, [0, 0, 0], [1, 1, 1], train=True, crop_scale=(1, 1), flip=True)(image)
               for _ in range(20)]
    assert any(v[0, :, 0].mean() > v[0, :, -1].mean() for v in flipped)
