"""Detection data in COCO format: a deterministic multi-scale synthetic set, or a real folder.

The synthetic set answers the FPN-versus-pyramid question without downloads: images of
several object classes (each a shape with its own hue band) whose mask areas fall evenly in
COCO's small (< 32^2), medium (32^2 to 96^2) and large (>= 96^2) ranges, on a cluttered
background (a colour gradient, noise, unannotated lines and blobs), with partial occlusion.
It is generated from a seed, written once under ``harness.paths.cache_dir`` and reused
(checked against its manifest of SHA-256 digests on every load, regenerated when corrupt).

A real COCO-format folder (images plus ``instances_*.json``, such as COCO val2017) is read
by :func:`load_coco_folder`.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

GENERATOR_VERSION = 1  # bump when the generator's output changes
CLASSES = ("rectangle", "ellipse", "triangle", "cross")
SMALL_MAX, MEDIUM_MAX = 32, 96  # COCO's area-range boundaries (sqrt of the area), pixels
MIN_OBJECT_SIDE = 8  # sqrt of the smallest mask area drawn
MAX_OCCLUDED = 0.35  # later objects may hide at most this fraction of an earlier one
MIN_IMAGE_SIZE = 224  # below this, large objects (area >= 96^2) do not fit well


@dataclass(frozen=True)
class SyntheticSpec:
    """What the synthetic set looks like; its hash names the cache folder."""

    image_size: int = 256
    num_train: int = 256
    num_val: int = 64
    objects_per_image: tuple[int, int] = (4, 10)
    clutter: int = 12  # unannotated distractors per image
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < MIN_IMAGE_SIZE:
            raise ValueError(
                f"image_size {self.image_size} is too small for COCO's large range (objects >= 96^2); "
                f"use at least {MIN_IMAGE_SIZE}"
            )
        lo, hi = self.objects_per_image
        if not 1 <= lo <= hi:
            raise ValueError(f"objects_per_image must be (low, high) with 1 <= low <= high, not {self.objects_per_image}")
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError("num_train and num_val must be at least 1")

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------- drawing
def _shape_mask(cls: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of one object of class ``cls`` filling a w x h box."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    if cls == "rectangle":
        d.rectangle([0, 0, w - 1, h - 1], fill=1)
    elif cls == "ellipse":
        d.ellipse([0, 0, w - 1, h - 1], fill=1)
    elif cls == "triangle":
        apex = float(rng.uniform(0.2, 0.8)) * (w - 1)
        d.polygon([(apex, 0), (0, h - 1), (w - 1, h - 1)], fill=1)
    elif cls == "cross":
        tw, th = max(2, int(round(w * 0.34))), max(2, int(round(h * 0.34)))
        x0, y0 = (w - tw) // 2, (h - th) // 2
        d.rectangle([x0, 0, x0 + tw - 1, h - 1], fill=1)
        d.rectangle([0, y0, w - 1, y0 + th - 1], fill=1)
    else:
        raise ValueError(cls)
    return np.asarray(img, dtype=bool)


_FILL = {"rectangle": 1.0, "ellipse": np.pi / 4, "triangle": 0.5, "cross": 0.56}


def _class_colour(label: int, rng: np.random.Generator) -> np.ndarray:
    hue = (label / len(CLASSES) + rng.uniform(-0.06, 0.06)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return np.array(rgb, dtype=np.float32) * 255.0


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1, c2 = (rng.uniform(40, 200, size=3).astype(np.float32) for _ in range(3))
    img = c0 + np.multiply.outer(xx, c1 - c0) + np.multiply.outer(yy, c2 - c0) * 0.5
    img += rng.normal(0, 12, size=img.shape).astype(np.float32)
    return img


def _clutter(img: np.ndarray, count: int, rng: np.random.Generator) -> None:
    """Unannotated distractors: grey-ish lines and low-saturation blobs."""
    from PIL import Image, ImageDraw

    size = img.shape[0]
    layer = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(layer)
    colours = []
    for k in range(count):
        tone = k + 1
        colours.append(rng.uniform(60, 220) * np.array([1.0, 1.0, 1.0]) + rng.normal(0, 15, size=3))
        if rng.random() < 0.6:
            pts = [tuple(rng.uniform(0, size, size=2)) for _ in range(2)]
            d.line(pts, fill=tone, width=int(rng.integers(1, 4)))
        else:
            r = rng.uniform(3, 14)
            cx, cy = rng.uniform(0, size, size=2)
            d.ellipse([cx - r, cy - r * rng.uniform(0.3, 1.0), cx + r, cy + r], fill=tone)
    ids = np.asarray(layer)
    for k, colour in enumerate(colours):
        img[ids == k + 1] = colour


def _object_box(band: int, cls: str, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Box width and height whose filled mask area lies in COCO area band 0, 1 or 2."""
    hi_large = min(0.6 * size, 200.0)
    lo, hi = [(MIN_OBJECT_SIDE, SMALL_MAX - 2), (SMALL_MAX + 2, MEDIUM_MAX - 6), (MEDIUM_MAX + 12, hi_large)][band]
    side = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    box_area = side * side / _FILL[cls]
    w = int(round(np.sqrt(box_area * aspect)))
    h = int(round(np.sqrt(box_area / aspect)))
    limit = int(0.9 * size)
    return max(3, min(w, limit)), max(3, min(h, limit))


