"""The reference code's image transforms, on PIL and torch alone: train RandomResizedCrop + horizontal flip (the
crop's scale range and the flip are task settings: experiments/vision/family.py), eval
resize + centre crop; both convert to RGB and normalise with the backbone's own mean and std.

torchvision would supply these, but its PyPI wheels are built against CUDA torch and do not import beside the CPU
torch this project pins; the semantics below follow torchvision's (scale (0.08, 1), ratio (3/4, 4/3), ten tries
then a centre crop; bilinear resizing of the shorter side)."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from PIL import Image


def random_resized_crop_box(width: int, height: int, rng, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random crop covering `scale` of the area at aspect `ratio`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    aspect = width / height  # fall back to the largest centre crop within the ratio range
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class ImageTransform:
    """PIL image -> normalised float tensor (3, size, size)."""

    def __init__(self, size: int, mean, std, train: bool, crop_scale=(0.08, 1.0), flip: bool = True):
        self.size, self.train, self.crop_scale, self.flip = int(size), train, tuple(crop_scale), flip
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        # python's `random`: seeded by set_seed, and per worker by the DataLoader (a private generator would
        # give every worker the same crops)
        self.rng = random

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        if self.train:
            left, top, w, h = random_resized_crop_box(*image.size, self.rng, scale=self.crop_scale)
            image = image.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
            if self.flip and self.rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            image = centre_crop(resize_shorter(image, self.size), self.size)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - self.mean) / self.std


def to_rgb(image: Image.Image) -> Image.Image:
    """Three 8-bit channels. Grey (Fashion-MNIST, some Pets images) and RGBA convert as PIL converts them; 16-bit grey
    ("I;16", or "I" holding values above 255) is scaled to 8 bits first, which PIL's own conversion would clip to
    white instead."""
    if image.mode.startswith("I;16") or (image.mode == "I" and np.asarray(image).max() > 255):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width <= height:
        return image.resize((size, max(1, int(size * height / width))), Image.BILINEAR)
    return image.resize((max(1, int(size * width / height)), size), Image.BILINEAR)


def centre_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
