"""The detection caches (synthetic dataset, trained weights): every corruption is caught and
rebuilt to what a clean build gives, and runs sharing an empty cache train each detector once."""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from harness import artifacts as art
from lock_helpers import json_lines, start_python, wait_for_waiters
from suites.common import detection_data as dd
from suites.common import detectors as dt

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under NumPy 2

TINY = dd.SyntheticSpec(image_size=224, num_train=3, num_val=2, seed=3)
MODEL = dt.DetectorConfig(head="fcos", arch="single", channels=32, head_convs=1)
BUDGET = dt.TrainConfig(steps=2, batch_size=2, warmup_steps=1)


def _images(splits: dict) -> dict:
    return {(name, i): ds.load_image(i) for name, ds in splits.items() for i in range(len(ds))}


def _evaluate(model: torch.nn.Module, val: dd.CocoDataset) -> tuple[list, list]:
    """Detections on the validation images and pycocotools' twelve statistics."""
    from harness.metrics.coco import evaluate_boxes

    results = []
    for k, info in enumerate(val.images):
        det = dt.detect(model, [dt.to_float(val.load_image(k))])[0]
        results += dt.to_coco_results(info["id"], det, val.label_to_cat)
    with contextlib.redirect_stdout(io.StringIO()):
        stats = evaluate_boxes(val.coco, results).as_dict()
    return results, [stats[k] for k in sorted(stats)]


def _same_stats(a: list, b: list) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean build of the tiny dataset and detector, and what they give."""
    root = tmp_path_factory.mktemp("clean")
    splits, data_info = dd.load_synthetic(TINY, root / "data")
    det = dt.trained_detector(MODEL, BUDGET, splits["train"], cache_root=root / "weights")
    assert data_info["cache"] == "built" and det.source == "trained"
    return {
        "root": root, "splits": splits, "images": _images(splits), "det": det,
        "state": {k: v.clone() for k, v in det.model.state_dict().items()},
        "eval": _evaluate(det.model, splits["val"]),
    }


@pytest.fixture
def cache(clean, tmp_path):
    """A private copy of the clean cache: (data folder, weights folder, weights root)."""
    shutil.copytree(clean["root"], tmp_path / "c")
    data = tmp_path / "c" / "data" / f"synthetic-{TINY.key()}"
    weights = Path(tmp_path / "c" / "weights" / Path(clean["det"].weights_path).parent.name)
    return data, weights, tmp_path / "c"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _zero_block(path: Path) -> None:
    with open(path, "r+b") as fh:  # same size and name: only the digest can tell
        fh.seek(path.stat().st_size // 2)
        fh.write(bytes(4096))


WEIGHTS_CORRUPTIONS = {
    "truncated weights": _truncate,
    "garbage weights": lambda p: p.write_bytes(b"\x80\x02garbage" * 100),
    "zeroed block inside weights": _zero_block,
}
DATA_CORRUPTIONS = {
    "truncated annotations": ("annotations/instances_val.json", _truncate, "does not match its checksum"),
    "garbage image": ("images/train/000002.png", lambda p: p.write_bytes(b"not a png"), "does not match its checksum"),
    "missing image": ("images/val/000001.png", Path.unlink, "is missing"),
    "missing COMPLETE marker": ("COMPLETE", Path.unlink, "is missing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(WEIGHTS_CORRUPTIONS))
def test_corrupt_weights_are_detected_and_retrained_to_the_clean_result(clean, cache, kind):
    _, weights, root = cache
    WEIGHTS_CORRUPTIONS[kind](weights / dt.WEIGHTS_FILE)
    assert art.verify_artifact(weights) == f"{dt.WEIGHTS_FILE} does not match its checksum"
    det = dt.trained_detector(MODEL, BUDGET, clean["splits"]["train"], cache_root=root / "weights")
    assert det.source == "trained"
    assert det.info["cache"] == f"rebuilt: {dt.WEIGHTS_FILE} does not match its checksum"
    assert det.info["build_id"] != clean["det"].info["build_id"]
    assert art.verify_artifact(weights) is None
    state = det.model.state_dict()
    assert state.keys() == clean["state"].keys()
    for name, value in clean["state"].items():
        assert torch.equal(state[name], value), name
    results, stats = _evaluate(det.model, clean["splits"]["val"])
    assert results == clean["eval"][0] and _same_stats(stats, clean["eval"][1])
    again = dt.trained_detector(MODEL, BUDGET, clean["splits"]["train"], cache_root=root / "weights")
    assert again.source == "cache" and again.info["cache"] == "reused"


@pytest.mark.parametrize("kind", list(DATA_CORRUPTIONS))
def test_corrupt_dataset_is_detected_and_regenerated_to_the_clean_set(clean, cache, kind):
    data, _, root = cache
    rel, corrupt, why = DATA_CORRUPTIONS[kind]
    corrupt(data / rel)
    assert art.verify_artifact(data) == f"{rel} {why}"
    splits, info = dd.load_synthetic(TINY, root / "data")
    assert info["cache"] == f"rebuilt: {rel} {why}"
    assert art.verify_artifact(data) is None
    for name, ds in clean["splits"].items():
        assert splits[name].coco == ds.coco
        assert splits[name].fingerprint() == ds.fingerprint()
    rebuilt = _images(splits)
    assert rebuilt.keys() == clean["images"].keys()
    for key, image in clean["images"].items():
        assert torch.equal(rebuilt[key], image), key
    # the regenerated set is the one the cached weights were trained on: they are reused
    det = dt.trained_detector(MODEL, BUDGET, splits["train"], cache_root=root / "weights")
    assert det.source == "cache"


def test_folder_of_the_old_layout_is_rebuilt(clean, tmp_path):
    """A set written before manifests existed (COMPLETE marker, no manifest) is regenerated."""
    old = tmp_path / f"synthetic-{TINY.key()}"
    dd.write_synthetic(TINY, old)
    (old / "COMPLETE").write_text("{}")
    splits, info = dd.load_synthetic(TINY, tmp_path)
    assert info["cache"] == "rebuilt: no manifest"
    assert splits["val"].coco == clean["splits"]["val"].coco


# --------------------------------------------------------------------------- two runs, one build
RUN = textwrap.dedent("""
    import json
    from suites.common import detection_data as dd, detectors as dt

    spec = dd.SyntheticSpec(image_size=224, num_train=3, num_val=2, seed=3)
    splits, info = dd.load_synthetic(spec)
    print(json.dumps({"artifact": "data", "cache": info["cache"], "build_id": info["build_id"]}), flush=True)
    for arch in ("single", "fpn"):
        cfg = dt.DetectorConfig(head="fcos", arch=arch, channels=32, head_convs=1)
        det = dt.trained_detector(cfg, dt.TrainConfig(steps=2, batch_size=2, warmup_steps=1), splits["train"])
        print(json.dumps({"artifact": arch, "cache": det.info["cache"], "build_id": det.info["build_id"],
                          "source": det.source}), flush=True)