def render_image(spec: SyntheticSpec, split: str, index: int) -> tuple[np.ndarray, list[dict]]:
    """One image (uint8 HxWx3) and its objects: label, COCO box, visible area and mask.

    Seeded by (spec.seed, split, index) only, so any image can be regenerated on its own.
    Larger objects are drawn first; a placement that would hide more than half of an
    earlier object is retried elsewhere or dropped.
    """
    split_code = {"train": 0, "val": 1}[split]
    rng = np.random.default_rng([spec.seed, split_code, index])
    size = spec.image_size
    img = _background(size, rng)
    _clutter(img, spec.clutter, rng)
    n = int(rng.integers(spec.objects_per_image[0], spec.objects_per_image[1] + 1))
    wanted = []
    for _ in range(n):
        label = int(rng.integers(len(CLASSES)))
        band = int(rng.integers(3))
        w, h = _object_box(band, CLASSES[label], size, rng)
        wanted.append((w * h, label, w, h))
    wanted.sort(key=lambda t: -t[0])
    owner = np.zeros((size, size), dtype=np.int32)  # 0 background, k + 1 object k
    drawn: list[dict] = []
    for _, label, w, h in wanted:
        mask = _shape_mask(CLASSES[label], w, h, rng)
        for _try in range(8):
            x0 = int(rng.integers(0, size - w + 1))
            y0 = int(rng.integers(0, size - h + 1))
            region = owner[y0 : y0 + h, x0 : x0 + w]
            hidden = np.bincount(region[mask], minlength=len(drawn) + 1)[1:]
            if all(d["visible"] - hidden[k] >= (1 - MAX_OCCLUDED) * d["full_area"] for k, d in enumerate(drawn)):
                break
        else:
            continue
        region[mask] = len(drawn) + 1
        colour = _class_colour(label, rng)
        texture = rng.normal(0, 10, size=(h, w, 1)).astype(np.float32)
        patch = img[y0 : y0 + h, x0 : x0 + w]
        patch[mask] = np.clip(colour + texture[mask], 0, 255)
        for k, d in enumerate(drawn):
            d["visible"] -= int(hidden[k])
        drawn.append({"label": label, "full_area": int(mask.sum()), "visible": int(mask.sum())})
    objects = []
    for k, obj in enumerate(drawn):
        visible = owner == k + 1
        ys, xs = np.nonzero(visible)
        if len(xs) == 0:
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append({"label": obj["label"], "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": int(visible.sum()), "mask": visible})
    return np.clip(img, 0, 255).astype(np.uint8), objects


