"""The world's colours and its four visual domains: how a placed shape is painted onto a canvas.

Every painter takes the shape's contours in canvas pixels, the class colour (RGB in 0..1), a random
generator and the canvas size, and returns a float ``[S, S, 3]`` image in 0..1. Backgrounds are kept
unsaturated so that the class colour stays the one saturated thing in the image.
"""
from __future__ import annotations

import colorsys
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .shapes import Contour

# Hue (0..1), saturation, value of each class colour; hues far enough apart to stay apart under jitter.
COLOURS: dict[str, tuple[float, float, float]] = {
    "blue": (0.61, 0.80, 0.85),
    "green": (0.34, 0.75, 0.65),
    "orange": (0.075, 0.90, 0.97),
    "purple": (0.79, 0.65, 0.70),
    "red": (0.995, 0.85, 0.85),
    "yellow": (0.155, 0.85, 0.95),
}

Rgb = np.ndarray
Painter = Callable[[list[Contour], Rgb, np.random.Generator, int], np.ndarray]


def jittered_colour(colour: str, rng: np.random.Generator, hue: float, sat_val: float) -> Rgb:
    """The class colour with its hue moved by up to ``hue`` and saturation / value scaled by up to
    ``1 +- sat_val``."""
    h, s, v = COLOURS[colour]
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = float(np.clip(s * rng.uniform(1 - sat_val, 1 + sat_val), 0, 1))
    v = float(np.clip(v * rng.uniform(1 - sat_val, 1 + sat_val), 0, 1))
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _muted(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> Rgb:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


def mask_of(contours: list[Contour], size: int) -> np.ndarray:
    """The filled shape as a float ``[S, S]`` mask in 0..1."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for contour in contours:
        draw.polygon([tuple(p) for p in contour.points], fill=0 if contour.hole else 255)
    return np.asarray(img, dtype=np.float32) / 255.0


def _as_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _as_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8))


def _composite(background: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return background * (1 - a) + colour * a


def _low_frequency_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Smooth noise in -1..1: a small random grid upsampled bicubically to the canvas."""
    grid = rng.uniform(0, 255, (cells, cells, channels)).astype(np.uint8)
    img = Image.fromarray(grid if channels > 1 else grid[..., 0]).resize((size, size), Image.BICUBIC)
    arr = _as_array(img) * 2 - 1
    return arr if channels > 1 else arr[..., None]


def _strokes(rng: np.random.Generator, size: int, count: int, width: tuple[int, int],
             colours: list[Rgb], base: np.ndarray, alpha: float) -> np.ndarray:
    """``base`` with ``count`` random straight brush strokes painted over it."""
    out = base
    for _ in range(count):
        layer = Image.new("L", (size, size), 0)
        x0, y0 = rng.uniform(0, size, 2)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.9) * size
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        ImageDraw.Draw(layer).line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(*width)))
        out = _composite(out, colours[int(rng.integers(len(colours)))], _as_array(layer) * alpha)
    return out


