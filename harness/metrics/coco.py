"""COCO box detection metrics through pycocotools' ``COCOeval``, on in-memory data.

Ground truth is a COCO instances dict (``images``, ``annotations``, ``categories``) and
detections are COCO result dicts (``image_id``, ``category_id``, ``bbox`` as x, y, w, h,
``score``); nothing is written to disk. The result holds all twelve standard statistics.

``faster-coco-eval`` is an optional backend: it is used only where it is installed and,
checked once per process on hand-made cases with crowds, boundary areas and over 100
detections per image, gives the same statistics as pycocotools; otherwise pycocotools runs
and the result says why.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

# Order of COCOeval.stats for iouType="bbox".
STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
    "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large",
)
STAT_DESCRIPTIONS: dict[str, str] = {
    "AP": "COCO mAP, IoU 0.50:0.95, all areas, 100 detections per image",
    "AP50": "mAP at IoU 0.50",
    "AP75": "mAP at IoU 0.75",
    "AP_small": "mAP for objects of area below 32^2 pixels",
    "AP_medium": "mAP for objects of area 32^2 to 96^2 pixels",
    "AP_large": "mAP for objects of area above 96^2 pixels",
    "AR1": "mean recall with 1 detection per image",
    "AR10": "mean recall with 10 detections per image",
    "AR100": "mean recall with 100 detections per image",
    "AR_small": "mean recall (100 detections) for objects below 32^2 pixels",
    "AR_medium": "mean recall (100 detections) for objects of 32^2 to 96^2 pixels",
    "AR_large": "mean recall (100 detections) for objects above 96^2 pixels",
}
BACKENDS = ("pycocotools", "faster-coco-eval", "auto")


@dataclass
class CocoResult:
    """The twelve COCO statistics of one evaluation.

    ``raw`` is COCOeval's ``stats`` unchanged (-1 where a statistic has no ground truth);
    :meth:`as_dict` gives them by name with NaN in place of -1, so an undefined statistic is
    never mistaken for a score.
    """

    raw: tuple[float, ...]
    backend: str
    n_images: int
    n_detections: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {name: (math.nan if v < 0 else float(v)) for name, v in zip(STAT_NAMES, self.raw)}


def _silent():
    return contextlib.redirect_stdout(io.StringIO())


def _gt_dataset(gt: Mapping[str, Any]) -> dict:
    if not isinstance(gt, Mapping) or not {"images", "annotations", "categories"} <= set(gt):
        raise ValueError("ground truth must be a COCO instances dict with images, annotations and categories")
    data = {k: copy.deepcopy(v) for k, v in gt.items() if k in ("info", "licenses", "images", "annotations", "categories")}
    for i, ann in enumerate(data["annotations"]):
        ann.setdefault("iscrowd", 0)
        ann.setdefault("id", i + 1)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    return data


def _detections(dets: Iterable[Mapping[str, Any]]) -> list[dict]:
    out = []
    for d in dets:
        x, y, w, h = (float(v) for v in d["bbox"])
        out.append({"image_id": int(d["image_id"]), "category_id": int(d["category_id"]),
                    "bbox": [x, y, w, h], "score": float(d["score"])})
    return out


def _result_dataset(gt_data: dict, dets: list[dict]) -> dict:
    """What ``COCO.loadRes`` builds for boxes (ids from 1, area w*h), also for zero detections."""
    known = {img["id"] for img in gt_data["images"]}
    unknown = {d["image_id"] for d in dets} - known
    if unknown:
        raise ValueError(f"detections name image ids absent from the ground truth: {sorted(unknown)[:5]}")
    anns = []
    for i, d in enumerate(dets):
        x, y, w, h = d["bbox"]
        anns.append({**d, "bbox": [x, y, w, h], "area": w * h, "id": i + 1, "iscrowd": 0,
                     "segmentation": [[x, y, x, y + h, x + w, y + h, x + w, y]]})
    return {"images": copy.deepcopy(gt_data["images"]), "categories": copy.deepcopy(gt_data["categories"]),
            "annotations": anns}


def _run_pycocotools(gt_data: dict, dets: list[dict], image_ids: Sequence[int] | None) -> tuple[float, ...]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _silent():
        coco_gt = COCO()
        coco_gt.dataset = gt_data
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = _result_dataset(gt_data, dets)
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return tuple(float(v) for v in ev.stats)


def _run_faster(gt_data: dict, dets: list[dict], image_ids: Sequence[int] | None) -> tuple[float, ...]:
    from faster_coco_eval import COCO, COCOeval_faster

    with _silent():
        coco_gt = COCO(copy.deepcopy(gt_data))
        coco_dt = COCO(_result_dataset(gt_data, dets))
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return tuple(float(v) for v in ev.stats[: len(STAT_NAMES)])


_FASTER_CHECK: list[str | None] = []  # [None] agrees, [reason] does not; empty: not checked yet


def faster_backend_problem() -> str | None:
    """Why faster-coco-eval cannot stand in for pycocotools here, or None if it can.

    Checked once per process: the package must import and give the same twelve statistics
    as pycocotools on :func:`conformance_cases`.
    """
    if _FASTER_CHECK:
        return _FASTER_CHECK[0]
    import importlib.util

    if importlib.util.find_spec("faster_coco_eval") is None:
        reason: str | None = "faster-coco-eval is not installed"
    else:
        reason = None
        try:
            for name, (gt, dets) in conformance_cases().items():
                a = _run_pycocotools(_gt_dataset(gt), _detections(dets), None)
                b = _run_faster(_gt_dataset(gt), _detections(dets), None)
                if any(abs(x - y) > 1e-12 for x, y in zip(a, b)):
                    reason = f"faster-coco-eval differs from pycocotools on the case {name!r}: {b} vs {a}"
                    break
        except Exception as exc:  # noqa: BLE001 - any failure means "do not use it"
            reason = f"faster-coco-eval failed its check: {type(exc).__name__}: {exc}"
    _FASTER_CHECK.append(reason)
    return reason


def evaluate_boxes(
    gt: Mapping[str, Any],
    detections: Iterable[Mapping[str, Any]],
    image_ids: Sequence[int] | None = None,
    backend: str = "pycocotools",
) -> CocoResult:
    """COCO box AP/AR of ``detections`` against the ground truth dict ``gt``.

    ``image_ids`` restricts the evaluation to those images (default: every image of ``gt``,
    including images without detections). ``backend`` is ``pycocotools``,
    ``faster-coco-eval`` (used only if it passes the conformance check, else pycocotools
    with the reason in ``notes``) or ``auto`` (faster-coco-eval where it qualifies).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    gt_data = _gt_dataset(gt)
    dets = _detections(detections)
    notes: list[str] = []
    use = "pycocotools"
    if backend in ("faster-coco-eval", "auto"):
        problem = faster_backend_problem()
        if problem is None:
            use = "faster-coco-eval"
        elif backend == "faster-coco-eval":
            notes.append(f"used pycocotools: {problem}")
    run = _run_faster if use == "faster-coco-eval" else _run_pycocotools
    stats = run(gt_data, dets, image_ids)
    n_images = len(image_ids) if image_ids is not None else len(gt_data["images"])
    return CocoResult(raw=stats, backend=use, n_images=n_images, n_detections=len(dets), notes=notes)


