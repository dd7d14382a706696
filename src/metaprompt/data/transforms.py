"""The field's image transforms: random resized crop + flip for training, resize + centre crop for test."""
from __future__ import annotations

import torch
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


def decode_transform(size: int) -> T.Compose:
    """The test transform's geometry only: resized and centre-cropped, kept as uint8 (a third of float32's
    bytes); :func:`normalize_batch` finishes it on the device, to the same values as :func:`test_transform`."""
    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.PILToTensor(),
    ])


def normalize_batch(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images [B, 3, S, S] as :func:`test_transform` leaves them (ToTensor's /255, then Normalize), the
    same operations in the same order, on the images' device."""
    shape = (1, -1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(shape)
    return images.to(torch.float32).div(255).sub(mean_t).div(std_t)
