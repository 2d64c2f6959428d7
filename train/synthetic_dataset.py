"""`destseg-synth`: a synthetic MVTec-AD-layout dataset, for tests, demos and smoke runs.

Real MVTec AD cannot be shipped, yet every stage needs a dataset of the same layout. This
writes one category::

    OUT/NAME/train/good/000.png ...
    OUT/NAME/test/good/000.png ...        about half of --test
    OUT/NAME/test/<defect>/000.png ...    scratch, crack, hole, stain, missing, in turn
    OUT/NAME/ground_truth/<defect>/000_mask.png   0/255

Good images are either a textured surface (one procedural material with natural variation:
lighting, slight shift and scale, sensor noise) or a machined part (washer, nut, flange or
bracket) on a background, with pose jitter, shading and sensor noise. Defects are small and
local, so no global statistic (mean brightness, contrast) gives them away.

A defect is painted on the image before lighting and sensor noise, and every pixel it
changes is in its mask, and none outside: the defective image equals its defect-free
rendering byte for byte outside the mask (:func:`render_sample` returns both).
"""
from __future__ import annotations

import argparse
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from destseg.atomic import NotOursError, atomic_dir, check_replaceable, write_json
from destseg.images import write_image
from destseg.train.textures import Colour, TextureStyle, draw_style, render_texture, smooth_noise

DEFECT_TYPES = ("scratch", "crack", "hole", "stain", "missing")
TEXTURE_FAMILY_FOR = {"carpet": "weave", "grid": "grid", "leather": "pebble", "tile": "speckle", "wood": "stripes"}
MATERIAL_COLOURS: Dict[str, Tuple[Colour, ...]] = {
    "carpet": ((0.55, 0.45, 0.35), (0.35, 0.40, 0.55), (0.50, 0.50, 0.48)),
    "grid": ((0.55, 0.56, 0.58),),
    "leather": ((0.45, 0.28, 0.18), (0.22, 0.21, 0.21), (0.50, 0.16, 0.12), (0.70, 0.55, 0.38)),
    "tile": ((0.74, 0.74, 0.71), (0.62, 0.60, 0.58)),
    "wood": ((0.62, 0.43, 0.25), (0.72, 0.56, 0.38)),
}
SHAPES = ("washer", "nut", "flange", "bracket")
METALS: Dict[str, Colour] = {
    "steel": (0.62, 0.63, 0.66), "aluminium": (0.76, 0.77, 0.79),
    "brass": (0.74, 0.60, 0.30), "copper": (0.72, 0.45, 0.30),
}
ALPHA_MIN = 0.1  # paint below this opacity is dropped, so the mask is exactly the changed region
SUBPIXEL_BITS = 4  # OpenCV drawing at 1/16 pixel precision
MIN_SIZE = 32


MARKER = ".destseg-synth.json"  # what makes OUT/CATEGORY ours to replace


class SynthError(ValueError):
    """Bad arguments for destseg-synth."""


@dataclass(frozen=True)
class Look:
    """What every image of one synthetic category shares."""

    kind: str  # "texture" or "object"
    surface: TextureStyle  # the material (texture kind) or the background under the part (object kind)
    shape: str = ""  # object kind: one of SHAPES
    metal: Colour = (0.0, 0.0, 0.0)  # object kind: base colour of the part
    light_angle: float = 0.0  # radians: where the highlights of turned surfaces point


class Sample(NamedTuple):
    image: np.ndarray  # S x S x 3 uint8: what is written
    good: np.ndarray  # S x S x 3 uint8: the same scene without the defect (equal to image if good)
    mask: Optional[np.ndarray]  # S x S bool: the defect's pixels; None for a good sample


class Scene(NamedTuple):
    """A rendering before the defect, lighting and noise: colours in [0, 1]."""

    albedo: np.ndarray  # S x S x 3 float32
    part: np.ndarray  # S x S float32 coverage where defects may go (all ones for a texture)
    background: np.ndarray  # S x S x 3 float32 what a missing piece reveals


# --------------------------------------------------------------------------- looks


def resolve_kind(category: str, kind: str) -> str:
    """``auto`` means texture for the MVTec texture categories, object for anything else."""
    if kind == "auto":
        return "texture" if category in TEXTURE_FAMILY_FOR else "object"
    return kind