def conformance_cases() -> dict[str, tuple[dict, list[dict]]]:
    """Small hand-made problems covering COCOeval's edge cases (also used by the tests).

    Boxes with area exactly 32^2 and 96^2 (the area-range boundaries), crowd annotations,
    more than 100 detections in one image, an image without detections, a category without
    ground truth, and a case with no detections at all.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 7, "name": "no_gt"}]
    images = [{"id": i, "width": 320, "height": 240, "file_name": f"{i}.png"} for i in (1, 2, 5)]
    anns = []

    def ann(image_id, cat, box, crowd=0, area=None):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": list(map(float, box)),
                     "area": float(area if area is not None else box[2] * box[3]), "iscrowd": crowd})

    ann(1, 1, [10, 10, 32, 32])  # exactly 32^2: small and medium ranges both include it
    ann(1, 1, [100, 20, 96, 96])  # exactly 96^2
    ann(1, 2, [50, 150, 20, 40])
    ann(1, 2, [200, 120, 100, 100], crowd=1)  # crowd region
    ann(2, 1, [5, 5, 16, 16])
    ann(2, 2, [60, 60, 128, 90])
    ann(2, 1, [200, 10, 60, 60], crowd=1)
    ann(5, 1, [30, 30, 40, 24])  # image 5 gets no detections
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [11, 10, 32, 31], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [100, 20, 96, 96], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [102, 25, 90, 92], "score": 0.85},
        {"image_id": 1, "category_id": 2, "bbox": [48, 150, 22, 38], "score": 0.7},
        {"image_id": 1, "category_id": 2, "bbox": [210, 130, 30, 30], "score": 0.95},  # inside the crowd
        {"image_id": 1, "category_id": 7, "bbox": [0, 0, 50, 50], "score": 0.6},  # category without ground truth
        {"image_id": 2, "category_id": 2, "bbox": [62, 58, 126, 94], "score": 0.5},
        {"image_id": 2, "category_id": 1, "bbox": [210, 20, 20, 20], "score": 0.99},  # inside a crowd
    ]
    # Over 100 detections in image 2: the one matching the small box is ranked past maxDets=100.
    for k in range(150):
        x, y = rng.uniform(0, 250, size=2)
        dets.append({"image_id": 2, "category_id": 1, "bbox": [float(x), float(y), 12.0, 12.0],
                     "score": 0.6 - 0.001 * k})
    dets.append({"image_id": 2, "category_id": 1, "bbox": [5, 5, 16, 16], "score": 0.001})
    gt = {"images": images, "annotations": anns, "categories": cats}
    boundary = {"images": images[:1], "categories": cats[:1], "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 32.0, 32.0], "area": 1024.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [40.0, 40.0, 96.0, 96.0], "area": 9216.0, "iscrowd": 0},
    ]}
    boundary_dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 32.0, 32.0], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [40.0, 40.0, 96.0, 96.0], "score": 0.8},
    ]
    return {
        "mixed": (gt, dets),
        "area_boundaries": (boundary, boundary_dets),
        "no_detections": (gt, []),
    }
