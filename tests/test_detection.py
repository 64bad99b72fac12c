"""The detection suite's data, detectors, pyramid merge and an end-to-end run on tiny settings."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from suites.common import detection_data as dd
from suites.common import detectors as dt

TINY = dd.SyntheticSpec(image_size=224, num_train=3, num_val=2, seed=3)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Nothing in these tests may fetch weights."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# --------------------------------------------------------------------------- synthetic data
def _read(root: Path) -> tuple[dict, dict]:
    from PIL import Image

    out_json, out_img = {}, {}
    for split in ("train", "val"):
        out_json[split] = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        for f in sorted((root / "images" / split).iterdir()):
            out_img[(split, f.name)] = np.asarray(Image.open(f))
    return out_json, out_img


def test_generator_is_deterministic(tmp_path):
    a = _read(dd.write_synthetic(TINY, tmp_path / "a"))
    b = _read(dd.write_synthetic(TINY, tmp_path / "b"))
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k])
    other = dd.SyntheticSpec(image_size=224, num_train=3, num_val=2, seed=4)
    c = _read(dd.write_synthetic(other, tmp_path / "c"))
    assert c[0]["train"]["annotations"] != a[0]["train"]["annotations"]
    assert TINY.key() != other.key()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' mask decoding under NumPy 2
def test_annotations_are_valid_coco(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    spec = dd.SyntheticSpec(image_size=256, num_train=10, num_val=2, seed=0)
    root = dd.write_synthetic(spec, tmp_path)
    for split in ("train", "val"):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == (10 if split == "train" else 2)
        assert sorted(coco.getCatIds()) == [1, 2, 3, 4]
        ids = [a["id"] for a in coco.dataset["annotations"]]
        assert len(ids) == len(set(ids))
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert 0 < ann["area"] <= w * h and ann["iscrowd"] == 0
            m = coco.annToMask(ann)
            assert m.sum() == ann["area"]
            assert list(mask_utils.toBbox(ann["segmentation"])) == ann["bbox"]
    counts = dd.area_histogram(dd.load_coco_folder(root)["train"])
    assert min(counts.values()) >= 8, counts  # all three COCO area ranges are populated


def test_image_size_too_small_is_refused():
    with pytest.raises(ValueError, match="too small"):
        dd.SyntheticSpec(image_size=64)


def test_synthetic_set_is_cached_and_reused(tmp_path, monkeypatch):
    first = dd.synthetic_dataset(TINY, tmp_path)
    assert len(first["train"]) == 3 and len(first["val"]) == 2

    def fail(*a, **k):
        raise AssertionError("regenerated")

    monkeypatch.setattr(dd, "write_synthetic", fail)
    second = dd.synthetic_dataset(TINY, tmp_path)
    assert second["val"].coco == first["val"].coco
    assert [p.name for p in tmp_path.iterdir()] == [f"synthetic-{TINY.key()}"]


# --------------------------------------------------------------------------- real COCO folder
def _write_tiny_coco(root: Path, layout: str) -> Path:
    from PIL import Image

    img_dir = root / "images" / "val2017" if layout == "images/split" else root / "val2017"
    img_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate([(64, 48), (50, 70), (40, 40)]):
        name = f"{i + 139:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / name)
        images.append({"id": i + 139, "file_name": name, "width": w, "height": h})
    anns = [
        {"id": 10, "image_id": 139, "category_id": 5, "bbox": [1, 2, 10, 20], "area": 200.0, "iscrowd": 0},
        {"id": 11, "image_id": 139, "category_id": 90, "bbox": [20, 5, 30, 30], "area": 900.0, "iscrowd": 1},
        {"id": 12, "image_id": 140, "category_id": 90, "bbox": [0, 0, 5, 5], "area": 25.0, "iscrowd": 0},
    ]
    cats = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]
    (root / "annotations").mkdir()
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.mark.parametrize("layout", ["images/split", "split"])
def test_real_coco_folder_is_read(tmp_path, layout):
    json_path = _write_tiny_coco(tmp_path, layout)
    splits = dd.load_coco_folder(tmp_path)
    assert list(splits) == ["val2017"]
    ds = splits["val2017"]
    assert len(ds) == 3 and ds.num_classes == 3
    assert ds.cat_to_label == {1: 1, 5: 2, 90: 3}
    img = ds.load_image(1)
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 70, 50)
    target = ds.target(0)  # the crowd region is not a training target
    assert target["boxes"].tolist() == [[1.0, 2.0, 11.0, 22.0]] and target["labels"].tolist() == [2]
    assert ds.target(2)["boxes"].shape == (0, 4)
    # a path to the JSON file works as well
    assert dd.load_coco_folder(json_path)["val2017"].coco == ds.coco
    # a single split is divided deterministically
    train, val = dd.train_val(splits, seed=0, val_fraction=0.34)
    train2, val2 = dd.train_val(splits, seed=0, val_fraction=0.34)
    assert len(train) == 2 and len(val) == 1
    assert [im["id"] for im in val.images] == [im["id"] for im in val2.images]
    assert {im["id"] for im in train.images} | {im["id"] for im in val.images} == {139, 140, 141}


def test_bad_coco_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dd.load_coco_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="instances_"):
        dd.load_coco_folder(tmp_path)
    _write_tiny_coco(tmp_path, "split")
    for f in (tmp_path / "val2017").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="not found"):
        dd.load_coco_folder(tmp_path)


# --------------------------------------------------------------------------- pyramid merge
class FakeDetector:
    """Returns fixed objects given in original-image coordinates, as seen at the input's scale."""

    def __init__(self, orig_hw, objects):
        self.h, self.w = orig_hw
        self.objects = objects  # list of (box xyxy in original coords, score, label)
        self.seen = []

    def __call__(self, images):
        (img,) = images
        nh, nw = img.shape[-2:]
        self.seen.append((nh, nw))
        sx, sy = nw / self.w, nh / self.h
        boxes = torch.tensor([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b, _, _ in self.objects],
                             dtype=torch.float32).reshape(-1, 4)
        return [{"boxes": boxes, "scores": torch.tensor([s for _, s, _ in self.objects], dtype=torch.float32),
                 "labels": torch.tensor([l for _, _, l in self.objects], dtype=torch.int64)}]