def make_look(category: str, kind: str, seed: int) -> Look:
    """The look of category ``category`` under ``seed``: different names give different looks."""
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), 0])
    kind = resolve_kind(category, kind)
    if kind == "texture":
        style = draw_style(rng, TEXTURE_FAMILY_FOR.get(category))
        if category in MATERIAL_COLOURS:  # wood should look like wood, not a random palette
            options = MATERIAL_COLOURS[category]
            base = np.asarray(options[int(rng.integers(len(options)))]) * rng.uniform(0.95, 1.05, size=3)
            shades = tuple(tuple(float(c) for c in np.clip(base * k, 0, 1)) for k in (0.45, 1.0, 1.3))
            style = TextureStyle(style.family, shades, style.frequency, style.angle, style.warp, style.grain)  # type: ignore[arg-type]
        return Look("texture", style)
    background = draw_style(rng, str(rng.choice(["clouds", "weave", "speckle"])))
    dark = tuple(tuple(0.12 + 0.3 * c for c in col) for col in background.colours)
    return Look(
        "object",
        TextureStyle(background.family, dark, background.frequency, background.angle, background.warp, 0.08),  # type: ignore[arg-type]
        shape=str(rng.choice(SHAPES)),
        metal=METALS[str(rng.choice(sorted(METALS)))],
        light_angle=float(rng.uniform(0, 2 * np.pi)),
    )


# --------------------------------------------------------------------------- drawing helpers


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, np.float64) * (1 << SUBPIXEL_BITS)).astype(np.int32)


def _disc(size: int, centre: Tuple[float, float], radius: float) -> np.ndarray:
    """S x S float32 anti-aliased disc coverage."""
    canvas = np.zeros((size, size), np.uint8)
    cx, cy = _fixed(centre)
    cv2.circle(canvas, (int(cx), int(cy)), int(_fixed(radius)), 255, -1, cv2.LINE_AA, SUBPIXEL_BITS)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _polygon(size: int, points: np.ndarray) -> np.ndarray:
    """S x S float32 anti-aliased coverage of a filled polygon (N x 2 points, x then y)."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [_fixed(points)], 255, cv2.LINE_AA, SUBPIXEL_BITS)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _blob(rng: np.random.Generator, centre: np.ndarray, radius: float, roughness: float = 0.3) -> np.ndarray:
    """An irregular closed outline: a circle bent by a few random low harmonics (32 x 2 points)."""
    theta = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += roughness / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.4, None)
    return np.stack([centre[0] + r * np.cos(theta), centre[1] + r * np.sin(theta)], axis=1)


def _wander(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, wiggle: float,
            steps: int = 24) -> np.ndarray:
    """A path of ``steps`` segments whose heading drifts by up to ``wiggle`` radians a step."""
    turns = heading + np.cumsum(rng.uniform(-wiggle, wiggle, steps))
    step = length / steps
    offsets = np.cumsum(np.stack([np.cos(turns), np.sin(turns)], axis=1) * step, axis=0)
    return np.vstack([start, start + offsets])


def _stroke(size: int, paths: List[np.ndarray], thickness: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.polylines(canvas, [_fixed(p) for p in paths], False, 255, thickness, cv2.LINE_AA, SUBPIXEL_BITS)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _planes(*channels: np.ndarray) -> np.ndarray:
    """Stack S x S planes into S x S x C (numpy is slow on a trailing axis of length 3)."""
    return cv2.merge(list(channels))


def _tinted(field: np.ndarray, colour: Colour) -> np.ndarray:
    return _planes(*(field * np.float32(c) for c in colour))


# --------------------------------------------------------------------------- scenes


def _turned_shading(size: int, centre: Tuple[float, float], light: float, period: float) -> np.ndarray:
    """Lathe-turned metal: a bow-tie highlight across the centre and fine concentric tool marks."""
    y, x = np.ogrid[:size, :size]
    dx = (x - np.float32(centre[0])).astype(np.float32)
    dy = (y - np.float32(centre[1])).astype(np.float32)
    dist = np.sqrt(dx * dx + dy * dy)
    towards_light = (dx * np.float32(np.cos(light)) + dy * np.float32(np.sin(light))) / (dist + 1)
    bow_tie = towards_light * towards_light
    return np.float32(0.7) + np.float32(0.4) * bow_tie * bow_tie + np.float32(0.04) * np.sin(dist * np.float32(2 * np.pi / period))


def _brushed_shading(size: int, angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Brushed flat stock: fine streaks along ``angle_deg`` and a soft sheen across."""
    streaks = cv2.resize(rng.random((size, 4), dtype=np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), angle_deg, 1.0)
    streaks = cv2.warpAffine(streaks, rotation, (size, size), borderMode=cv2.BORDER_REFLECT)
    sheen = smooth_noise(size, 3, rng)
    return np.float32(0.75) + np.float32(0.1) * streaks + np.float32(0.25) * sheen


