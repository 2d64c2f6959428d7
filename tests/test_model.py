"""The networks match the spec's shapes and sizes, and the teachers load real weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from destseg.train.backbones import TeacherWeightsError, efficientnet_lite0_classifier, load_teacher_weights
from destseg.train.checkpoint import RunError, build_model
from destseg.train.model import DeSTSeg, top_k_score


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_resnet18_model_matches_the_paper_sizes():
    model = DeSTSeg("resnet18").eval()
    assert _millions(model.teacher) == pytest.approx(2.8, abs=0.05)
    assert _millions(model.student) == pytest.approx(24.7, abs=0.05)
    assert _millions(model.segmentation) == pytest.approx(7.7, abs=0.05)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        t = model.teacher(x)
        s = model.student(x)
        out = model.predict(x)
    assert [tuple(f.shape[1:]) for f in t] == [(64, 64, 64), (128, 32, 32), (256, 16, 16)]
    assert [f.shape for f in s] == [f.shape for f in t]
    assert model.segmentation_input(t, s).shape == (1, 448, 64, 64)
    assert out["anomaly_map"].shape == (1, 1, 256, 256)
    assert out["dest_map"].shape == (1, 1, 256, 256)
    assert 0.0 <= out["anomaly_map"].min() and out["anomaly_map"].max() <= 1.0


def test_lite0_student_mirrors_the_teacher_levels():
    model = DeSTSeg("efficientnet_lite0").eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        t, s = model.teacher(x), model.student(x)
    assert [tuple(f.shape[1:]) for f in t] == [(24, 32, 32), (40, 16, 16), (112, 8, 8)]
    assert [f.shape for f in s] == [f.shape for f in t]


def test_score_is_the_mean_of_the_top_100_pixels():
    amap = torch.zeros(2, 1, 32, 32)
    amap[0].view(-1)[:100] = 1.0
    amap[0].view(-1)[100:200] = 0.5
    amap[1].view(-1)[:50] = 1.0
    assert top_k_score(amap).tolist() == pytest.approx([1.0, 0.5])


def test_teacher_stays_frozen_and_in_eval_mode():
    model = DeSTSeg("resnet18").train()
    assert not model.teacher.training
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_packaged_efficientnet_lite0_weights_classify_a_cat_confidently():
    """The TensorFlow-ported weights need TensorFlow's padding and BN eps: with timm's plain
    efficientnet_lite0 the cat's top-1 probability is 0.58, with tf_efficientnet_lite0 0.78."""
    skimage = pytest.importorskip("skimage")
    import cv2

    img = cv2.resize(skimage.data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = torch.from_numpy(((img - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        prob = efficientnet_lite0_classifier()(x).softmax(dim=1)[0]
    assert 281 <= int(prob.argmax()) <= 285  # ImageNet's cat classes
    assert float(prob.max()) > 0.7


def test_segmentation_network_starts_with_small_logits():
    """Kaiming init on the ASPP and head (a deviation from the authors) starts with logit std ~13."""
    from destseg.train.model import SegmentationNetwork

    torch.manual_seed(0)
    net = SegmentationNetwork(448).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 448, 64, 64) / 448 ** 0.5)
    assert float(logits.std()) < 1.0


def test_only_the_segmentation_blocks_get_the_kaiming_init():
    from destseg.train.model import SegmentationNetwork

    torch.manual_seed(0)
    net = SegmentationNetwork(448)
    logit = net.head[2]
    bound = 1.0 / logit.in_channels ** 0.5  # PyTorch's default: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(fan_in), ...)
    assert float(logit.weight.detach().abs().max()) <= bound and float(logit.bias.detach().abs().max()) <= bound
    fan_out = net.res[0].conv1.out_channels * 9
    assert float(net.res[0].conv1.weight.detach().std()) == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)


def test_student_encoder_zero_inits_the_last_bn_of_every_residual_block():
    from destseg.train.model import StudentEncoder

    encoder = StudentEncoder()
    blocks = [b for layer in encoder.layers for b in layer]
    assert len(blocks) == 8
    assert all(float(b.bn2.weight.detach().abs().max()) == 0.0 for b in blocks)
    assert all(float(b.bn1.weight.detach().min()) == 1.0 for b in blocks)


def test_lite0_teacher_is_the_tensorflow_variant():
    model = DeSTSeg("efficientnet_lite0")
    bns = [m for m in model.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == pytest.approx(1e-3) for m in bns)


def test_top_k_is_a_model_option():
    model = DeSTSeg("efficientnet_lite0", seg_width=16, top_k=25).eval()
    assert model.top_k == 25
    with pytest.raises(ValueError, match="top_k"):
        DeSTSeg("resnet18", top_k=0)


def test_lite0_teacher_gets_the_packaged_weights():
    model = DeSTSeg("efficientnet_lite0")
    before = model.teacher.state_dict()["body.conv_stem.weight"].clone()
    assert load_teacher_weights(model.teacher, "efficientnet_lite0").startswith("imagenet")
    assert not torch.equal(before, model.teacher.state_dict()["body.conv_stem.weight"])


def test_offline_resnet18_weights_error_names_both_ways_out(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torchvision cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub as hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(hub, "download_url_to_file", offline)
    with pytest.raises(TeacherWeightsError) as err:
        load_teacher_weights(DeSTSeg("resnet18").teacher, "resnet18")
    message = str(err.value)
    assert "--teacher-weights" in message and "resnet18-f37072fd.pth" in message and str(tmp_path) in message


def test_teacher_weights_file_is_loaded(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = DeSTSeg("resnet18")
    assert load_teacher_weights(model.teacher, "resnet18", weights_file=str(tmp_path / "r18.pth")).startswith("file:")
    assert torch.equal(model.teacher.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_teacher_weights_of_the_wrong_backbone_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"conv1.weight": torch.zeros(8, 3, 7, 7)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(TeacherWeightsError, match="lacks"):
        load_teacher_weights(DeSTSeg("resnet18").teacher, "resnet18", weights_file=str(tmp_path / "bad.safetensors"))


def test_light_head_makes_aspp_and_head_depthwise_separable_and_smaller():
    paper = DeSTSeg("efficientnet_lite0", seg_width=64, top_k=25).eval()
    light = DeSTSeg("efficientnet_lite0", seg_width=64, top_k=25, seg_head="light").eval()
    depthwise = [m for m in light.segmentation.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 5  # three ASPP branches, two head convs
    assert [m.dilation[0] for m in depthwise[:3]] == [6, 12, 18]
    assert not any(m.groups > 1 for m in paper.segmentation.modules() if isinstance(m, torch.nn.Conv2d))
    assert _millions(light.segmentation) < 0.6 * _millions(paper.segmentation)
    assert light.architecture()["seg_head"] == "light" and paper.architecture()["seg_head"] == "paper"
    with torch.no_grad():
        out = light(torch.randn(1, 3, 64, 64))
    assert out[0].shape == (1, 1, 64, 64)


def test_unknown_segmentation_head_is_refused_by_the_model_and_by_build_model():
    with pytest.raises(ValueError, match="segmentation head 'tiny'"):
        DeSTSeg("resnet18", seg_head="tiny")
    config = {**DeSTSeg("resnet18").architecture(), "seg_head": "tiny"}
    with pytest.raises(RunError, match="segmentation head 'tiny'.*retrain"):
        build_model(config)
    legacy = {k: v for k, v in config.items() if k != "seg_head"}  # runs from before the option: the paper's
    assert build_model(legacy).seg_head == "paper"
