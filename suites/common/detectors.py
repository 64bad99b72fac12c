"""torchvision detectors with one feature level or a feature pyramid, trained from scratch.

Every model shares the backbone family (a torchvision ResNet, random initialisation, no
downloaded weights) and the head family (FCOS by default, RetinaNet or Faster R-CNN):

- ``single``: the head sees one backbone level (stride 16 by default) through a 1x1 and a
  3x3 convolution to the same width the pyramid uses, with every anchor size on that level.
- ``fpn``: the head sees torchvision's FeaturePyramidNetwork (P3-P7 for FCOS/RetinaNet,
  P2-P6 for Faster R-CNN), one anchor size per level.

:func:`pyramid_detect` runs one model over an image pyramid and merges the detections with
per-class NMS after mapping boxes back to the original image. :func:`trained_detector`
trains with a fixed budget (steps, batch, optimiser, seed) and caches the weights on disk,
keyed by the model, training and dataset configuration; or loads a user checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

HEADS = ("fcos", "retinanet", "faster_rcnn")
ARCHS = ("single", "fpn")
BACKBONES = {"resnet10": [1, 1, 1, 1], "resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}
STAGE_CHANNELS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
STAGE_STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]
WEIGHTS_FORMAT = 2  # bump when the cached file layout or the model code changes
WEIGHTS_FILE = "weights.pt"  # the state dict inside a cached detector's folder


@dataclass(frozen=True)
class DetectorConfig:
    """Which detector: head family, one level or FPN, backbone and widths."""

    head: str = "fcos"
    arch: str = "fpn"
    num_classes: int = 4  # foreground classes; labels are 1..num_classes
    backbone: str = "resnet10"
    channels: int = 64  # width of the feature maps the head sees
    head_convs: int = 2  # FCOS tower depth (RetinaNet's is fixed at 4 by torchvision)
    single_stride: int = 16  # the one level of the single-level detector
    anchor_base: int = 16  # smallest anchor side (FPN: on the finest head level)
    score_thresh: float = 0.05
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown detector head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown detector arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.channels < 32 or self.channels % 32:
            raise ValueError(f"channels must be a multiple of 32 (the heads' GroupNorm uses 32 groups), not {self.channels}")
        if self.single_stride not in STAGE_STRIDES.values():
            raise ValueError(f"single_stride must be one of {sorted(STAGE_STRIDES.values())}, not {self.single_stride}")


@dataclass(frozen=True)
class TrainConfig:
    """The fixed training budget every variant gets."""

    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 30
    grad_clip: float = 10.0
    hflip: bool = True
    seed: int = 0


# --------------------------------------------------------------------------- models
def _transform():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class NoResizeTransform(GeneralizedRCNNTransform):
        """Normalises and batches but never resizes: scale is the caller's choice (pyramids)."""

        def resize(self, image, target=None):
            return image, target

    return NoResizeTransform(min_size=1, max_size=1 << 16, image_mean=IMAGE_MEAN, image_std=IMAGE_STD, size_divisible=32)


def _resnet(name: str) -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    # BatchNorm, trainable: from scratch, frozen statistics would never leave their init.
    return ResNet(BasicBlock, BACKBONES[name], norm_layer=nn.BatchNorm2d)


class SingleLevelBackbone(nn.Module):
    """One ResNet stage projected to ``channels``: the detector sees a single feature level."""

    def __init__(self, body: nn.Module, stage: str, channels: int):
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter

        self.body = IntermediateLayerGetter(body, return_layers={stage: "0"})
        self.lateral = nn.Conv2d(STAGE_CHANNELS[stage], channels, 1)
        self.output = nn.Conv2d(channels, channels, 3, padding=1)
        self.out_channels = channels

    def forward(self, x):
        c = self.body(x)["0"]
        return OrderedDict([("0", self.output(self.lateral(c)))])


