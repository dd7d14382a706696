"""The ten shapes of the world, as closed contours in unit coordinates.

A shape is a list of contours; each is an ``[K, 2]`` array of (x, y) points (y down, radius about 1)
and a flag saying whether it is a hole. Filling the contours in order (holes in background colour)
gives the shape's mask; stroking them gives its outline, which is how sketches are drawn.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

CIRCLE_POINTS = 48


class Contour(NamedTuple):
    points: np.ndarray
    hole: bool = False


def _polygon(*xy: float) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def _arc(cx: float, cy: float, r: float, start: float, stop: float, n: int = CIRCLE_POINTS) -> np.ndarray:
    angles = np.linspace(start, stop, n)
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def _circle(r: float) -> np.ndarray:
    return _arc(0.0, 0.0, r, 0.0, 2 * math.pi, CIRCLE_POINTS + 1)[:-1]


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, CIRCLE_POINTS + 1)[:-1]
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, -y - 2.5], axis=1) / 16.5


def _crescent(r_outer: float = 0.95, r_inner: float = 0.8, offset: float = 0.5) -> np.ndarray:
    """One polygon: the outer circle's arc left of the cut, then the inner circle's arc back."""
    x = (offset ** 2 + r_outer ** 2 - r_inner ** 2) / (2 * offset)
    y = math.sqrt(r_outer ** 2 - x ** 2)
    a = math.atan2(y, x)
    b = math.atan2(y, x - offset)
    outer = _arc(0.0, 0.0, r_outer, a, 2 * math.pi - a)
    inner = _arc(offset, 0.0, r_inner, 2 * math.pi - b, b)
    return np.concatenate([outer, inner]) + np.array([-0.2, 0.0])


SHAPES: dict[str, Callable[[], list[Contour]]] = {
    "arrow": lambda: [Contour(_polygon(-1, -0.22, 0.15, -0.22, 0.15, -0.6, 1, 0,
                                       0.15, 0.6, 0.15, 0.22, -1, 0.22))],
    "circle": lambda: [Contour(_circle(0.9))],
    "crescent": lambda: [Contour(_crescent())],
    "cross": lambda: [Contour(_polygon(-0.3, -0.95, 0.3, -0.95, 0.3, -0.3, 0.95, -0.3, 0.95, 0.3, 0.3, 0.3,
                                       0.3, 0.95, -0.3, 0.95, -0.3, 0.3, -0.95, 0.3, -0.95, -0.3, -0.3, -0.3))],
    "diamond": lambda: [Contour(_polygon(0, -1, 0.6, 0, 0, 1, -0.6, 0))],
    "heart": lambda: [Contour(_heart())],
    "ring": lambda: [Contour(_circle(0.95)), Contour(_circle(0.55), hole=True)],
    "square": lambda: [Contour(_polygon(-0.78, -0.78, 0.78, -0.78, 0.78, 0.78, -0.78, 0.78))],
    "star": lambda: [Contour(_star())],
    "triangle": lambda: [Contour(_polygon(0, -1, 0.95, 0.7, -0.95, 0.7))],
}


def place(contours: list[Contour], centre: tuple[float, float], radius: float, angle: float,
          flip: bool) -> list[Contour]:
    """The contours mirrored (if ``flip``), rotated by ``angle`` radians, scaled and moved to pixels."""
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]])
    mirror = np.array([-1.0, 1.0]) if flip else np.ones(2)
    return [Contour((k.points * mirror) @ rotation.T * radius + np.asarray(centre), k.hole) for k in contours]