""")


@pytest.mark.slow
def test_two_runs_on_an_empty_cache_build_each_artifact_once(clean, tmp_path):
    """Both runs find every artifact missing (each waits on its build lock); one builds it."""
    cache = tmp_path / "cache"
    fingerprint = clean["splits"]["train"].fingerprint()
    folders = {"data": cache / "detection" / "data" / f"synthetic-{TINY.key()}"}
    for arch in ("single", "fpn"):
        cfg = dt.DetectorConfig(head="fcos", arch=arch, channels=32, head_convs=1)
        key = dt.weights_key(cfg, BUDGET, f"{fingerprint}@None")
        folders[arch] = cache / "detection" / "weights" / f"fcos-{arch}-{key}"
    held = {}
    with contextlib.ExitStack() as stack:
        for name, folder in folders.items():
            folder.parent.mkdir(parents=True, exist_ok=True)
            held[name] = stack.enter_context(contextlib.ExitStack())
            held[name].enter_context(art.artifact_lock(folder.parent / f".{folder.name}.lock"))
        procs = start_python(RUN, 2, env={"HARNESS_CACHE_DIR": str(cache)})
        stack.callback(lambda: [p.kill() for p in procs if p.poll() is None and held])
        for name, folder in folders.items():  # both runs go on only once both wait here
            wait_for_waiters(folder.parent / f".{folder.name}.lock", 2, procs)
            held.pop(name).close()
    runs = json_lines(procs)
    for name, folder in folders.items():
        seen = [line for lines in runs for line in lines if line["artifact"] == name]
        assert sorted(line["cache"] for line in seen) == ["built", "reused"], seen
        assert {line["build_id"] for line in seen} == {art.read_manifest(folder)["build_id"]}
        assert art.verify_artifact(folder) is None
    trained = [line["artifact"] for lines in runs for line in lines if line.get("source") == "trained"]
    assert sorted(trained) == ["fpn", "single"]  # each detector trained once, by one of the runs
    for root in {f.parent for f in folders.values()}:  # no lock file or temporary folder left
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")]