def _backbone(cfg: DetectorConfig) -> tuple[nn.Module, list[int]]:
    """The feature extractor and the strides of the levels the head sees."""
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    body = _resnet(cfg.backbone)
    if cfg.arch == "single":
        stage = next(s for s, st in STAGE_STRIDES.items() if st == cfg.single_stride)
        return SingleLevelBackbone(body, stage, cfg.channels), [cfg.single_stride]
    if cfg.head == "faster_rcnn":  # P2-P5 plus a max-pooled P6, as in the FPN paper
        stages, extra, strides = ["layer1", "layer2", "layer3", "layer4"], LastLevelMaxPool(), [4, 8, 16, 32, 64]
    else:  # P3-P7, as in RetinaNet and FCOS
        stages, extra, strides = ["layer2", "layer3", "layer4"], LastLevelP6P7(cfg.channels, cfg.channels), [8, 16, 32, 64, 128]
    fpn = BackboneWithFPN(
        body,
        return_layers={s: str(i) for i, s in enumerate(stages)},
        in_channels_list=[STAGE_CHANNELS[s] for s in stages],
        out_channels=cfg.channels,
        extra_blocks=extra,
    )
    return fpn, strides


def _anchor_sizes(cfg: DetectorConfig, n_levels: int, octaves: int) -> tuple[tuple[int, ...], ...]:
    """FPN: one octave-spaced base size per level; single level: all of them on the one level."""
    per_level = []
    for lvl in range(5):
        base = cfg.anchor_base * 2**lvl
        per_level.append(tuple(int(round(base * 2 ** (k / octaves))) for k in range(octaves)))
    if n_levels == 1:
        return (tuple(s for sizes in per_level for s in sizes),)
    return tuple(per_level[:n_levels])


def build_detector(cfg: DetectorConfig) -> nn.Module:
    """A randomly initialised torchvision detector for ``cfg`` (no weights are downloaded)."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    backbone, strides = _backbone(cfg)
    n_levels = len(strides)
    num_classes = cfg.num_classes + 1  # torchvision counts the background class
    if cfg.head == "fcos":
        from torchvision.models.detection.fcos import FCOSHead

        # FCOS's anchors are points whose "size" is the level's stride.
        sizes = tuple((s,) for s in strides)
        anchors = AnchorGenerator(sizes, ((1.0,),) * n_levels)
        head = FCOSHead(cfg.channels, 1, num_classes, num_convs=cfg.head_convs)
        model = FCOS(backbone, num_classes, anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                     detections_per_img=cfg.detections_per_img)
    elif cfg.head == "retinanet":
        from torchvision.models.detection.retinanet import RetinaNetHead

        sizes = _anchor_sizes(cfg, n_levels, octaves=3)
        ratios = ((0.5, 1.0, 2.0),) * n_levels
        anchors = AnchorGenerator(sizes, ratios)
        head = RetinaNetHead(cfg.channels, anchors.num_anchors_per_location()[0], num_classes,
                             norm_layer=lambda c: nn.GroupNorm(32, c))
        model = RetinaNet(backbone, num_classes, anchor_generator=anchors, head=head, score_thresh=cfg.score_thresh,
                          detections_per_img=cfg.detections_per_img)
    else:
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.ops import MultiScaleRoIAlign

        sizes = _anchor_sizes(cfg, n_levels, octaves=1)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * n_levels)
        names = ["0"] if n_levels == 1 else [str(i) for i in range(4)]  # RoIs pool from P2-P5
        pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
        rep = 256
        model = FasterRCNN(
            backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=pool,
            box_head=TwoMLPHead(cfg.channels * 7 * 7, rep), box_predictor=FastRCNNPredictor(rep, num_classes),
            rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
            rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
            box_batch_size_per_image=128, box_score_thresh=cfg.score_thresh,
            box_detections_per_img=cfg.detections_per_img,
        )
    model.transform = _transform()
    return model


# --------------------------------------------------------------------------- inference
def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) in 0..255 -> float in 0..1 (float images pass through)."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image


@torch.no_grad()
def detect(model: nn.Module, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The model's detections for float images (3, H, W), boxes in input coordinates."""
    return model(list(images))


def resize_image(image: torch.Tensor, scale: float) -> tuple[torch.Tensor, tuple[float, float]]:
    """``image`` resized by ``scale`` (sides rounded) and the (x, y) factors that map back."""
    h, w = image.shape[-2:]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return image, (1.0, 1.0)
    out = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)[0]
    return out, (w / nw, h / nh)


