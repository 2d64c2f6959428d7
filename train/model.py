"""DeSTSeg as modules: teacher, denoising student, segmentation network (spec: DESTSEG_SPEC.md).

Only networks live here; training loops are in trainer.py, losses in losses.py and
weight loading in backbones.py, so the network reads on its own. Shapes below are for the
paper's 256 x 256 input and the ResNet18 teacher (levels at strides 4, 8, 16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock

TOP_K = 100  # the paper's image score: mean of the 100 highest pixels of the 256 x 256 map
SEG_WIDTH = 256  # the paper's segmentation-network width
# Segmentation-head variants: the paper's dense 3x3 ASPP and head convs, or "light" for edge devices,
# where each of those convs is depthwise-separable (a depthwise 3x3 at the same dilation, then a 1x1).
SEG_HEADS = ("paper", "light")
SEG_HEAD = "paper"


@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of the model needs to know about a teacher backbone."""

    name: str
    channels: Tuple[int, int, int]  # levels at strides 4, 8, 16
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    arch: str  # the architecture the weights belong to (recorded in each run's config.json)


BACKBONES: Dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", (64, 128, 256), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                             "torchvision.resnet18"),
    # The EfficientNet-Lite checkpoints were trained in TensorFlow on inputs scaled to [-1, 1]:
    # timm's tf_ variant has TensorFlow's 'same' padding and BN eps 1e-3, which those weights need.
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", (24, 40, 112), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                                       "timm.tf_efficientnet_lite0"),
}


class ResNet18Teacher(nn.Module):
    """ImageNet ResNet18 up to layer3: 64ch@S/4, 128ch@S/8, 256ch@S/16. Frozen, always in eval."""

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


LITE0_TIMM = "tf_efficientnet_lite0"  # TensorFlow 'same' padding and BN eps 1e-3, as the packaged weights were trained


class EfficientNetLite0Teacher(nn.Module):
    """timm's tf_efficientnet_lite0 feature levels at strides 4, 8, 16 (24, 40, 112 channels).

    The ImageNet weights are TensorFlow ports: with timm's plain ``efficientnet_lite0``
    (symmetric padding, BN eps 1e-5) they classify the cat test photo at 0.58 instead of 0.78.
    """

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.body = timm.create_model(LITE0_TIMM, pretrained=False, features_only=True, out_indices=(1, 2, 3))
        self.body.blocks = self.body.blocks[:5]  # stages past stride 16 feed no level: don't run them

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return list(self.body(x))


TEACHERS = {"resnet18": ResNet18Teacher, "efficientnet_lite0": EfficientNetLite0Teacher}


class StudentEncoder(nn.Module):
    """ResNet18 trained from scratch, layers 1-4; only the deepest output (512ch@S/32) is used.

    Initialised as the authors' timm resnet18: Kaiming fan_out and the last BN of every
    residual block at zero, so each block starts as the identity.
    """

    def __init__(self) -> None:
        super().__init__()
        net = resnet18(weights=None, zero_init_residual=True)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


def _stage(in_ch: int, out_ch: int, blocks: int = 2) -> nn.Sequential:
    """Two BasicBlocks; a 1x1 conv + BN shortcut where the channel count changes."""
    shortcut = None
    if in_ch != out_ch:
        shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, downsample=shortcut)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, relu) convolutions, BN weight 1 and bias 0 (spec: Initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class StudentDecoder(nn.Module):
    """Four stages (512@S/32, then x2 upsampling into the teacher's three level shapes); no skips."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.stage0 = _stage(512, 512)
        self.stage1 = _stage(512, c3)
        self.stage2 = _stage(c3, c2)
        self.stage3 = _stage(c2, c1)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stage0(x)
        f3 = self.stage1(_up2(x))
        f2 = self.stage2(_up2(f3))
        f1 = self.stage3(_up2(f2))
        return [f1, f2, f3]


class DenoisingStudent(nn.Module):
    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.encoder = StudentEncoder()
        self.decoder = StudentDecoder(channels)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.decoder(self.encoder(x))


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def _separable_bn_relu(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (at ``dilation``) then pointwise 1x1, one BN-ReLU after each (MobileNet/DeepLabv3+)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, padding=dilation, dilation=dilation, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        nn.ReLU(inplace=True),
        _conv_bn_relu(in_ch, out_ch, kernel=1),
    )


def _conv3x3(head: str, in_ch: int, out_ch: int, dilation: int = 1) -> nn.Sequential:
    """The 3x3 conv-BN-ReLU of ASPP and the head, dense (paper) or depthwise-separable (light)."""
    if head == "light":
        return _separable_bn_relu(in_ch, out_ch, dilation)
    return _conv_bn_relu(in_ch, out_ch, dilation=dilation)


class ASPP(nn.Module):
    """Global-pool branch plus dilated 3x3 branches at rates 6, 12, 18 (no plain 1x1 branch)."""

    def __init__(self, channels: int = 256, rates: Sequence[int] = (6, 12, 18), head: str = SEG_HEAD) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(channels, channels, kernel=1))
        self.branches = nn.ModuleList(_conv3x3(head, channels, channels, dilation=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        return torch.cat([pooled] + [b(x) for b in self.branches], dim=1)


class SegmentationNetwork(nn.Module):
    """Two BasicBlocks (in->256), ASPP, two 3x3 conv-BN-ReLU, 1x1 conv to one logit channel.

    Only the two BasicBlocks get the Kaiming init; ASPP and the head keep PyTorch's default,
    as in the authors' code. Kaiming there starts the logits with a std of about 13 (nearly
    every pixel at p > 0.99), and the head, at lr 0.01, barely moves away from it.

    ``head="light"`` makes the ASPP branches and the head's two 3x3 convs depthwise-separable
    (the BasicBlocks stay as they are: they fuse the 176-448 input channels); see SEG_HEADS.
    """

    def __init__(self, in_channels: int, width: int = 256, head: str = SEG_HEAD) -> None:
        super().__init__()
        if head not in SEG_HEADS:
            raise ValueError(f"unknown segmentation head {head!r}; choose one of {', '.join(SEG_HEADS)}")
        self.res = _stage(in_channels, width)
        _init_weights(self.res)
        self.aspp = ASPP(width, head=head)
        self.head = nn.Sequential(
            _conv3x3(head, 4 * width, width),
            _conv3x3(head, width, width),
            nn.Conv2d(width, 1, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at S/4; the sigmoid is applied by the caller (the loss wants logits)."""
        return self.head(self.aspp(self.res(x)))


