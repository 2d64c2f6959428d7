"""Anomaly synthesis for training: Perlin masks, the blend, rotations, DTD and procedural textures."""
from __future__ import annotations

import numpy as np
import pytest

from destseg.images import read_rgb, write_image
from destseg.train.anomaly import FILL_RGB, AnomalySynthesizer, TextureSourceError, dtd_images
from destseg.train.perlin import perlin_mask, perlin_noise
from destseg.train.textures import FAMILIES, draw_style, random_texture, render_texture

SIZE = 64


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _asymmetric_image() -> np.ndarray:
    """Red rises left to right, green top to bottom: every rotation of it is distinguishable."""
    ramp = np.linspace(0, 255, SIZE).astype(np.uint8)
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = ramp[None, :]
    img[..., 1] = ramp[:, None]
    img[..., 2] = 30
    return img


def _flat(rgb) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), rgb, np.uint8)


def _fake_dtd(root, colours) -> None:
    """DIR/images/<class>/*.jpg with one flat colour per image, at a size other than SIZE."""
    for i, colour in enumerate(colours):
        write_image(root / "images" / f"class{i % 2}" / f"img{i}.jpg", np.full((40, 50, 3), colour, np.uint8))


def test_perlin_noise_vanishes_on_the_lattice_and_varies_between_it():
    noise = perlin_noise((SIZE, SIZE), (4, 8), _rng(0))
    assert noise.shape == (SIZE, SIZE) and noise.dtype == np.float32
    assert np.abs(noise[::16, ::8]).max() < 1e-6  # gradient noise is zero at lattice points
    assert noise.std() > 0.1 and np.abs(noise).max() <= 1.0
    odd = perlin_noise((50, 70), (3, 5), _rng(0))  # sizes that are no multiple of the cell count
    assert odd.shape == (50, 70) and np.isfinite(odd).all()


def test_mask_is_binary_and_its_area_varies_across_seeds():
    areas = []
    for seed in range(60):
        mask = perlin_mask(SIZE, _rng(seed))
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        areas.append(mask.mean())
    areas = np.array(areas)
    assert (areas == 0).mean() < 0.3  # some empty masks are allowed, most are not
    assert len(np.unique(areas)) > 30
    assert areas.max() > 4 * np.median(areas[areas > 0])  # large blobs and small speckles both occur


def test_outputs_have_the_documented_shapes_types_and_ranges():
    clean, augmented, mask = AnomalySynthesizer(SIZE)(_asymmetric_image(), _rng(1))
    assert clean.shape == augmented.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE)
    assert clean.dtype == augmented.dtype == mask.dtype == np.float32
    for a in (clean, augmented):
        assert 0.0 <= a.min() and a.max() <= 1.0


def test_blend_follows_the_spec_formula_on_flat_image_and_texture(tmp_path):
    _fake_dtd(tmp_path, [(30, 180, 60)])
    texture = read_rgb(next((tmp_path / "images").rglob("*.jpg")))[0, 0].astype(np.float64) / 255
    image = np.array([200, 40, 90]) / 255
    synth = AnomalySynthesizer(SIZE, dtd_dir=str(tmp_path))
    betas = []
    for seed in range(12):
        clean, augmented, mask = synth(_flat((200, 40, 90)), _rng(seed))
        inside, outside = mask == 1, mask == 0
        np.testing.assert_allclose(clean, np.broadcast_to(image, clean.shape), atol=1e-6)
        np.testing.assert_array_equal(augmented[outside], clean[outside])
        if not inside.any():
            continue
        value = augmented[inside]
        np.testing.assert_allclose(value, np.broadcast_to(value[0], value.shape), atol=1e-6)  # one blend of two flat colours
        beta = (value[0] - texture) / (image - texture)  # I_a = (1-beta)*D + beta*I inside M
        np.testing.assert_allclose(beta, beta[0], atol=1e-4)
        assert 0.0 <= beta[0] < 0.8
        betas.append(beta[0])
    assert len(betas) >= 8 and np.ptp(betas) > 0.2