def _write_split(spec: SyntheticSpec, split: str, root: Path) -> dict:
    from PIL import Image
    from pycocotools import mask as mask_utils

    count = spec.num_train if split == "train" else spec.num_val
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, objects = render_image(spec, split, i)
        image_id = i + 1
        name = f"{image_id:06d}.png"
        Image.fromarray(img).save(root / "images" / split / name)
        images.append({"id": image_id, "file_name": name, "width": spec.image_size, "height": spec.image_size})
        for obj in objects:
            rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": obj["label"] + 1,
                "bbox": [float(v) for v in obj["bbox"]], "area": float(obj["area"]), "iscrowd": 0,
                "segmentation": rle,
            })
    return {
        "info": {"description": "synthetic multi-scale shapes", "spec": asdict(spec), "version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(CLASSES)],
    }


def write_synthetic(spec: SyntheticSpec, root: Path) -> Path:
    """Generate the set into ``root`` (train and val images plus instances JSON files)."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        data = _write_split(spec, split, root)
        with open(root / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump(data, f)
    return root


def load_synthetic(spec: SyntheticSpec, cache_root: Path | None = None) -> tuple[dict[str, "CocoDataset"], dict]:
    """The synthetic set for ``spec`` and where it came from: generated once into the cache.

    The folder (images, annotations and a ``COMPLETE`` marker) is a :mod:`harness.artifacts`
    artifact: written atomically with a manifest of SHA-256 digests, checked on every load
    (every image and annotation file) and regenerated when anything is missing or altered.
    The info says whether the cache was ``reused``, ``built`` or ``rebuilt: <why>``.
    """
    from harness.artifacts import cached_artifact
    from harness.paths import cache_dir

    def build(folder: Path) -> dict:
        write_synthetic(spec, folder)
        (folder / "COMPLETE").write_text(json.dumps(asdict(spec)))
        return {"num_train": spec.num_train, "num_val": spec.num_val, "generator_version": GENERATOR_VERSION}

    root = Path(cache_root) if cache_root is not None else cache_dir("detection", "data")
    return cached_artifact("synthetic", {**asdict(spec), "version": GENERATOR_VERSION}, build, _load_complete,
                           root=root, name=f"synthetic-{spec.key()}")


def _load_complete(folder: Path) -> dict[str, "CocoDataset"]:
    if not (folder / "COMPLETE").is_file():
        raise FileNotFoundError(f"{folder} has no COMPLETE marker")
    return load_coco_folder(folder)


def synthetic_dataset(spec: SyntheticSpec, cache_root: Path | None = None) -> dict[str, "CocoDataset"]:
    """The synthetic set for ``spec`` by split name, from the checked cache (see :func:`load_synthetic`)."""
    return load_synthetic(spec, cache_root)[0]


# --------------------------------------------------------------------------- reading COCO
class CocoDataset:
    """Images plus one COCO instances dict; labels are 1..K in category-id order."""

    def __init__(self, coco: Mapping[str, Any], image_dir: Path, name: str = ""):
        self.coco = dict(coco)
        self.image_dir = Path(image_dir)
        self.name = name
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.categories = sorted(self.coco["categories"], key=lambda c: c["id"])
        self.cat_to_label = {c["id"]: k + 1 for k, c in enumerate(self.categories)}
        self.label_to_cat = {k: c for c, k in self.cat_to_label.items()}
        self._anns: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in self.coco["annotations"]:
            if ann["image_id"] in self._anns:
                self._anns[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def image_path(self, i: int) -> Path:
        return self.image_dir / self.images[i]["file_name"]

    def load_image(self, i: int):
        """Image ``i`` as a uint8 tensor (3, H, W), RGB."""
        import torch
        from PIL import Image

        with Image.open(self.image_path(i)) as im:
            arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    def annotations(self, i: int) -> list[dict]:
        return self._anns[self.images[i]["id"]]

    def target(self, i: int) -> dict:
        """Training target of image ``i``: boxes (x0, y0, x1, y1) and labels, crowds left out."""
        import torch

        anns = [a for a in self.annotations(i) if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        return {"boxes": boxes, "labels": labels}

    def subset(self, indices) -> "CocoDataset":
        """The images at ``indices`` with their annotations (all categories kept)."""
        keep = [self.images[i] for i in indices]
        ids = {im["id"] for im in keep}
        coco = {**self.coco, "images": keep, "annotations": [a for a in self.coco["annotations"] if a["image_id"] in ids]}
        return CocoDataset(coco, self.image_dir, self.name)

    def fingerprint(self) -> str:
        """Hash of the annotations and image names (the key of weights trained on this set)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.images, self.categories], sort_keys=True, default=str).encode())
        h.update(json.dumps(sorted(self.coco["annotations"], key=lambda a: a.get("id", 0)), sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]


def _image_dir_for(root: Path, split: str, file_name: str) -> Path:
    for cand in (root / "images" / split, root / split, root / "images", root, root.parent / split):
        if (cand / file_name).exists():
            return cand
    raise FileNotFoundError(
        f"images of split {split!r} (e.g. {file_name!r}) not found under {root}; expected images/{split}/ or {split}/"
    )


def load_coco_folder(path: str | os.PathLike) -> dict[str, CocoDataset]:
    """Every split of a COCO-format folder, by name (``instances_val2017.json`` -> ``val2017``).

    ``path`` is a folder holding ``annotations/instances_*.json`` (or those files at its top)
    with images under ``images/<split>/``, ``<split>/`` or ``images/``; or one instances JSON
    file, whose images are looked up beside it the same way.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"COCO dataset path {path} does not exist")
    if path.is_file():
        files, root = [path], path.parent.parent if path.parent.name == "annotations" else path.parent
    else:
        files = sorted((path / "annotations").glob("instances_*.json")) or sorted(path.glob("instances_*.json"))
        root = path
    if not files:
        raise FileNotFoundError(f"no instances_*.json under {path} or {path / 'annotations'}")
    out: dict[str, CocoDataset] = {}
    for f in files:
        split = f.stem[len("instances_"):] if f.stem.startswith("instances_") else f.stem
        with open(f) as fh:
            coco = json.load(fh)
        missing = {"images", "annotations", "categories"} - set(coco)
        if missing:
            raise ValueError(f"{f} is not a COCO instances file: it lacks {', '.join(sorted(missing))}")
        if not coco["images"]:
            raise ValueError(f"{f} lists no images")
        image_dir = _image_dir_for(root, split, coco["images"][0]["file_name"])
        out[split] = CocoDataset(coco, image_dir, name=split)
    return out


def train_val(splits: Mapping[str, CocoDataset], seed: int = 0, val_fraction: float = 0.2) -> tuple[CocoDataset, CocoDataset]:
    """The (train, val) pair of a loaded folder.

    Splits whose names start with ``train`` and ``val`` are used as they are; a folder with
    a single split is divided at random from ``seed`` (``val_fraction`` of the images).
    """
    train = next((d for n, d in splits.items() if n.startswith("train")), None)
    val = next((d for n, d in splits.items() if n.startswith("val")), None)
    if train is not None and val is not None:
        return train, val
    only = val or train or next(iter(splits.values()))
    if len(only) < 2:
        raise ValueError(f"split {only.name!r} has {len(only)} image(s); at least 2 are needed to split train/val")
    order = np.random.default_rng(seed).permutation(len(only))
    n_val = min(len(only) - 1, max(1, int(round(val_fraction * len(only)))))
    return only.subset(sorted(order[n_val:])), only.subset(sorted(order[:n_val]))


def area_histogram(dataset: CocoDataset) -> dict[str, int]:
    """Number of non-crowd objects in COCO's small, medium and large ranges."""
    counts = {"small": 0, "medium": 0, "large": 0}
    for a in dataset.coco["annotations"]:
        if a.get("iscrowd", 0):
            continue
        area = a["area"]
        key = "small" if area < SMALL_MAX**2 else "medium" if area < MEDIUM_MAX**2 else "large"
        counts[key] += 1
    return counts
