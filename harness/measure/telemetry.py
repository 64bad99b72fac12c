"""GPU telemetry through NVML: SM clock, power, temperature and energy.

Everything here is optional: without NVML (no GPU, no driver, no nvidia-ml-py) the
functions return empty results and the run goes on.
"""

from __future__ import annotations

from typing import Any


def _handle(index: int):
    try:
        import pynvml
    except ImportError:
        return None, None
    try:
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:
        return None, None


def gpu_state(index: int = 0) -> dict[str, Any]:
    """SM clock (MHz), max SM clock, power (W), temperature (C), driver; {} without NVML."""
    nv, h = _handle(index)
    if h is None:
        return {}
    out: dict[str, Any] = {}
    probes = {
        "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
        "sm_clock_max_mhz": lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
        "power_w": lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
        "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
        "temperature_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        "driver": lambda: nv.nvmlSystemGetDriverVersion(),
        "throttle_reasons": lambda: int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h)),
    }
    for key, probe in probes.items():
        try:
            value = probe()
            out[key] = value.decode() if isinstance(value, bytes) else value
        except Exception:
            pass
    return out


def energy_mj(index: int = 0) -> float | None:
    """Total energy since driver load in millijoules, or None where unsupported."""
    nv, h = _handle(index)
    if h is None:
        return None
    try:
        return float(nv.nvmlDeviceGetTotalEnergyConsumption(h))
    except Exception:
        return None