def paint_photo(contours: list[Contour], colour: Rgb, rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured noisy background, shaded fill, soft drop shadow, sensor noise."""
    base = _muted(rng, (0.0, 0.3), (0.3, 0.8))
    background = np.clip(base + 0.12 * _low_frequency_noise(rng, size, 5, 3), 0, 1)
    mask = mask_of(contours, size)
    dx, dy = rng.uniform(0.04, 0.1, 2) * size * rng.choice([-1, 1], 2)
    shadow = _as_array(_as_image(mask).transform(
        (size, size), Image.AFFINE, (1, 0, -dx, 0, 1, -dy)).filter(ImageFilter.GaussianBlur(size / 24)))
    background = background * (1 - 0.55 * shadow[..., None])
    light = rng.normal(size=2)
    light /= np.linalg.norm(light)
    ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
    shading = np.clip(1.0 + 0.9 * (xs * light[0] + ys * light[1]), 0.55, 1.35)
    fill = np.clip(colour * shading[..., None], 0, 1)
    image = _composite(background, fill, mask)
    return np.clip(image + rng.normal(0, 0.035, image.shape), 0, 1)


def paint_cartoon(contours: list[Contour], colour: Rgb, rng: np.random.Generator, size: int) -> np.ndarray:
    """Pastel flat background, flat fill, thick dark outline."""
    background = np.broadcast_to(_muted(rng, (0.1, 0.3), (0.9, 1.0)), (size, size, 3))
    mask = mask_of(contours, size)
    width = 2 * int(rng.integers(2, 4)) + 1
    outline = _as_array(_as_image(mask).filter(ImageFilter.MaxFilter(width))) - mask
    ink = _muted(rng, (0.2, 0.5), (0.05, 0.2))
    return _composite(_composite(background, colour, mask), ink, np.clip(outline, 0, 1))


def _jittered_line(contour: Contour, rng: np.random.Generator, jitter: float) -> list[tuple[float, float]]:
    points = contour.points + rng.normal(0, jitter, contour.points.shape)
    return [tuple(p) for p in np.concatenate([points, points[:1]])]


def paint_sketch(contours: list[Contour], colour: Rgb, rng: np.random.Generator, size: int) -> np.ndarray:
    """White paper; the outline drawn twice with jittered strokes in the class colour, sometimes
    with a little hatching inside."""
    paper = np.clip(rng.uniform(0.93, 1.0) + rng.normal(0, 0.015, (size, size, 1)), 0, 1)
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    jitter = size / 64 * rng.uniform(0.5, 1.2)
    for _ in range(2):
        for contour in contours:
            draw.line(_jittered_line(contour, rng, jitter), fill=255, width=int(rng.integers(2, 4)), joint="curve")
    ink = _as_array(layer)
    if rng.uniform() < 0.5:
        ink = np.maximum(ink, _hatching(rng, size) * mask_of(contours, size) * 0.7)
    return _composite(paper, colour, ink)


def _hatching(rng: np.random.Generator, size: int) -> np.ndarray:
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    slope = rng.uniform(0.5, 2.0) * rng.choice([-1, 1])
    for offset in np.arange(-size * 2, size * 2, rng.uniform(4, 7) * size / 64):
        draw.line([(0, offset), (size, offset + slope * size)], fill=255, width=1)
    return _as_array(layer)


def paint_painting(contours: list[Contour], colour: Rgb, rng: np.random.Generator, size: int) -> np.ndarray:
    """Brush-streaked muted background, a streaky fill, soft edges, overall blur."""
    background = np.broadcast_to(_muted(rng, (0.05, 0.35), (0.35, 0.85)), (size, size, 3))
    palette = [_muted(rng, (0.05, 0.35), (0.3, 0.9)) for _ in range(3)]
    background = _strokes(rng, size, 10, (size // 12, size // 6), palette, background, 0.5)
    shades = [np.clip(colour * rng.uniform(0.75, 1.2), 0, 1) for _ in range(3)]
    fill = _strokes(rng, size, 6, (size // 16, size // 8), shades, np.broadcast_to(colour, (size, size, 3)), 0.6)
    mask = _as_array(_as_image(mask_of(contours, size)).filter(ImageFilter.GaussianBlur(size / 48)))
    image = _composite(background, fill, mask)
    blurred = Image.fromarray((image * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 40))
    return _as_array(blurred)


DOMAINS: dict[str, Painter] = {
    "photo": paint_photo,
    "cartoon": paint_cartoon,
    "sketch": paint_sketch,
    "painting": paint_painting,
}

# How far each domain moves the class colour (hue shift, saturation / value scale).
COLOUR_JITTER: dict[str, tuple[float, float]] = {
    "photo": (0.015, 0.12),
    "cartoon": (0.01, 0.08),
    "sketch": (0.015, 0.12),
    "painting": (0.03, 0.18),
}