def test_same_generator_state_gives_identical_outputs(tmp_path):
    _fake_dtd(tmp_path, [(10, 20, 30), (200, 100, 50)])
    image = _asymmetric_image()
    for synth in (AnomalySynthesizer(SIZE, "bottle"), AnomalySynthesizer(SIZE, "bottle", str(tmp_path))):
        first = synth(image, np.random.default_rng([7, 1, 3]))
        again = synth(image, np.random.default_rng([7, 1, 3]))
        other = synth(image, np.random.default_rng([7, 1, 4]))
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_categories_without_rotation_keep_the_image():
    image = _asymmetric_image()
    for category in ("capsule", "transistor", "widget", None):
        synth = AnomalySynthesizer(SIZE, category)
        for seed in range(5):
            clean, _, _ = synth(image, _rng(seed))
            np.testing.assert_allclose(clean, image / 255, atol=1e-6)


def _quarter_turns(clean: np.ndarray, image: np.ndarray) -> int:
    """Which np.rot90 of ``image`` the centre of ``clean`` matches best."""
    centre = slice(SIZE // 4, 3 * SIZE // 4)
    errors = [np.abs(clean[centre, centre] * 255 - np.rot90(image, k)[centre, centre]).mean() for k in range(4)]
    return int(np.argmin(errors))


def test_rotating_categories_turn_the_clean_target_and_fill_with_grey():
    image = _asymmetric_image()
    fill = np.array(FILL_RGB, np.float32) / 255
    turns, filled = set(), 0
    for seed in range(12):
        clean, augmented, mask = AnomalySynthesizer(SIZE, "bottle")(image, _rng(seed))
        turns.add(_quarter_turns(clean, image))
        filled += np.allclose(clean[0, 0], fill)
        np.testing.assert_array_equal(augmented[mask == 0], clean[mask == 0])  # the target is the rotated image
    assert len(turns) >= 3 and filled >= 6

    tilted = [AnomalySynthesizer(SIZE, "wood")(image, _rng(seed))[0] for seed in range(6)]
    assert all(_quarter_turns(c, image) == 0 for c in tilted)  # wood: +-5 degrees only
    assert not any(np.allclose(c, image / 255, atol=1e-3) for c in tilted)


def test_dtd_images_are_drawn_from_every_class_and_resized(tmp_path):
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10)]
    _fake_dtd(tmp_path, colours)
    (tmp_path / "images" / "class0" / "notes.txt").write_text("not an image")
    assert len(dtd_images(tmp_path)) == 4
    synth = AnomalySynthesizer(SIZE, dtd_dir=str(tmp_path))
    seen = set()
    for seed in range(40):
        texture = synth.texture(_rng(seed))
        assert texture.shape == (SIZE, SIZE, 3) and texture.dtype == np.uint8
        distances = [np.abs(texture.astype(int) - c).max() for c in colours]
        assert min(distances) <= 8  # JPEG keeps a flat colour within a few levels
        seen.add(int(np.argmin(distances)))
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("layout", ["missing", "no_images_folder", "empty_class"])
def test_empty_or_missing_dtd_folder_is_one_clear_error(tmp_path, layout):
    root = tmp_path / "dtd"
    if layout == "no_images_folder":
        root.mkdir()
    elif layout == "empty_class":
        (root / "images" / "banded").mkdir(parents=True)
    with pytest.raises(TextureSourceError) as err:
        AnomalySynthesizer(SIZE, dtd_dir=str(root))
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert str(root / "images") in message and "--dtd" in message


def test_procedural_textures_stand_in_for_dtd():
    textures = [random_texture(SIZE, _rng(seed)) for seed in range(12)]
    for t in textures:
        assert t.shape == (SIZE, SIZE, 3) and t.dtype == np.uint8
    means = np.array([t.reshape(-1, 3).mean(axis=0) for t in textures])
    assert np.ptp(means, axis=0).min() > 40  # random colours, not one palette
    np.testing.assert_array_equal(random_texture(SIZE, _rng(3)), textures[3])
    for family in FAMILIES:  # every family makes a pattern, not a flat fill
        texture = render_texture(draw_style(_rng(0), family), SIZE, _rng(1))
        assert texture.astype(np.float32).std(axis=(0, 1)).max() > 3, family
    with pytest.raises(ValueError, match="unknown texture family"):
        draw_style(_rng(0), "plaid")