def l2_normalize(f: torch.Tensor) -> torch.Tensor:
    """Divide each pixel's feature vector by its channel L2 norm (+1e-12, as the spec says)."""
    return f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-12)


def top_k_score(anomaly_map: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Image score: mean of the k largest pixels of the full-size N x 1 x H x W map."""
    flat = anomaly_map.flatten(1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


class DeSTSeg(nn.Module):
    """Teacher + denoising student + segmentation network, with the paper's inference path."""

    def __init__(self, backbone: str = "resnet18", seg_width: int = SEG_WIDTH, top_k: int = TOP_K,
                 seg_head: str = SEG_HEAD) -> None:
        """``seg_width`` (the paper's 256) sets the segmentation network's channels; the
        network holds most of the compute, so narrower widths trade accuracy for edge speed,
        as does ``seg_head="light"`` (depthwise-separable ASPP and head convs; SEG_HEADS).
        ``top_k`` (the paper's 100) is how many of the map's highest pixels the image score averages."""
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.spec = BACKBONES[backbone]
        if seg_head not in SEG_HEADS:
            raise ValueError(f"unknown segmentation head {seg_head!r}; choose one of {', '.join(SEG_HEADS)}")
        self.seg_width, self.top_k, self.seg_head = int(seg_width), int(top_k), seg_head
        self.teacher = TEACHERS[backbone]()
        self.teacher.requires_grad_(False)
        self.student = DenoisingStudent(self.spec.channels)
        self.segmentation = SegmentationNetwork(sum(self.spec.channels), seg_width, seg_head)

    def architecture(self) -> Dict[str, object]:
        """What rebuilds this network and its preprocessing (a run's config.json holds it)."""
        return {"backbone": self.spec.name, "teacher_arch": self.spec.arch, "seg_width": self.seg_width,
                "seg_head": self.seg_head, "top_k": self.top_k, "mean": list(self.spec.mean), "std": list(self.spec.std)}

    def train(self, mode: bool = True) -> "DeSTSeg":
        super().train(mode)
        self.teacher.eval()  # frozen ImageNet statistics, whatever the caller asks
        return self

    def segmentation_input(self, t_feats: Sequence[torch.Tensor], s_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per level -(T_hat * S_hat), per channel, upsampled to the first level's size, concatenated."""
        size = t_feats[0].shape[-2:]
        parts = []
        for t, s in zip(t_feats, s_feats):
            p = -l2_normalize(t) * l2_normalize(s)
            if p.shape[-2:] != size:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            parts.append(p)
        return torch.cat(parts, dim=1)

    def segment(self, t_feats: Sequence[torch.Tensor], s_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Segmentation logits at S/4."""
        return self.segmentation(self.segmentation_input(t_feats, s_feats))

    @staticmethod
    def dest_map(t_feats: Sequence[torch.Tensor], s_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Auxiliary DeST map at S/4: product over levels of 1 - cos(S, T)."""
        size = t_feats[0].shape[-2:]
        out = None
        for t, s in zip(t_feats, s_feats):
            d = 1.0 - (l2_normalize(t) * l2_normalize(s)).sum(dim=1, keepdim=True)
            d = F.interpolate(d, size=size, mode="bilinear", align_corners=False) if d.shape[-2:] != size else d
            out = d if out is None else out * d
        return out

    def _features(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Teacher and student features of one clean batch: the teacher runs once at inference."""
        return self.teacher(x), self.student(x)

    def _map_and_score(self, t_feats, s_feats, size) -> Tuple[torch.Tensor, torch.Tensor]:
        """The inference tail: sigmoid, bilinear upsampling to the input size, top-k image score."""
        prob = torch.sigmoid(self.segment(t_feats, s_feats))
        anomaly_map = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
        return anomaly_map, top_k_score(anomaly_map, self.top_k)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Inference on a normalised N x 3 x S x S batch: (anomaly_map N x 1 x S x S, score N)."""
        return self._map_and_score(*self._features(x), x.shape[-2:])

    def predict(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Like forward, plus the DeST map at full size and its own top-k score, for evaluation."""
        t_feats, s_feats = self._features(x)
        anomaly_map, score = self._map_and_score(t_feats, s_feats, x.shape[-2:])
        dest = F.interpolate(self.dest_map(t_feats, s_feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"anomaly_map": anomaly_map, "score": score, "dest_map": dest, "dest_score": top_k_score(dest, self.top_k)}
