"""The field's image transforms: random resized crop + flip for training, resize + centre crop for test."""
from __future__ import annotations

from torchvision import transforms as T

TRAIN_CROP_SCALE_MIN = 0.08
"""The smallest crop of the random resized crop, as a fraction of the image area (the field's 0.08)."""


def train_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    crop_scale_min: float = TRAIN_CROP_SCALE_MIN) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(crop_scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def test_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> T.Compose:
    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
