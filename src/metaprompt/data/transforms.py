"""The field's image transforms: random resized crop + flip for training, resize + centre crop for test."""
from __future__ import annotations

from torchvision import transforms as T

TRAIN_CROP_SCALE = (0.08, 1.0)


def train_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=TRAIN_CROP_SCALE, interpolation=T.InterpolationMode.BICUBIC),
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
