"""Object detection across scales: a feature pyramid (FPN) against an image pyramid.

Question: for objects of many sizes, does a feature pyramid beat running a single-scale
detector over an image pyramid, in COCO mAP (above all for small objects) per millisecond and
per byte? (Lin et al. 2017, Table 3, report 17.8 vs 13.2 AP_small on COCO for FPN over a
single-scale baseline.)

Variants (all torchvision detectors of one head family, FCOS by default, RetinaNet or Faster
R-CNN as the ``head`` param, on one randomly initialised ResNet backbone):
- ``single_scale``: the head on one backbone level (stride 16), all anchor sizes there.
- ``image_pyramid``: the same trained single-level model run at each of ``scales`` (the image
  resized by each factor), boxes mapped back to the image and merged with per-class NMS at
  the model's own IoU threshold, the best 100 kept.
- ``fpn``: the head on torchvision's FeaturePyramidNetwork (P3-P7; P2-P6 for Faster R-CNN).
- ``fpn_pyramid``: the FPN model with the same multi-scale testing.

Both models are trained with the same fixed budget (steps, batch, AdamW schedule, seed) in
the untimed part of the first case that needs them, and a case time limit waits for the
training to finish; the weights are cached on disk, keyed by the model, training and data
configuration, checked against their SHA-256 manifest on every load and retrained when
corrupt, so later runs (and concurrent ones) load them (``train_time`` reports the time the
training took when it ran). ``checkpoint`` may name user weights instead, as a
path template with ``{head}`` and ``{arch}`` (``single`` or ``fpn``), e.g.
``--param checkpoint=/ckpt/{head}-{arch}.pt``.

Data: the deterministic synthetic set of ``suites.common.detection_data`` (COCO's small,
medium and large ranges all populated; cached on disk), or a real COCO-format folder given as
``--param dataset=/path/to/coco`` (images resized so the longer side is ``image_size``;
detections are mapped back to the original image for evaluation).

Timed operation: detection on one validation image (cycling through the set), so ``latency``
is per image and ``peak_memory`` is the memory of one image's inference. Quality: the twelve
COCO box statistics from pycocotools' COCOeval over the whole validation set. One trained
model per variant and seed: the AP numbers carry no spread across training runs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness import Band, Metric, Profile, Skip, Suite, Timing, Workload, variant
from harness.metrics.coco import STAT_DESCRIPTIONS, STAT_NAMES, evaluate_boxes
from suites.common.detection_data import CocoDataset, SyntheticSpec, load_coco_folder, synthetic_dataset, train_val
from suites.common.detectors import (
    DetectorConfig,
    TrainConfig,
    TrainedDetector,
    fit_scale,
    nms_threshold,
    pyramid_detect,
    to_coco_results,
    to_float,
    trained_detector,
)

PYRAMID_SCALES = ["0.5/1/2"]  # "/" separates factors: the command line splits values at commas


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.5/1/2"`` -> (0.5, 1.0, 2.0); every factor must be positive."""
    try:
        scales = tuple(float(s) for s in str(text).split("/") if s.strip())
    except ValueError:
        raise ValueError(f"scales {text!r}: expected factors separated by '/', e.g. 0.5/1/2") from None
    if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ValueError(f"scales {text!r}: expected positive factors separated by '/', e.g. 0.5/1/2")
    return scales


@dataclass
class DetectionState:
    """What every variant at one grid point shares: data, configs and the trained models."""

    params: dict[str, Any]
    device: str
    train: CocoDataset
    val: CocoDataset
    val_images: list[torch.Tensor]  # float, on the device, at the size the model sees
    val_scales: list[float]  # factor from the original image to what the model sees
    model_cfg: DetectorConfig
    train_cfg: TrainConfig
    detectors: dict[str, TrainedDetector] = field(default_factory=dict)

    def detector(self, arch: str) -> TrainedDetector:
        """The trained model of ``arch`` (``single`` or ``fpn``): loaded or trained once."""
        if arch not in self.detectors:
            ckpt = self.params["checkpoint"]
            path = None if ckpt in ("", "none") else ckpt.format(head=self.params["head"], arch=arch)
            synthetic = self.params["dataset"] == "synthetic"
            self.detectors[arch] = trained_detector(
                replace(self.model_cfg, arch=arch), self.train_cfg, self.train, self.device,
                checkpoint=path, max_side=None if synthetic else self.params["image_size"],
            )
        return self.detectors[arch]


