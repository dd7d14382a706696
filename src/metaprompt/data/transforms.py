"""The field's image transforms: random resized crop + flip for training, resize + centre crop for test."""
from __future__ import annotations

from torchvision import transforms as T

def train_transform(size: int, mean: tuple[float, ...], std: tuple[float, ...], crop_scale_min: float) -> T.Compose:
    """``crop_scale_min``: the smallest crop, as a fraction of the image area (``TrainConfig.crop_scale_min``,
    the field's 0.08)."""
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
