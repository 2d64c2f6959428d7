"""Procedural colour textures: the stand-in for DTD, and the surfaces of synthetic datasets.

DTD cannot be shipped, yet anomaly synthesis needs foreign texture to paste into good
images, and the synthetic datasets need believable materials. Each family below builds a
scalar field in [0, 1] (clouds, stripes, weave, grid, cells, pebble, marble, speckle) that a
three-colour palette turns into RGB, with fine grain on top. A :class:`TextureStyle` fixes
the look (family, palette, frequency, angle, warp, grain); :func:`render_texture` draws a
fresh instance of it, so one style gives endless images of the "same material".

All fields come from cheap OpenCV resizes of small random grids and elementwise numpy, so
a 256 x 256 texture costs a millisecond or two: the training loop draws one per sample.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

Colour = Tuple[float, float, float]


@dataclass(frozen=True)
class TextureStyle:
    """The look of one material; rendering it twice gives two different pieces of it."""

    family: str
    colours: Tuple[Colour, Colour, Colour]  # RGB in [0, 1]: field value 0, 0.5 and 1
    frequency: float  # features (stripes, threads, cells) across the image width
    angle: float  # degrees; orientation of directional families
    warp: float  # how strongly low-frequency noise bends the pattern
    grain: float  # amplitude of the fine, pixel-scale grain

    def jittered(self, rng: np.random.Generator) -> "TextureStyle":
        """A slightly different batch of the same material: scale, angle, tint and warp move a little."""
        tint = rng.uniform(0.985, 1.015, size=3)
        colours = tuple(tuple(float(c) for c in np.clip(np.asarray(col) * tint, 0.0, 1.0)) for col in self.colours)
        return replace(
            self,
            colours=colours,  # type: ignore[arg-type]
            frequency=self.frequency * float(rng.uniform(0.96, 1.04)),
            angle=self.angle + float(rng.uniform(-3.0, 3.0)),
            warp=self.warp * float(rng.uniform(0.9, 1.1)),
        )


def smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """S x S float32 value noise: a cells x cells uniform grid, upsampled by Gaussian pyramid steps.

    ``pyrUp`` doubling is smooth and about twenty times cheaper than one bicubic resize
    over a large factor; a final linear resize lands on any size.
    """
    cells = int(max(2, min(cells, size)))
    field = rng.random((cells, cells), dtype=np.float32)
    while field.shape[0] * 2 <= size:
        field = cv2.pyrUp(field)
    if field.shape[0] != size:
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR)
    return field


def fractal_noise(size: int, rng: np.random.Generator, cells: int = 4, octaves: int = 4,
                  persistence: float = 0.5) -> np.ndarray:
    """S x S float32 fractal value noise stretched to [0, 1]: octaves doubling in frequency."""
    total = np.zeros((size, size), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        total += np.float32(amplitude) * smooth_noise(size, cells * 2**octave, rng)
        amplitude *= persistence
    return _stretch(total)


def _stretch(field: np.ndarray) -> np.ndarray:
    lo, hi = float(field.min()), float(field.max())
    return (field - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))


def _pattern_coords(size: int, style: TextureStyle, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Rotated, randomly shifted, noise-warped coordinates in pattern periods (u across, v along)."""
    theta = np.deg2rad(style.angle)
    axis = np.arange(size, dtype=np.float32) * np.float32(style.frequency / size)
    ox, oy = rng.random(2, dtype=np.float32) * np.float32(8.0)
    u = axis[None, :] * np.float32(np.cos(theta)) + axis[:, None] * np.float32(np.sin(theta)) + ox
    v = axis[:, None] * np.float32(np.cos(theta)) - axis[None, :] * np.float32(np.sin(theta)) + oy
    if style.warp > 0:
        u += np.float32(style.warp) * (smooth_noise(size, 4, rng) - np.float32(0.5))
        v += np.float32(style.warp) * (smooth_noise(size, 4, rng) - np.float32(0.5))
    return u, v