def _part(look: Look, size: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """(coverage, shading) of the part at a jittered pose, both S x S float32."""
    centre = (size / 2 + rng.uniform(-0.04, 0.04) * size, size / 2 + rng.uniform(-0.04, 0.04) * size)
    radius = 0.32 * size * rng.uniform(0.97, 1.03)
    spin = rng.uniform(0, 2 * np.pi)
    light = look.light_angle + rng.uniform(-0.1, 0.1)
    period = max(2.5, size / 60)
    c = np.asarray(centre)

    def ring_points(count: int, at: float, phase: float) -> np.ndarray:
        a = phase + np.arange(count) * (2 * np.pi / count)
        return c + at * np.stack([np.cos(a), np.sin(a)], axis=1)

    if look.shape == "washer":
        cover = _disc(size, centre, radius) - _disc(size, centre, 0.45 * radius)
        bevel = cover - (_disc(size, centre, 0.93 * radius) - _disc(size, centre, 0.52 * radius))
        shade = _turned_shading(size, centre, light, period) * (1 + np.float32(0.25) * bevel)
    elif look.shape == "nut":
        cover = _polygon(size, ring_points(6, radius, spin)) - _disc(size, centre, 0.42 * radius)
        face = _disc(size, centre, 0.88 * radius)
        thread = _disc(size, centre, 0.5 * radius)
        shade = _turned_shading(size, centre, light, period) * (0.75 + 0.25 * face) * (1 - 0.35 * thread)
    elif look.shape == "flange":
        cover = _disc(size, centre, radius) - _disc(size, centre, 0.2 * radius)
        for hole in ring_points(6, 0.72 * radius, spin):
            cover -= _disc(size, tuple(hole), 0.07 * radius)
        cover = np.clip(cover, 0.0, 1.0)
        boss = _disc(size, centre, 0.45 * radius)
        groove = _disc(size, centre, 0.6 * radius) - _disc(size, centre, 0.57 * radius)
        shade = _turned_shading(size, centre, light, period) * (1 + 0.15 * boss) * (1 - 0.4 * groove)
    else:  # bracket: an L of flat stock with two holes
        angle = spin * 180 / np.pi
        rot = np.array([[np.cos(spin), -np.sin(spin)], [np.sin(spin), np.cos(spin)]])
        outline = np.array([[-1, -1], [1, -1], [1, -0.45], [-0.45, -0.45], [-0.45, 1], [-1, 1]], np.float64)
        cover = _polygon(size, c + radius * outline @ rot.T)
        for hole in np.array([[0.62, -0.72], [-0.72, 0.62]]):
            cover -= _disc(size, tuple(c + radius * rot @ hole), 0.13 * radius)
        cover = np.clip(cover, 0.0, 1.0)
        shade = _brushed_shading(size, angle, rng)
    return cover, shade


def _scene(look: Look, size: int, rng: np.random.Generator) -> Scene:
    if look.kind == "texture":
        surface = render_texture(look.surface.jittered(rng), size, rng).astype(np.float32) * np.float32(1 / 255)
        backing = np.float32(0.08) + np.float32(0.12) * smooth_noise(size, size // 8, rng)
        return Scene(surface, np.ones((size, size), np.float32), _tinted(backing, (1.0, 0.95, 0.9)))
    background = render_texture(look.surface.jittered(rng), size, rng, field_size=size // 2)
    background = background.astype(np.float32) * np.float32(1 / 255)
    cover, shade = _part(look, size, rng)
    offset = np.float32([[1, 0, size / 50], [0, 1, size / 40]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(cover, offset, (size, size)), (0, 0), size / 60)
    shaded_bg = background * _planes(*(3 * [np.float32(1) - np.float32(0.5) * shadow]))
    cover3 = _planes(cover, cover, cover)
    albedo = shaded_bg * (1 - cover3) + _tinted(np.clip(shade, 0, 1.3), look.metal) * cover3
    return Scene(albedo, cover, shaded_bg)


# --------------------------------------------------------------------------- defects

Paint = Tuple[np.ndarray, np.ndarray]  # (alpha S x S, colour S x S x 3 or 3)
STAIN_CONTRAST = 0.2  # least RGB distance (values in [0, 1]) between a stain's colour and the part under it


def _defect_site(scene: Scene, rng: np.random.Generator, margin: float, edge: bool) -> np.ndarray:
    """A random (x, y) on the part (on its outline when ``edge``), away from the image border."""
    size = scene.part.shape[0]
    allowed = (scene.part > 0.25) & (scene.part < 0.75) if edge else scene.part > 0.99
    border = int(margin * size)
    allowed[:border] = allowed[-border:] = False
    allowed[:, :border] = allowed[:, -border:] = False
    ys, xs = np.nonzero(allowed)
    i = int(rng.integers(len(xs)))
    return np.array([xs[i], ys[i]], np.float64)


def _local_colour(scene: Scene, site: np.ndarray, radius: int) -> np.ndarray:
    x, y = int(site[0]), int(site[1])
    patch = scene.albedo[max(0, y - radius): y + radius + 1, max(0, x - radius): x + radius + 1]
    return patch.reshape(-1, 3).mean(axis=0)


def _scratch(scene: Scene, rng: np.random.Generator, scale: float) -> Paint:
    size = scene.part.shape[0]
    site = _defect_site(scene, rng, 0.15, edge=False)
    path = _wander(rng, site, rng.uniform(0, 2 * np.pi), scale * size * rng.uniform(0.1, 0.22), wiggle=0.06)
    alpha = _stroke(size, [path], thickness=max(1, round(scale * size / 256 * rng.uniform(1, 2.5))))
    alpha *= np.float32(0.55) + np.float32(0.4) * smooth_noise(size, 6, rng)  # catches the light unevenly
    base = _local_colour(scene, site, size // 20)
    colour = np.clip(base * 1.5 + 0.2, 0, 1) if rng.random() < 0.5 else base * 0.35
    return alpha, colour


def _crack(scene: Scene, rng: np.random.Generator, scale: float) -> Paint:
    size = scene.part.shape[0]
    site = _defect_site(scene, rng, 0.15, edge=False)
    heading = rng.uniform(0, 2 * np.pi)
    trunk = _wander(rng, site, heading, scale * size * rng.uniform(0.1, 0.2), wiggle=0.45, steps=20)
    branches = [trunk]
    for start in trunk[rng.choice(np.arange(4, 18), size=int(rng.integers(1, 4)), replace=False)]:
        side = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        branches.append(_wander(rng, start, side, scale * size * rng.uniform(0.03, 0.08), wiggle=0.5, steps=8))
    alpha = _stroke(size, branches, thickness=max(1, round(scale * size / 256 * rng.uniform(1, 2))))
    alpha *= np.float32(0.9)
    return alpha, _local_colour(scene, site, size // 20) * 0.12


def _hole(scene: Scene, rng: np.random.Generator, scale: float) -> Paint:
    """A dark pit whose raised rim is lit on one side and shadowed on the other."""
    size = scene.part.shape[0]
    site = _defect_site(scene, rng, 0.15, edge=False)
    radius = max(2.0, scale * size * rng.uniform(0.012, 0.03))
    rim = 1.4 * radius
    y, x = np.ogrid[:size, :size]
    dx, dy = (x - site[0]).astype(np.float32), (y - site[1]).astype(np.float32)
    dist = np.sqrt(dx * dx + dy * dy) / np.float32(radius)
    lit = dx * np.float32(np.cos(1.0)) + dy * np.float32(np.sin(1.0))
    lit /= np.sqrt(dx * dx + dy * dy) + 1
    base = _local_colour(scene, site, int(2 * rim))
    pit = np.float32(0.05) + np.float32(0.12) * np.minimum(dist, 1) ** 2
    brim = np.float32(1.0) - np.float32(0.45) * lit
    tone = np.where(dist < 1, pit, brim)
    alpha = _disc(size, tuple(site), rim) * np.where(dist < 1, np.float32(1.0), np.float32(0.8))
    return alpha, np.clip(_tinted(tone, tuple(base)), 0, 1)


def _stain(scene: Scene, rng: np.random.Generator, scale: float) -> Paint:
    """Oil, rust or dirt: a soft-edged, mottled, translucent blob."""
    size = scene.part.shape[0]
    site = _defect_site(scene, rng, 0.15, edge=False)
    radius = max(3.0, scale * size * rng.uniform(0.03, 0.06))
    blob = _polygon(size, _blob(rng, site, radius, roughness=0.5))
    blob = cv2.GaussianBlur(blob, (0, 0), 0.3 * radius)
    alpha = blob * np.float32(rng.uniform(0.4, 0.7)) * (np.float32(0.7) + np.float32(0.3) * smooth_noise(size, 16, rng))
    base = _local_colour(scene, site, int(radius))
    colours = {"oil": base * 0.45, "rust": np.array([0.55, 0.30, 0.12]), "dirt": np.array([0.35, 0.30, 0.24])}
    # A stain a person cannot see is no inspection task (rust on a copper part): only colours
    # that stand out from the part here, else the one that stands out most.
    visible = sorted(k for k, c in colours.items() if np.linalg.norm(c - base) >= STAIN_CONTRAST)
    pick = str(rng.choice(visible)) if visible else max(colours, key=lambda k: np.linalg.norm(colours[k] - base))
    return alpha, colours[pick]


def _missing(scene: Scene, rng: np.random.Generator, scale: float) -> Paint:
    """A chipped-off piece: on a part, a bite out of its outline; on a surface, a torn-out patch."""
    size = scene.part.shape[0]
    is_part = bool((scene.part < 0.5).any())
    site = _defect_site(scene, rng, 0.1, edge=is_part)
    radius = max(3.0, scale * size * rng.uniform(0.035, 0.06))
    alpha = _polygon(size, _blob(rng, site, radius, roughness=0.6))
    return alpha, scene.background


DEFECTS: Dict[str, Callable[[Scene, np.random.Generator, float], Paint]] = {
    "scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain, "missing": _missing,
}


def _paint(scene: Scene, paint: Paint) -> Tuple[np.ndarray, np.ndarray]:
    """(defective albedo, mask): the paint, confined to the part, blended where it is opaque enough."""
    alpha, colour = paint
    alpha = alpha * scene.part
    mask = alpha >= ALPHA_MIN
    a = alpha[mask][:, None]
    albedo = scene.albedo.copy()
    painted = colour[mask] if np.ndim(colour) == 3 else np.asarray(colour, np.float32)
    albedo[mask] = scene.albedo[mask] * (1 - a) + painted * a
    return albedo, mask


# --------------------------------------------------------------------------- samples


def render_sample(look: Look, size: int, rng: np.random.Generator, defect: Optional[str] = None,
                  defect_scale: float = 1.0) -> Sample:
    """One image of ``look``; with ``defect`` (one of DEFECT_TYPES) also its mask and defect-free twin.

    ``defect_scale`` multiplies the defect's size (lengths, radii, stroke widths) relative to the image.
    """
    scene = _scene(look, size, rng)
    albedo, mask = scene.albedo, None
    if defect is not None:
        albedo, mask = _paint(scene, DEFECTS[defect](scene, rng, defect_scale))
    # Lighting and sensor noise come last and are the same for both renderings, so the two
    # differ only where the defect was painted.
    y, x = np.ogrid[:size, :size]
    gx, gy = rng.uniform(-0.12, 0.12, size=2)
    light = np.float32(rng.uniform(0.85, 1.15)) * (
        1 + np.float32(gx) * (x.astype(np.float32) / size - 0.5) * 2 + np.float32(gy) * (y.astype(np.float32) / size - 0.5) * 2
    )
    light3 = _planes(light, light, light)
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * np.float32(rng.uniform(0.006, 0.014))

    def develop(a: np.ndarray) -> np.ndarray:
        return cv2.convertScaleAbs(np.clip(a * light3 + noise, 0, 1), alpha=255.0)

    good = develop(scene.albedo)
    image = good if defect is None else develop(albedo)
    return Sample(image, good, mask)


def _names(count: int) -> List[str]:
    width = max(3, len(str(count - 1)))
    return [f"{i:0{width}d}" for i in range(count)]


def sample_rng(seed: int, category: str, folder: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` in ``folder`` ("train/good", "test/scratch", ...).

    Each image has its own stream, so any one file can be regenerated on its own.
    """
    return np.random.default_rng([seed, zlib.crc32(category.encode()), zlib.crc32(folder.encode()), index])


def write_dataset(out: str | Path, category: str, train: int = 60, test: int = 40, size: int = 256,
                  seed: int = 0, kind: str = "auto", defect_scale: float = 1.0) -> Path:
    """Write OUT/CATEGORY atomically (replacing an existing one only on success); return its path.

    Only a folder this tool wrote (it holds MARKER) or an empty one is replaced: OUT/CATEGORY
    may be a real dataset of the same name.
    """
    check_args(category, train, test, size, kind, defect_scale)
    look = make_look(category, kind, seed)
    n_defective = test // 2
    defects = [DEFECT_TYPES[i % len(DEFECT_TYPES)] for i in range(n_defective)]
    target = Path(out) / category
    try:
        check_replaceable(target, MARKER, "destseg-synth dataset", "OUT/CATEGORY")
    except NotOursError as exc:
        raise SynthError(str(exc)) from exc
    with atomic_dir(target) as tmp:
        write_json(tmp / MARKER, {"tool": "destseg-synth", "category": category, "train": train, "test": test,
                                  "size": size, "seed": seed, "kind": kind, "defect_scale": defect_scale})
        for folder, count in (("train/good", train), ("test/good", test - n_defective)):
            for i, name in enumerate(_names(count)):
                sample = render_sample(look, size, sample_rng(seed, category, folder, i))
                write_image(tmp / folder / f"{name}.png", sample.image)
        for defect in DEFECT_TYPES:
            folder = f"test/{defect}"
            for i, name in enumerate(_names(defects.count(defect))):
                sample = render_sample(look, size, sample_rng(seed, category, folder, i), defect, defect_scale)
                write_image(tmp / folder / f"{name}.png", sample.image)
                write_image(tmp / "ground_truth" / defect / f"{name}_mask.png", sample.mask.astype(np.uint8) * 255)
    return target


def check_args(category: str, train: int, test: int, size: int, kind: str, defect_scale: float = 1.0) -> None:
    """Raise SynthError, saying what to pass instead, for arguments that cannot make a dataset."""
    if not category or category in (".", "..") or "/" in category or "\\" in category:
        raise SynthError(f"--category must be a plain folder name, got {category!r}")
    if size < MIN_SIZE:
        raise SynthError(f"--size must be at least {MIN_SIZE}, got {size}")
    if train < 1 or test < 1:
        raise SynthError(f"--train and --test must be at least 1, got {train} and {test}")
    if kind not in ("auto", "texture", "object"):
        raise SynthError(f"--kind must be auto, texture or object, got {kind!r}")
    if not 0.25 <= defect_scale <= 4.0:
        raise SynthError(f"--defect-scale must be between 0.25 and 4, got {defect_scale}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="destseg-synth",
        description="Write a synthetic MVTec-AD-layout dataset (good parts or surfaces, small realistic defects) to OUT/NAME.",
    )
    p.add_argument("out", help="dataset root; the category folder OUT/NAME is (re)written")
    p.add_argument("--category", required=True, help="category folder name; MVTec texture names give textures")
    p.add_argument("--train", type=int, default=60, help="good training images")
    p.add_argument("--test", type=int, default=40, help="test images, about half of them defective")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (at least 32)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument("--kind", default="auto", choices=["auto", "texture", "object"],
                   help="texture surface or object on a background; auto: texture for carpet, grid, leather, tile, wood")
    p.add_argument("--defect-scale", type=float, default=1.0,
                   help="defect size relative to the image (default 1: MVTec-like small defects; 2 keeps them "
                        "as visible at 128 px as at 256)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = write_dataset(args.out, args.category, args.train, args.test, args.size, args.seed, args.kind,
                             args.defect_scale)
    except SynthError as exc:
        print(f"destseg-synth: {exc}", file=sys.stderr)
        return 2
    n_defective = args.test // 2
    print(f"wrote {path}: {args.train} train, {args.test} test ({n_defective} defective), {args.size}x{args.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