def merge_detections(parts: Sequence[dict[str, torch.Tensor]], iou: float, max_dets: int) -> dict[str, torch.Tensor]:
    """Union of several detection sets, per-class NMS at ``iou``, the ``max_dets`` best kept."""
    from torchvision.ops import batched_nms

    boxes = torch.cat([p["boxes"] for p in parts])
    scores = torch.cat([p["scores"] for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    keep = batched_nms(boxes, scores, labels, iou)[:max_dets]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


@torch.no_grad()
def pyramid_detect(
    model: Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]],
    image: torch.Tensor,
    scales: Sequence[float],
    nms_iou: float = 0.5,
    max_dets: int = 100,
) -> dict[str, torch.Tensor]:
    """Detections of ``model`` run at each scale of ``image``, mapped back and NMS-merged."""
    h, w = image.shape[-2:]
    parts = []
    for s in scales:
        scaled, (fx, fy) = resize_image(image, s)
        out = model([scaled])[0]
        # Label 0 is torchvision's background; FCOS and RetinaNet still score it (never trained
        # as a positive), so a barely trained model can emit it. It is no detection.
        fg = out["labels"] > 0
        out = {k: v[fg] for k, v in out.items()}
        factor = torch.tensor([fx, fy, fx, fy], dtype=out["boxes"].dtype, device=out["boxes"].device)
        boxes = out["boxes"] * factor
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        parts.append({**out, "boxes": boxes})
    return merge_detections(parts, nms_iou, max_dets)


def to_coco_results(image_id: int, det: dict[str, torch.Tensor], label_to_cat: dict[int, int]) -> list[dict]:
    """One image's detections as COCO result dicts (bbox x, y, w, h)."""
    boxes = det["boxes"].detach().double().cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    return [
        {"image_id": int(image_id), "category_id": int(label_to_cat[int(l)]), "bbox": b, "score": float(s)}
        for b, s, l in zip(xywh, det["scores"].tolist(), det["labels"].tolist())
    ]


# --------------------------------------------------------------------------- training
def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero over the budget."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    rest = max(1, cfg.steps - cfg.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * (step - cfg.warmup_steps) / rest))


def fit_scale(height: int, width: int, max_side: int | None) -> float:
    """The factor that brings an image's longer side to ``max_side`` (1.0 when None)."""
    return 1.0 if not max_side else max_side / max(height, width)


def load_training_pair(dataset, i: int, max_side: int | None = None) -> tuple[torch.Tensor, dict]:
    """Image ``i`` (uint8) and its target, both resized so the longer side is ``max_side``."""
    image, target = dataset.load_image(i), dataset.target(i)
    scale = fit_scale(*image.shape[-2:], max_side)
    if scale != 1.0:
        resized, (fx, fy) = resize_image(image.float(), scale)
        image = resized.round().clamp(0, 255).to(torch.uint8)
        target = {**target, "boxes": target["boxes"] / torch.tensor([fx, fy, fx, fy])}
    return image, target


