"""Fingerprint of where a run happened: git, host, CPU, threads, Python, torch, CUDA, GPU, and the
numeric precision state in force (TF32, cuDNN autotuning and determinism, SDPA backends)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from ..paths import PROJECT_ROOT

from .peaks import cpu_info, cpu_model
from .telemetry import cuda_identity, gpu_state



def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(cwd: Path = PROJECT_ROOT) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None}
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {
        "commit": commit,
        "dirty": bool(status),
        "branch": _git("rev-parse", "--abbrev-ref", "HEAD", cwd=cwd),
    }


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'. Validates the name."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but no CUDA device is available")
        return device
    raise ValueError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)")


def _read(get) -> Any:
    try:
        with warnings.catch_warnings():  # torch deprecates some of these flags; reading is harmless
            warnings.simplefilter("ignore")
            return get()
    except Exception:
        return None


def precision_state() -> dict[str, Any]:
    """The precision settings in force: fp32 matmul/conv precision (torch >= 2.9 names, and the
    older allow_tf32 flags), float32_matmul_precision, reduced-precision reductions, cuDNN
    benchmark/deterministic, deterministic algorithms, and which SDPA backends are enabled.
    A setting this torch does not have is absent."""
    import torch

    b = torch.backends
    probes = {
        "float32_matmul_precision": torch.get_float32_matmul_precision,
        "fp32_precision": lambda: b.fp32_precision,
        "cuda_matmul_fp32_precision": lambda: b.cuda.matmul.fp32_precision,
        "cudnn_conv_fp32_precision": lambda: b.cudnn.conv.fp32_precision,
        "cudnn_rnn_fp32_precision": lambda: b.cudnn.rnn.fp32_precision,
        "mkldnn_matmul_fp32_precision": lambda: b.mkldnn.matmul.fp32_precision,
        "cuda_matmul_allow_tf32": lambda: b.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": lambda: b.cudnn.allow_tf32,
        "cuda_matmul_allow_fp16_reduced_precision_reduction":
            lambda: b.cuda.matmul.allow_fp16_reduced_precision_reduction,
        "cuda_matmul_allow_bf16_reduced_precision_reduction":
            lambda: b.cuda.matmul.allow_bf16_reduced_precision_reduction,
        "cudnn_enabled": lambda: b.cudnn.enabled,
        "cudnn_benchmark": lambda: b.cudnn.benchmark,
        "cudnn_deterministic": lambda: b.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled,
        "sdpa_flash_enabled": lambda: b.cuda.flash_sdp_enabled(),
        "sdpa_mem_efficient_enabled": lambda: b.cuda.mem_efficient_sdp_enabled(),
        "sdpa_cudnn_enabled": lambda: b.cuda.cudnn_sdp_enabled(),
        "sdpa_math_enabled": lambda: b.cuda.math_sdp_enabled(),
    }
    out = {}
    for key, get in probes.items():
        value = _read(get)
        if value is not None:
            out[key] = value if isinstance(value, (bool, int, float)) else str(value)
    return out


# Distributions whose versions a run records (key: ``<module name>_version``).
VERSIONED_PACKAGES = {
    "torchvision": "torchvision",
    "numpy": "numpy",
    "pandas": "pandas",
    "diffusers": "diffusers",
    "torch_fidelity": "torch-fidelity",
    "pycocotools": "pycocotools",
}


def package_versions() -> dict[str, str | None]:
    """Installed versions from the packages' metadata (importlib.metadata): nothing is imported."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for key, dist in VERSIONED_PACKAGES.items():
        try:
            out[f"{key}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[f"{key}_version"] = None
    return out


def fingerprint(device: str = "cpu") -> dict[str, Any]:
    """Everything needed to say where numbers were measured."""
    import torch

    cpu = cpu_info()
    env: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(cpu),
        "cpu_vendor": cpu.get("vendor_id_raw"),
        "cpu_flags": cpu.get("flags"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device,
        "device_name": "cpu",
        "precision": precision_state(),
    }
    env.update(package_versions())
    if device.startswith("cuda"):
        dev = torch.device(device)
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        env.update(
            {
                "device_name": props.name,
                "gpu_name": props.name,
                "gpu_memory_bytes": props.total_memory,
                "gpu_capability": f"{props.major}.{props.minor}",
                "gpu_sm_count": props.multi_processor_count,
                "gpu": gpu_state(idx),
                "gpu_identity": _read(lambda: cuda_identity(idx)),
            }
        )
        env["driver"] = env["gpu"].get("driver")
    else:
        env["device_name"] = env["cpu"]
    return env


def merge_node(env: dict[str, Any], node_id: str, node_env: dict[str, Any], where: dict[str, Any]) -> dict[str, Any]:
    """A run's environment with one more node (of a sweep spread over machines) folded in.

    ``env["nodes"]`` maps node id -> that node's fingerprint plus the GPUs cases ran on there
    (``gpus``: UUID or ``CUDA_VISIBLE_DEVICES`` -> name). The run's ``device_name`` (and
    ``gpu_name`` for CUDA runs) names the one device every case ran on, or, when they differ,
    ``mixed: A, B`` with ``devices_differ`` set, so compare and report say so.
    """
    env = dict(env)
    nodes = dict(env.get("nodes") or {})
    node = dict(nodes.get(node_id) or {k: v for k, v in node_env.items() if k != "nodes"})
    node.update(host=where.get("host", node.get("host")), node_ip=where.get("node_ip"))
    gpus = dict(node.get("gpus") or {})
    slot = where.get("gpu_uuid") or where.get("cuda_visible_devices")
    if slot is not None:
        gpus[str(slot)] = where.get("gpu_name") or node_env.get("device_name")
    node["gpus"] = gpus
    nodes[node_id] = node
    env["nodes"] = nodes
    cuda = str(env.get("device", "")).startswith("cuda")
    names = sorted({str(n) for nd in nodes.values() for n in (
        [g for g in nd["gpus"].values() if g] if cuda else [nd.get("device_name")]) if n})
    if names:
        name = names[0] if len(names) == 1 else "mixed: " + ", ".join(names)
        env["device_name"] = name
        if cuda:
            env["gpu_name"] = name
        env["devices_differ"] = len(names) > 1
    return env