class Detection(Suite):
    """FPN vs image pyramid vs single-scale detection, COCO mAP against time and memory."""

    name = "detection"
    description = "feature pyramid (FPN) against image pyramid and single-scale detectors: COCO mAP per ms and per MiB"
    grid = {
        "head": ["fcos"],
        "dataset": ["synthetic"],
        "image_size": [384],
        "train_images": [1024],
        "val_images": [256],
        "backbone": ["resnet18"],
        "channels": [128],
        "train_steps": [2000],
        "batch": [16],
        "checkpoint": ["none"],
    }
    profiles = {
        "quick": Profile(
            grid={"image_size": [224], "train_images": [128], "val_images": [24], "backbone": ["resnet10"],
                  "channels": [64], "train_steps": [80], "batch": [4]},
            timing=Timing(warmup_s=0.3, min_warmup=3, budget_s=1.0, min_runs=5, rel_spread=0.05),
            description="2 CPU cores in minutes: 224 px images, ResNet-10, 80 training steps of 4 images",
        ),
        "default": Profile(),
        "nightly": Profile(
            grid={"head": ["fcos", "retinanet", "faster_rcnn"], "image_size": [512], "train_images": [4096],
                  "val_images": [500], "backbone": ["resnet18"], "channels": [128], "train_steps": [3000],
                  "batch": [16], "scales": ["0.5/1/2", "1/2"]},
            timing=Timing(warmup_s=0.2, budget_s=2.0, min_runs=10, rel_spread=0.01),
            description="the GPU sweep: three head families, 512 px, 3000 steps of 16 images, two pyramids",
        ),
    }
    reference = "single_scale"
    # a multi-scale method must keep at least 75% of single-scale AP
    bands = [Band("AP", min_ratio=0.75)]
    metrics = [Metric(n, "", "higher", STAT_DESCRIPTIONS[n], ratio=False) for n in STAT_NAMES] + [
        Metric("train_time", "s", "lower", "wall time the model's training took when it ran (cached after)", ratio=False, kind="time"),
    ]
    timing = Timing(warmup_s=0.1, budget_s=1.0, min_runs=5, rel_spread=0.01)

    # ---------------------------------------------------------------- shared inputs
    def prepare(self, params, device) -> DetectionState:
        if params["dataset"] == "synthetic":
            spec = SyntheticSpec(image_size=params["image_size"], num_train=params["train_images"],
                                 num_val=params["val_images"], seed=self.seed)
            splits = synthetic_dataset(spec)
            train, val = splits["train"], splits["val"]
        else:
            train, val = train_val(load_coco_folder(params["dataset"]), seed=self.seed)  # errors say what is wrong
            train = train.subset(range(min(len(train), params["train_images"])))
            val = val.subset(range(min(len(val), params["val_images"])))
        if not any(a.get("iscrowd", 0) == 0 for a in val.coco["annotations"]):
            raise Skip("the validation images hold no (non-crowd) objects to detect")
        images, scales = [], []
        for i in range(len(val)):
            img = to_float(val.load_image(i)).to(device)
            scales.append(fit_scale(*img.shape[-2:], None if params["dataset"] == "synthetic" else params["image_size"]))
            images.append(img)
        model_cfg = DetectorConfig(head=params["head"], num_classes=train.num_classes, backbone=params["backbone"],
                                   channels=params["channels"], head_convs=2 if params["channels"] <= 64 else 4)
        train_cfg = TrainConfig(steps=params["train_steps"], batch_size=params["batch"], seed=self.seed)
        return DetectionState(dict(params), device, train, val, images, scales, model_cfg, train_cfg)

    # ---------------------------------------------------------------- variants
    def _workload(self, state: DetectionState, arch: str, scales: tuple[float, ...]) -> Workload:
        det = state.detector(arch)
        model, iou = det.model, nms_threshold(det.model)

        def run_one(k: int) -> dict[str, torch.Tensor]:
            base = state.val_scales[k]
            return pyramid_detect(model, state.val_images[k], [base * s for s in scales], nms_iou=iou)

        order = itertools.cycle(range(len(state.val_images)))

        def fn():
            return run_one(next(order))

        def output():
            results = []
            for k, info in enumerate(state.val.images):
                results += to_coco_results(info["id"], run_one(k), state.val.label_to_cat)
            return results

        return Workload(
            fn, flops=None, items=1, items_unit="images/s", output=output,
            metrics={"train_time": {"value": det.train_time_s, "source": det.source}},
            info={"arch": arch, "scales": list(scales), "weights": det.weights_path, "weights_source": det.source,
                  "val_images": len(state.val), "train_images": len(state.train),
                  "train_skipped_steps": det.info.get("skipped_steps", 0), "weights_cache": det.info.get("cache", "")},
        )

    @variant()
    def single_scale(self, state, params):
        """one feature level (stride 16) at the image's own scale"""
        return self._workload(state, "single", (1.0,))

    @variant(params={"scales": PYRAMID_SCALES})
    def image_pyramid(self, state, params):
        """the single-level model at several image scales, NMS-merged"""
        return self._workload(state, "single", parse_scales(params["scales"]))

    @variant()
    def fpn(self, state, params):
        """torchvision feature pyramid network over several levels"""
        return self._workload(state, "fpn", (1.0,))

    @variant(params={"scales": PYRAMID_SCALES})
    def fpn_pyramid(self, state, params):
        """the FPN model at several image scales, NMS-merged"""
        return self._workload(state, "fpn", parse_scales(params["scales"]))

    # ---------------------------------------------------------------- quality
    def wants_output(self, variant: str) -> bool:
        return True

    def evaluate(self, state: DetectionState, params, variant, output):
        result = evaluate_boxes(state.val.coco, output)
        extra = {"n_images": result.n_images, "n_detections": result.n_detections, "backend": result.backend}
        return {name: {"value": value, **extra} for name, value in result.as_dict().items()}