def train_detector(model: nn.Module, dataset, cfg: TrainConfig, device: str = "cpu", max_side: int | None = None,
                   log_every: int = 10) -> dict:
    """Train ``model`` on ``dataset`` (a CocoDataset) for exactly ``cfg.steps`` steps.

    AdamW with warm-up and cosine decay, gradient clipping, random horizontal flips; the
    batches are drawn from a generator seeded by ``cfg.seed``. Images are resized so their
    longer side is ``max_side`` (if given). Returns the loss history.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    pairs = [load_training_pair(dataset, i, max_side) for i in range(len(dataset))]
    images = [p[0] for p in pairs]
    targets = [p[1] for p in pairs]
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    order: list[int] = []
    losses, skipped = [], 0
    for step in range(cfg.steps):
        batch_imgs, batch_tgts = [], []
        for _ in range(cfg.batch_size):
            if not order:
                order = torch.randperm(len(images), generator=gen).tolist()
            i = order.pop()
            img, tgt = to_float(images[i]), dict(targets[i])
            if cfg.hflip and bool(torch.rand((), generator=gen) < 0.5):
                w = img.shape[-1]
                img = img.flip(-1)
                b = tgt["boxes"].clone()
                b[:, [0, 2]] = w - tgt["boxes"][:, [2, 0]]
                tgt["boxes"] = b
            batch_imgs.append(img.to(device))
            batch_tgts.append({k: v.to(device) for k, v in tgt.items()})
        loss_dict = model(batch_imgs, batch_tgts)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            skipped += 1  # a diverging batch is dropped, not applied
            opt.zero_grad(set_to_none=True)
            sched.step()
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            losses.append({"step": step, "loss": loss.item(), **{k: v.item() for k, v in loss_dict.items()}})
    model.eval()
    return {"losses": losses, "skipped_steps": skipped}


def weights_key(model_cfg: DetectorConfig, train_cfg: TrainConfig, dataset_fingerprint: str) -> str:
    """Hash naming cached weights: model, training budget, data, code format, torchvision."""
    import torchvision

    blob = json.dumps({
        "model": asdict(model_cfg), "train": asdict(train_cfg), "data": dataset_fingerprint,
        "format": WEIGHTS_FORMAT, "torchvision": ".".join(torchvision.__version__.split(".")[:2]),
    }, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class TrainedDetector:
    """A detector in eval mode and where its weights came from."""

    model: nn.Module
    config: DetectorConfig
    source: str  # "trained", "cache" or "checkpoint"
    weights_path: str
    train_time_s: float  # time the training took when it ran (NaN for a user checkpoint)
    info: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a state dict (or a dict with a ``model`` entry) saved from the same config."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"detector checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} does not fit this detector config: {first}") from None


def trained_detector(
    model_cfg: DetectorConfig,
    train_cfg: TrainConfig,
    dataset,
    device: str = "cpu",
    checkpoint: str | os.PathLike | None = None,
    cache_root: Path | None = None,
    max_side: int | None = None,
) -> TrainedDetector:
    """The detector for ``model_cfg`` trained on ``dataset`` with ``train_cfg``.

    From ``checkpoint`` if given; else from the weights cache if this exact configuration
    was trained before and its files check out; else trained now and cached as a
    :mod:`harness.artifacts` artifact (atomic, SHA-256 manifest, one build across processes,
    not cut short by a case time limit). ``info`` holds the training facts and ``cache``.
    """
    torch.manual_seed(train_cfg.seed)  # the random initialisation is part of the config
    model = build_detector(model_cfg)
    if checkpoint:
        load_checkpoint(model, checkpoint)
        return TrainedDetector(model.to(device).eval(), model_cfg, "checkpoint", str(checkpoint), math.nan)
    from harness.artifacts import cached_artifact
    from harness.paths import cache_dir

    root = Path(cache_root) if cache_root is not None else cache_dir("detection", "weights")
    data_key = f"{dataset.fingerprint()}@{max_side}"
    key = weights_key(model_cfg, train_cfg, data_key)

    def build(folder: Path) -> dict:
        torch.manual_seed(train_cfg.seed)  # the same initialisation as a model built above
        fresh = build_detector(model_cfg)
        t0 = time.perf_counter()
        history = train_detector(fresh, dataset, train_cfg, device, max_side=max_side)
        train_time = time.perf_counter() - t0
        torch.save({k: v.detach().cpu() for k, v in fresh.state_dict().items()}, folder / WEIGHTS_FILE)
        return {"train_time_s": train_time, "device": device, "threads": torch.get_num_threads(),
                "model": asdict(model_cfg), "train": asdict(train_cfg), **history}

    def load(folder: Path) -> nn.Module:
        model.load_state_dict(torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        return model

    config = {"model": asdict(model_cfg), "train": asdict(train_cfg), "data": data_key, "format": WEIGHTS_FORMAT}
    loaded, info = cached_artifact("detector", config, build, load, root=root,
                                   name=f"{model_cfg.head}-{model_cfg.arch}-{key}")
    source = "cache" if info["cache"] == "reused" else "trained"
    return TrainedDetector(loaded.to(device).eval(), model_cfg, source, str(Path(info["cache_path"]) / WEIGHTS_FILE),
                           info["train_time_s"], info)


def nms_threshold(model: nn.Module) -> float:
    """The IoU threshold the model's own post-processing uses (reused to merge pyramids)."""
    if hasattr(model, "nms_thresh"):  # FCOS, RetinaNet
        return float(model.nms_thresh)
    return float(model.roi_heads.nms_thresh)  # Faster R-CNN