def test_pyramid_maps_boxes_back_to_original_coordinates():
    h, w = 77, 101  # odd sizes: scaled sides are rounded, so x and y factors differ
    box = [10.0, 20.0, 60.5, 70.25]
    fake = FakeDetector((h, w), [(box, 0.9, 1)])
    image = torch.rand(3, h, w)
    for s in (0.5, 0.75, 1.0, 1.5, 2.0, 3.3):
        out = dt.pyramid_detect(fake, image, [s])
        nh, nw = fake.seen[-1]
        assert (nh, nw) == (max(1, round(h * s)), max(1, round(w * s)))
        torch.testing.assert_close(out["boxes"], torch.tensor([box]), rtol=0, atol=1e-4)
    # several scales: the same object everywhere merges to one box at its best score
    out = dt.pyramid_detect(fake, image, [0.5, 1.0, 2.0])
    assert out["boxes"].shape == (1, 4) and out["scores"].tolist() == pytest.approx([0.9])
    torch.testing.assert_close(out["boxes"], torch.tensor([box]), rtol=0, atol=1e-4)


def test_resize_factors_invert_exactly():
    image = torch.rand(3, 77, 101)
    for s in (0.31, 0.5, 1.0, 2.0):
        scaled, (fx, fy) = dt.resize_image(image, s)
        assert scaled.shape[-1] * fx == pytest.approx(101) and scaled.shape[-2] * fy == pytest.approx(77)


def test_merge_keeps_classes_apart_and_caps_count():
    a = {"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]]), "scores": torch.tensor([0.9, 0.8]),
         "labels": torch.tensor([1, 2])}
    b = {"boxes": torch.tensor([[0.5, 0, 10, 10], [50, 50, 60, 60]]), "scores": torch.tensor([0.95, 0.1]),
         "labels": torch.tensor([1, 1])}
    out = dt.merge_detections([a, b], iou=0.5, max_dets=100)
    assert out["scores"].tolist() == pytest.approx([0.95, 0.8, 0.1])
    assert out["labels"].tolist() == [1, 2, 1]
    assert dt.merge_detections([a, b], iou=0.5, max_dets=2)["scores"].shape == (2,)


def test_boxes_clipped_to_the_original_image():
    fake = FakeDetector((40, 40), [([-5.0, -3.0, 45.0, 30.0], 0.7, 1)])
    out = dt.pyramid_detect(fake, torch.rand(3, 40, 40), [2.0])
    assert out["boxes"].tolist() == [[0.0, 0.0, 40.0, 30.0]]


