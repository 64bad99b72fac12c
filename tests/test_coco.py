"""harness.metrics.coco gives exactly pycocotools' own COCOeval results, edge cases included."""

from __future__ import annotations

import contextlib
import copy
import io
import importlib.util
import math

import numpy as np
import pytest

from harness.metrics.coco import STAT_NAMES, conformance_cases, evaluate_boxes, faster_backend_problem


def pycocotools_stats(gt: dict, dets: list[dict], image_ids=None) -> np.ndarray:
    """The reference: pycocotools' documented path (COCO, loadRes, COCOeval)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if dets:
            coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        else:  # loadRes cannot take an empty list; an empty result set is what it would build
            coco_dt = COCO()
            coco_dt.dataset = {"images": copy.deepcopy(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _image(i, w=320, h=240):
    return {"id": i, "width": w, "height": h, "file_name": f"{i}.png"}


def _ann(k, image_id, cat, box, crowd=0, area=None):
    return {"id": k, "image_id": image_id, "category_id": cat, "bbox": [float(v) for v in box],
            "area": float(box[2] * box[3] if area is None else area), "iscrowd": crowd}


@pytest.mark.parametrize("name", list(conformance_cases()))
def test_conformance_cases_match_pycocotools(name):
    gt, dets = conformance_cases()[name]
    ours = evaluate_boxes(gt, dets)
    assert len(ours.raw) == 12
    np.testing.assert_array_equal(np.asarray(ours.raw), pycocotools_stats(gt, dets))
    assert ours.backend == "pycocotools"


def test_boundary_areas_follow_cocoeval_ranges():
    """Area exactly 32^2 counts as small and medium, 96^2 as medium and large (closed ranges)."""
    cats = [{"id": 1, "name": "a"}]
    gt = {"images": [_image(1)], "categories": cats,
          "annotations": [_ann(1, 1, 1, [0, 0, 32, 32]), _ann(2, 1, 1, [100, 100, 96, 96])]}
    only_first = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 32], "score": 0.9}]
    only_second = [{"image_id": 1, "category_id": 1, "bbox": [100, 100, 96, 96], "score": 0.9}]
    for dets in (only_first, only_second):
        ours = evaluate_boxes(gt, dets)
        np.testing.assert_array_equal(np.asarray(ours.raw), pycocotools_stats(gt, dets))
    first = evaluate_boxes(gt, only_first).as_dict()
    assert first["AP_small"] == pytest.approx(1.0) and first["AP_large"] == 0.0
    assert 0.0 < first["AP_medium"] < 1.0  # medium holds both boxes, one found
    second = evaluate_boxes(gt, only_second).as_dict()
    assert second["AP_small"] == 0.0 and second["AP_large"] == pytest.approx(1.0)


def test_crowd_regions_neither_reward_nor_penalise():
    cats = [{"id": 1, "name": "a"}]
    gt = {"images": [_image(1)], "categories": cats,
          "annotations": [_ann(1, 1, 1, [10, 10, 50, 50]), _ann(2, 1, 1, [150, 50, 120, 120], crowd=1)]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.5}]
    dets_in_crowd = dets + [{"image_id": 1, "category_id": 1, "bbox": [160 + 10 * k, 60, 30, 30], "score": 0.9}
                            for k in range(5)]
    for d in (dets, dets_in_crowd):
        np.testing.assert_array_equal(np.asarray(evaluate_boxes(gt, d).raw), pycocotools_stats(gt, d))
    assert evaluate_boxes(gt, dets_in_crowd).as_dict()["AP"] == pytest.approx(1.0)


def test_more_than_100_detections_per_image_are_cut_by_score():
    rng = np.random.default_rng(1)
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    gt = {"images": [_image(1), _image(2)], "categories": cats,
          "annotations": [_ann(k + 1, 1 + k % 2, 1 + k % 2, [20 * k, 10, 18, 25]) for k in range(12)]}
    dets = []
    for image_id in (1, 2):
        for k in range(260):
            x, y = rng.uniform(0, 280, 2)
            dets.append({"image_id": image_id, "category_id": int(rng.integers(1, 3)),
                         "bbox": [float(x), float(y), float(rng.uniform(5, 40)), float(rng.uniform(5, 40))],
                         "score": float(rng.uniform())})
    # true positives, some ranked inside the top 100 and some outside
    for a in gt["annotations"]:
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                     "score": 0.999 if a["id"] % 3 else 0.0001})
    ours = evaluate_boxes(gt, dets)
    np.testing.assert_array_equal(np.asarray(ours.raw), pycocotools_stats(gt, dets))
    assert ours.n_detections == len(dets)


def test_images_without_detections_and_categories_without_ground_truth():
    cats = [{"id": 1, "name": "a"}, {"id": 3, "name": "never_annotated"}]
    gt = {"images": [_image(1), _image(2), _image(3)], "categories": cats,
          "annotations": [_ann(1, 1, 1, [10, 10, 40, 40]), _ann(2, 2, 1, [50, 50, 20, 20]), _ann(3, 3, 1, [0, 0, 100, 100])]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
            {"image_id": 1, "category_id": 3, "bbox": [100, 100, 40, 40], "score": 0.8}]
    ours = evaluate_boxes(gt, dets)
    np.testing.assert_array_equal(np.asarray(ours.raw), pycocotools_stats(gt, dets))
    # restricting to a subset of images also matches
    ours_sub = evaluate_boxes(gt, dets, image_ids=[1, 2])
    np.testing.assert_array_equal(np.asarray(ours_sub.raw), pycocotools_stats(gt, dets, image_ids=[1, 2]))


def test_empty_detections_and_undefined_statistics():
    cats = [{"id": 1, "name": "a"}]
    gt = {"images": [_image(1)], "categories": cats, "annotations": [_ann(1, 1, 1, [10, 10, 40, 40])]}
    ours = evaluate_boxes(gt, [])
    np.testing.assert_array_equal(np.asarray(ours.raw), pycocotools_stats(gt, []))
    # no small and no large ground truth: COCOeval says -1, the named stats say NaN
    named = ours.as_dict()
    assert list(named) == list(STAT_NAMES)
    assert ours.raw[3] == -1 and math.isnan(named["AP_small"]) and math.isnan(named["AP_large"])
    assert named["AP"] == 0.0


def test_bad_input_is_refused():
    gt, dets = conformance_cases()["mixed"]
    with pytest.raises(ValueError, match="ground truth"):
        evaluate_boxes({"images": []}, dets)
    with pytest.raises(ValueError, match="absent"):
        evaluate_boxes(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ValueError, match="backend"):
        evaluate_boxes(gt, dets, backend="nope")


def test_inputs_are_not_modified():
    gt, dets = conformance_cases()["mixed"]
    before = copy.deepcopy((gt, dets))
    evaluate_boxes(gt, dets)
    assert (gt, dets) == before


@pytest.mark.skipif(importlib.util.find_spec("faster_coco_eval") is None, reason="faster-coco-eval is not installed")
@pytest.mark.parametrize("name", list(conformance_cases()))
def test_faster_backend_equals_pycocotools_where_used(name):
    gt, dets = conformance_cases()[name]
    ours = evaluate_boxes(gt, dets, backend="faster-coco-eval")
    if faster_backend_problem() is None:
        assert ours.backend == "faster-coco-eval"
    else:
        assert ours.backend == "pycocotools" and ours.notes
    np.testing.assert_allclose(np.asarray(ours.raw), pycocotools_stats(gt, dets), rtol=0, atol=1e-12)


def test_faster_backend_falls_back_with_reason(monkeypatch):
    import harness.metrics.coco as coco

    monkeypatch.setattr(coco, "_FASTER_CHECK", ["faster-coco-eval is not installed"])
    gt, dets = conformance_cases()["mixed"]
    res = coco.evaluate_boxes(gt, dets, backend="faster-coco-eval")
    assert res.backend == "pycocotools" and "not installed" in res.notes[0]
    assert coco.evaluate_boxes(gt, dets, backend="auto").backend == "pycocotools"