def _clouds(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    return fractal_noise(size, rng, cells=max(2, int(style.frequency / 4)), octaves=5)


def _stripes(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    u, _ = _pattern_coords(size, replace(style, warp=style.warp * 4.0), rng)
    wave = np.float32(0.5) + np.float32(0.5) * np.sin(np.float32(2 * np.pi) * u)
    return np.float32(0.8) * wave + np.float32(0.2) * fractal_noise(size, rng, cells=8, octaves=3)


def _weave(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    """Plain weave: in alternate cells the horizontal or the vertical thread lies on top."""
    u, v = _pattern_coords(size, style, rng)
    fu, fv = u - np.floor(u), v - np.floor(v)
    across_u, across_v = np.sin(np.float32(np.pi) * fu), np.sin(np.float32(np.pi) * fv)
    horizontal_on_top = ((np.floor(u) + np.floor(v)) % 2) == 0
    thread = np.where(horizontal_on_top, across_v * np.sqrt(across_u), across_u * np.sqrt(across_v))
    return np.float32(0.85) * thread + np.float32(0.15) * fractal_noise(size, rng, cells=16, octaves=2)


def _grid(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    """A wire mesh: thin bright lines on a dark ground."""
    u, v = _pattern_coords(size, style, rng)
    width = np.float32(0.18)
    dist_u = np.abs(u - np.round(u))
    dist_v = np.abs(v - np.round(v))
    line = np.clip(np.float32(1.0) - np.minimum(dist_u, dist_v) / width, 0.0, 1.0)
    return np.float32(0.8) * line + np.float32(0.2) * fractal_noise(size, rng, cells=8, octaves=2)


def _voronoi(size: int, style: TextureStyle, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """(distance to the nearest seed, cell label) for about frequency^2 random seeds."""
    seeds = np.full((size, size), 255, np.uint8)
    count = max(4, int(style.frequency**2))
    ys, xs = rng.integers(0, size, size=(2, count))
    seeds[ys, xs] = 0
    dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    return dist, labels


def _cells(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    """Stones or tiles: a tone per Voronoi cell, dark grout along the cell borders."""
    _, labels = _voronoi(size, style, rng)
    tones = rng.uniform(0.35, 0.95, size=int(labels.max()) + 1).astype(np.float32)
    field = tones[labels]
    border = np.zeros((size, size), bool)
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    field[border] = 0.05
    return np.float32(0.85) * field + np.float32(0.15) * fractal_noise(size, rng, cells=16, octaves=2)


def _pebble(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    """Leather-like grain: rounded bumps, darker in the creases between them."""
    dist, _ = _voronoi(size, style, rng)
    bumps = np.float32(1.0) - np.sqrt(_stretch(dist))
    return np.float32(0.7) * bumps + np.float32(0.3) * fractal_noise(size, rng, cells=8, octaves=3)


def _marble(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    """Thin dark veins, bent by turbulence, over a cloudy body."""
    u, _ = _pattern_coords(size, replace(style, warp=0.0), rng)
    turbulence = fractal_noise(size, rng, cells=3, octaves=5)
    phase = np.float32(2 * np.pi) * u + np.float32(6.0 * (0.5 + style.warp)) * turbulence
    vein = np.sqrt(np.sqrt(np.abs(np.sin(phase))))  # |sin|^(1/4): thin dark lines where sin crosses 0
    return np.float32(0.7) * vein + np.float32(0.3) * fractal_noise(size, rng, cells=4, octaves=4)


def _speckle(size: int, style: TextureStyle, rng: np.random.Generator) -> np.ndarray:
    """Terrazzo / granite: a quiet body strewn with small light and dark chips."""
    field = np.float32(0.35) + np.float32(0.3) * fractal_noise(size, rng, cells=6, octaves=3)
    count = int(style.frequency**2 * 3)
    radius_max = max(1, size // 80)
    centres = rng.integers(0, size, size=(count, 2))
    radii = rng.integers(0, radius_max + 1, size=count)
    values = rng.choice(np.array([0.0, 1.0], np.float32), size=count)
    for (x, y), r, val in zip(centres, radii, values):
        cv2.circle(field, (int(x), int(y)), int(r), float(val), -1)
    return field


FAMILIES: Dict[str, Callable[[int, TextureStyle, np.random.Generator], np.ndarray]] = {
    "clouds": _clouds,
    "stripes": _stripes,
    "weave": _weave,
    "grid": _grid,
    "cells": _cells,
    "pebble": _pebble,
    "marble": _marble,
    "speckle": _speckle,
}

_FREQUENCY = {  # features across the image: what makes each family look like itself
    "clouds": (8, 32), "stripes": (4, 24), "weave": (12, 40), "grid": (6, 20),
    "cells": (4, 12), "pebble": (8, 24), "marble": (1, 4), "speckle": (6, 14),
}


def _palette(rng: np.random.Generator) -> Tuple[Colour, Colour, Colour]:
    """Dark, middle and light shades around one hue, the light one sometimes a contrasting hue."""
    hue = rng.random()
    sat = rng.uniform(0.05, 0.8)
    values = np.sort(rng.uniform(0.1, 0.95, size=3))
    hues = [hue, hue + rng.uniform(-0.05, 0.05), hue + (0.5 if rng.random() < 0.3 else rng.uniform(-0.08, 0.08))]
    return tuple(colorsys.hsv_to_rgb(h % 1.0, sat, v) for h, v in zip(hues, values))  # type: ignore[return-value]


def draw_style(rng: np.random.Generator, family: str | None = None) -> TextureStyle:
    """A random material; ``family`` pins the family (one of FAMILIES)."""
    if family is None:
        family = str(rng.choice(sorted(FAMILIES)))
    elif family not in FAMILIES:
        raise ValueError(f"unknown texture family {family!r}; use one of {', '.join(sorted(FAMILIES))}")
    lo, hi = _FREQUENCY[family]
    return TextureStyle(
        family=family,
        colours=_palette(rng),
        frequency=float(rng.uniform(lo, hi)),
        angle=float(rng.uniform(0.0, 180.0)),
        warp=float(rng.uniform(0.0, 0.6)),
        grain=float(rng.uniform(0.03, 0.2)),
    )


def _palette_lut(colours: Tuple[Colour, Colour, Colour]) -> np.ndarray:
    """1 x 256 x 3 uint8 table: field level -> RGB, through the three palette stops."""
    t = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]
    c0, c1, c2 = (np.asarray(c, np.float32) for c in colours)
    rgb = c0 + np.minimum(2 * t, 1) * (c1 - c0) + np.maximum(2 * t - 1, 0) * (c2 - c1)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)[None]


def render_texture(style: TextureStyle, size: int, rng: np.random.Generator, field_size: int | None = None) -> np.ndarray:
    """A fresh S x S x 3 uint8 RGB piece of ``style`` (uint8 like the DTD images it stands for).

    ``field_size`` computes the pattern at a lower resolution and upsamples it, the grain
    staying at full resolution: four times cheaper at half size, for callers that draw a
    texture per training sample.
    """
    field_size = size if field_size is None else field_size
    field = FAMILIES[style.family](field_size, style, rng)
    if field_size != size:
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR)
    field += np.float32(style.grain) * (smooth_noise(size, size // 2, rng) - np.float32(0.5))
    levels = cv2.convertScaleAbs(np.clip(field, 0.0, 1.0), alpha=255.0)
    # A lookup table colours the field: far cheaper than per-pixel arithmetic on 3 channels.
    return cv2.LUT(cv2.cvtColor(levels, cv2.COLOR_GRAY2RGB), _palette_lut(style.colours))


def random_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random material of a random family: what a random DTD image stands for.

    The pattern is computed at half resolution from 256 px up (DTD photos are soft at
    that scale too); this runs once per training sample.
    """
    return render_texture(draw_style(rng), size, rng, field_size=min(size, max(128, size // 2)))