# --------------------------------------------------------------------------- detectors
@pytest.mark.parametrize("head", dt.HEADS)
@pytest.mark.parametrize("arch", dt.ARCHS)
def test_every_detector_builds_and_detects(head, arch):
    torch.manual_seed(0)
    cfg = dt.DetectorConfig(head=head, arch=arch, channels=32, num_classes=3)
    model = dt.build_detector(cfg).eval()
    img = torch.rand(3, 128, 160)  # P7 of FCOS/RetinaNet is 1x2 here
    out = dt.detect(model, [img])[0]
    assert set(out) >= {"boxes", "scores", "labels"} and out["boxes"].shape[1] == 4
    assert out["boxes"].shape[0] <= cfg.detections_per_img
    if len(out["boxes"]):
        assert float(out["boxes"][:, 2].max()) <= 160 and float(out["boxes"][:, 3].max()) <= 128
    assert 0 < dt.nms_threshold(model) < 1
    if arch == "single":
        feats = model.backbone(torch.rand(1, 3, 128, 160))
        assert list(feats) == ["0"] and feats["0"].shape[-2:] == (8, 10)  # stride 16
    n_levels = len(model.backbone(torch.rand(1, 3, 128, 160)))
    assert n_levels == (1 if arch == "single" else 5)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="head"):
        dt.DetectorConfig(head="yolo")
    with pytest.raises(ValueError, match="arch"):
        dt.DetectorConfig(arch="pyramid")
    with pytest.raises(ValueError, match="multiple of 32"):
        dt.DetectorConfig(channels=48)


@pytest.mark.slow
def test_training_is_cached_by_config_and_checkpoints_load(tmp_path):
    data = dd.synthetic_dataset(TINY, tmp_path / "data")["train"]
    cfg = dt.DetectorConfig(head="fcos", arch="single", channels=32, head_convs=1)
    budget = dt.TrainConfig(steps=2, batch_size=2, warmup_steps=1)
    first = dt.trained_detector(cfg, budget, data, cache_root=tmp_path / "w")
    assert first.source == "trained" and first.train_time_s > 0 and not first.model.training
    again = dt.trained_detector(cfg, budget, data, cache_root=tmp_path / "w")
    assert again.source == "cache" and again.train_time_s == first.train_time_s
    for (k, v), (k2, v2) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    other = dt.trained_detector(cfg, dt.TrainConfig(steps=3, batch_size=2, warmup_steps=1), data,
                                cache_root=tmp_path / "w")
    assert other.source == "trained" and other.weights_path != first.weights_path
    # a user checkpoint replaces training; one of another config is refused clearly
    ckpt = tmp_path / "mine.pt"
    torch.save(first.model.state_dict(), ckpt)
    loaded = dt.trained_detector(cfg, budget, data, checkpoint=ckpt)
    assert loaded.source == "checkpoint" and np.isnan(loaded.train_time_s)
    with pytest.raises(ValueError, match="does not fit"):
        dt.trained_detector(dt.DetectorConfig(head="fcos", arch="fpn", channels=32, head_convs=1), budget, data,
                            checkpoint=ckpt)


# --------------------------------------------------------------------------- the suite
@pytest.mark.slow
def test_suite_runs_every_variant_end_to_end(tmp_path, monkeypatch):
    from harness.plan import plan_suite
    from harness.run.executors import CaseExecutor
    from harness.metrics.coco import STAT_NAMES
    from suites.detection import Detection

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    Detection.validate()
    overrides = {"train_images": ["4"], "val_images": ["2"], "train_steps": ["2"], "batch": ["2"],
                 "channels": ["32"], "scales": ["0.75/1"]}
    cases = plan_suite(Detection, "quick", "cpu", overrides=overrides)
    assert [c.variant for c in cases] == ["single_scale", "image_pyramid", "fpn", "fpn_pyramid"]
    fast = dict(warmup_s=0.0, min_warmup=0, budget_s=0.0, min_runs=1, max_runs=1)
    cases = [dataclasses.replace(c, timing=c.timing.replace(**fast)) for c in cases]
    executor = CaseExecutor({"detection": Detection})
    records = [executor.run(c) for c in cases]
    for r in records:
        assert r.status == "ok", (r.variant, r.reason, r.info.get("traceback"))
        for name in (*STAT_NAMES, "latency", "peak_memory", "train_time"):
            assert name in r.metrics, (r.variant, name)
        ap = r.metrics["AP"].value
        assert np.isnan(ap) or 0.0 <= ap <= 1.0
        assert r.metrics["AP"].extra["n_images"] == 2
    # the pyramid variants reuse the single-level and FPN models trained once
    assert records[1].info["weights"] == records[0].info["weights"]
    assert records[3].info["weights"] == records[2].info["weights"]
    assert records[0].info["weights"] != records[2].info["weights"]
    assert len(list((tmp_path / "detection" / "weights").glob(f"*/{dt.WEIGHTS_FILE}"))) == 2


def test_scales_param_is_checked():
    from suites.detection import parse_scales

    assert parse_scales("0.5/1/2") == (0.5, 1.0, 2.0)
    for bad in ("", "0/1", "a/b", "-1"):
        with pytest.raises(ValueError):
            parse_scales(bad)
