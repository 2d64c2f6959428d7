"""destseg-synth: an MVTec-layout dataset with exact masks, deterministic, atomic and hard enough."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from destseg import datasets  # not importing test_samples by name: pytest would collect it
from destseg.images import read_mask, read_rgb
from destseg.train import synthetic_dataset
from destseg.train.synthetic_dataset import (
    DEFECT_TYPES, main, make_look, render_sample, resolve_kind, sample_rng, write_dataset,
)

SIZE = 64


@pytest.fixture(scope="module")
def texture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    assert main([str(root), "--category", "tile", "--train", "4", "--test", "12", "--size", str(SIZE), "--seed", "5"]) == 0
    return root


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("root_fixture, category", [("synthetic_root", "widget"), ("texture_root", "tile")])
def test_layout_reads_as_mvtec_with_masks_only_for_defects(request, root_fixture, category):
    root = request.getfixturevalue(root_fixture)
    assert len(datasets.good_images(root, category)) in (4, 12)
    samples = datasets.test_samples(root, category)
    assert len(samples) == 12
    defective = [s for s in samples if s.is_anomalous]
    assert len(defective) == 6 and {s.defect for s in defective} == set(DEFECT_TYPES)
    assert all(s.mask is None for s in samples if not s.is_anomalous)
    assert not (root / category / "ground_truth" / "good").exists()
    for s in defective:
        assert read_rgb(s.image).shape == (SIZE, SIZE, 3)
        mask = read_mask(s.mask)
        assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) == {0, 255}


def test_masks_are_exactly_the_changed_pixels(texture_root, synthetic_root):
    for root, category, seed in ((texture_root, "tile", 5), (synthetic_root, "widget", 0)):
        look = make_look(category, "auto", seed)
        for s in datasets.test_samples(root, category):
            if not s.is_anomalous:
                continue
            index = int(s.image.stem)
            sample = render_sample(look, SIZE, sample_rng(seed, category, f"test/{s.defect}", index), s.defect)
            image, mask = read_rgb(s.image), read_mask(s.mask) > 0
            np.testing.assert_array_equal(image, sample.image)  # the file is this rendering
            np.testing.assert_array_equal(mask, sample.mask)
            assert mask.any()
            np.testing.assert_array_equal(image[~mask], sample.good[~mask])  # nothing changed outside the mask
            assert (image != sample.good).any(axis=2)[mask].mean() > 0.8  # and the defect fills it


def test_every_defect_type_paints_a_small_local_region():
    for category in ("widget", "wood"):
        look = make_look(category, "auto", 0)
        for defect in DEFECT_TYPES:
            for seed in range(3):
                sample = render_sample(look, SIZE, np.random.default_rng(seed), defect)
                assert 0 < sample.mask.mean() < 0.05, (category, defect)
    good = render_sample(make_look("widget", "auto", 0), SIZE, np.random.default_rng(0))
    assert good.mask is None and good.image is good.good


def test_defect_scale_grows_every_defect_type():
    look = make_look("widget", "auto", 0)
    for defect in DEFECT_TYPES:
        areas = {scale: np.mean([render_sample(look, 128, np.random.default_rng(seed), defect, scale).mask.mean()
                                 for seed in range(3)]) for scale in (1.0, 2.0)}
        assert areas[2.0] > 1.5 * areas[1.0], defect


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    args = ["--category", "gizmo", "--train", "3", "--test", "4", "--size", "32"]
    for out, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main([str(tmp_path / out), *args, "--seed", seed]) == 0
    a, b, c = (_files(tmp_path / out / "gizmo") for out in "abc")
    assert len(a) == 3 + 4 + 2 + 1 and a == b  # images, masks, the marker
    assert a.keys() == c.keys() and a != c


def test_auto_kind_follows_the_mvtec_texture_names():
    assert [resolve_kind(c, "auto") for c in ("carpet", "grid", "leather", "tile", "wood")] == ["texture"] * 5
    assert resolve_kind("metal_nut", "auto") == "object" and resolve_kind("wood", "object") == "object"
    assert make_look("widget", "texture", 0).kind == "texture"


@pytest.mark.parametrize("category, kind", [("widget", "object"), ("leather", "texture")])
def test_no_global_statistic_separates_good_from_defective(tmp_path, category, kind):
    root = write_dataset(tmp_path, category, train=20, test=120, size=SIZE, seed=0, kind=kind).parent
    samples = datasets.test_samples(root, category)
    images = np.stack([read_rgb(s.image) for s in samples]).astype(np.float32)
    labels = np.array([s.is_anomalous for s in samples])
    for statistic in (images.mean(axis=(1, 2, 3)), images.std(axis=(1, 2, 3))):
        assert 0.3 <= roc_auc_score(labels, statistic) <= 0.7
    # Per-pixel distance to the mean good image: a real detector must beat it, so it must not be perfect.
    mean_good = np.mean([read_rgb(p) for p in datasets.good_images(root, category)], axis=0)
    distance = np.abs(images - mean_good).mean(axis=3)
    masks = np.stack([read_mask(s.mask) > 0 if s.mask else np.zeros((SIZE, SIZE), bool) for s in samples])
    assert 0.5 < roc_auc_score(masks.ravel(), distance.ravel()) < 0.9


def test_failed_run_leaves_the_existing_category_untouched(tmp_path, monkeypatch):
    old = write_dataset(tmp_path, "gizmo", train=2, test=2, size=32)
    before = _files(old)
    real_write, calls = synthetic_dataset.write_image, []

    def fail_on_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        real_write(*args, **kwargs)

    monkeypatch.setattr(synthetic_dataset, "write_image", fail_on_fifth)
    with pytest.raises(OSError):
        write_dataset(tmp_path, "gizmo", train=4, test=4, size=32)
    assert [p.name for p in tmp_path.iterdir()] == ["gizmo"]  # no temporary folder left behind
    assert _files(old) == before

    monkeypatch.undo()
    write_dataset(tmp_path, "gizmo", train=4, test=4, size=32)
    assert len(list((old / "train" / "good").iterdir())) == 4


@pytest.mark.parametrize("bad", [
    ["--size", "31"], ["--train", "0"], ["--test", "0"], ["--category", "a/b"], ["--defect-scale", "0"],
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, bad):
    argv = [str(tmp_path / "out"), "--category", "gizmo", *bad]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("destseg-synth: ") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_stains_stand_out_from_the_part_they_are_on():
    """Rust on a copper part is invisible to a person, so it is no test of a detector: the stain's
    colour is one that differs from the part under it (seeded: same looks, same numbers)."""
    changes = []
    for category in ("widget", "gadget", "gizmo", "wood", "part"):
        for seed in range(6):
            sample = render_sample(make_look(category, "auto", seed), 128, np.random.default_rng(seed), "stain", 2.0)
            diff = np.abs(sample.image[sample.mask].astype(np.float32) - sample.good[sample.mask]) / 255.0
            changes.append(np.percentile(np.linalg.norm(diff, axis=1), 90))
    assert min(changes) >= 0.11  # 0.088 when rust could land on copper
