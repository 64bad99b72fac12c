"""GPU telemetry through NVML: SM clock, power, temperature, clock-event reasons and energy.

The NVML device of a CUDA device is found by the CUDA device's UUID (or, failing that, its PCI
bus id), never by assuming that NVML's index is CUDA's: under ``CUDA_VISIBLE_DEVICES`` they
differ. The NVML module is injectable (``nv``: ``pynvml`` or a fake with the same names) so the
mapping and the validity rule are tested without a GPU.

A :class:`TelemetryWindow` samples over a timed window (the timer samples between its
batches) and gives the verdict: a record is not ``valid`` when the SM clock fell under 75% of
its default clock or a power or thermal slowdown reason was set during the window.

Everything here is optional: without NVML (no GPU, no driver, no nvidia-ml-py) the functions
return None with the reason and the run goes on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

CLOCK_FLOOR = 0.75  # a window whose SM clock fell under this fraction of the default is not valid

# NVML clock-event ("throttle") reason bits (nvml.h, nvmlClocksEventReason*).
REASON_NAMES = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the GPU ran slower than it could for power or heat: a window with one of
# these set is not a valid measurement.
SLOWDOWN_BITS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def reason_names(bits: int) -> list[str]:
    return [name for bit, name in REASON_NAMES.items() if bits & bit] + (
        [f"0x{bits & ~sum(REASON_NAMES):x}"] if bits & ~sum(REASON_NAMES) else []
    )


def load_nvml():
    """The initialised ``pynvml`` module, or (None, reason)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no device, a container without NVML
        return None, f"NVML did not initialise: {exc}"
    return pynvml, ""


def cuda_identity(index: int, cuda: Any = None) -> dict[str, str]:
    """UUID and PCI bus id of CUDA device ``index`` as torch sees it (``cuda``: torch.cuda)."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    props = cuda.get_device_properties(index)
    out: dict[str, str] = {}
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        out["uuid"] = str(uuid)
    bus, dev, dom = (getattr(props, f"pci_{k}_id", None) for k in ("bus", "device", "domain"))
    if bus is not None and dev is not None and dom is not None:
        out["pci_bus_id"] = f"{int(dom):08X}:{int(bus):02X}:{int(dev):02X}.0"
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class NvmlDevice:
    """One GPU seen through NVML: its handle, NVML index and how it was matched."""

    nv: Any
    handle: Any
    nvml_index: int | None
    matched_by: str  # "uuid" or "pci_bus_id"
    uuid: str = ""

    @classmethod
    def find(cls, identity: dict[str, str], nv: Any) -> tuple["NvmlDevice | None", str]:
        """The NVML device with the CUDA device's UUID, else its PCI bus id; (None, reason) if neither."""
        tried = []
        uuid = identity.get("uuid")
        if uuid:
            bare = uuid.split("-", 1)[1] if uuid.startswith(("GPU-", "MIG-")) else uuid
            for candidate in (uuid, f"GPU-{bare}", f"MIG-{bare}"):
                try:
                    handle = nv.nvmlDeviceGetHandleByUUID(candidate)
                except Exception:
                    continue
                return cls._made(nv, handle, "uuid"), ""
            tried.append(f"UUID {uuid}")
        bus = identity.get("pci_bus_id")
        if bus:
            for name in ("nvmlDeviceGetHandleByPciBusId_v2", "nvmlDeviceGetHandleByPciBusId"):
                fn = getattr(nv, name, None)
                if fn is None:
                    continue
                try:
                    return cls._made(nv, fn(bus), "pci_bus_id"), ""
                except Exception:
                    continue
            tried.append(f"PCI bus id {bus}")
        if not tried:
            return None, "torch reports neither a UUID nor a PCI bus id for this device"
        return None, "no NVML device has " + " or ".join(tried)

    @classmethod
    def _made(cls, nv, handle, how: str) -> "NvmlDevice":
        try:
            index = int(nv.nvmlDeviceGetIndex(handle))
        except Exception:
            index = None
        try:
            uuid = _text(nv.nvmlDeviceGetUUID(handle))
        except Exception:
            uuid = ""
        return cls(nv, handle, index, how, uuid)

    # ---------------------------------------------------------------- readings
    def _try(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:
            return None

    def sm_clock_mhz(self) -> float | None:
        return self._try(lambda: float(self.nv.nvmlDeviceGetClockInfo(self.handle, self.nv.NVML_CLOCK_SM)))

    def default_sm_clock_mhz(self) -> tuple[float | None, str]:
        """The clock the GPU is meant to hold under load: default application clock, else max."""
        nv, h = self.nv, self.handle
        for name, label in (("nvmlDeviceGetDefaultApplicationsClock", "default application clock"),
                            ("nvmlDeviceGetApplicationsClock", "application clock"),
                            ("nvmlDeviceGetMaxClockInfo", "max clock")):
            fn = getattr(nv, name, None)
            value = self._try(lambda: fn(h, nv.NVML_CLOCK_SM)) if fn is not None else None
            if value:
                return float(value), label
        return None, ""

    def reasons(self) -> tuple[int | None, str]:
        """Current clock-event reason bits and the NVML call that gave them."""
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            fn = getattr(self.nv, name, None)
            if fn is None:
                continue
            value = self._try(lambda: int(fn(self.handle)))
            if value is not None:
                return value, name
        return None, ""

    def power_w(self) -> float | None:
        return self._try(lambda: self.nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)

    def temperature_c(self) -> float | None:
        return self._try(lambda: float(self.nv.nvmlDeviceGetTemperature(self.handle, self.nv.NVML_TEMPERATURE_GPU)))

    def energy_mj(self) -> float | None:
        """Energy since the driver loaded, mJ (Volta and later), or None."""
        return self._try(lambda: float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self.handle)))

    def state(self) -> dict[str, Any]:
        """A snapshot: clocks, power, limits, temperature, reasons, driver (keys absent if unsupported)."""
        nv, h = self.nv, self.handle
        default, default_kind = self.default_sm_clock_mhz()
        bits, call = self.reasons()
        out: dict[str, Any] = {
            "nvml_index": self.nvml_index,
            "uuid": self.uuid,
            "matched_by": self.matched_by,
            "sm_clock_mhz": self.sm_clock_mhz(),
            "sm_clock_default_mhz": default,
            "sm_clock_default_kind": default_kind,
            "sm_clock_max_mhz": self._try(lambda: float(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM))),
            "mem_clock_mhz": self._try(lambda: float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))),
            "power_w": self.power_w(),
            "power_limit_w": self._try(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
            "temperature_c": self.temperature_c(),
            "driver": self._try(lambda: _text(nv.nvmlSystemGetDriverVersion())),
            "clock_event_reasons": bits,
            "clock_event_reason_names": reason_names(bits) if bits is not None else None,
            "clock_event_call": call or None,
        }
        return {k: v for k, v in out.items() if v is not None}


def nvml_device(index: int, nv: Any = None, identity: dict[str, str] | None = None,
                cuda: Any = None) -> tuple[NvmlDevice | None, str]:
    """The NVML device of CUDA device ``index`` (by UUID or PCI bus id), or (None, reason)."""
    if nv is None:
        nv, reason = load_nvml()
        if nv is None:
            return None, reason
    if identity is None:
        try:
            identity = cuda_identity(index, cuda)
        except Exception as exc:
            return None, f"torch could not describe CUDA device {index}: {exc}"
    return NvmlDevice.find(identity, nv)


def gpu_state(index: int = 0, nv: Any = None, identity: dict[str, str] | None = None) -> dict[str, Any]:
    """Snapshot of CUDA device ``index`` through NVML; ``{"nvml": reason}`` without it."""
    dev, reason = nvml_device(index, nv, identity)
    return dev.state() if dev is not None else {"nvml": reason}


@dataclass
class TelemetryWindow:
    """Samples of one GPU over a timed window, and the window's validity verdict."""

    device: NvmlDevice
    clock_floor: float = CLOCK_FLOOR
    sm_clock_mhz: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    temperature_c: list[float] = field(default_factory=list)
    reasons_seen: int = 0
    reason_samples: int = 0
    reason_call: str = ""

    def sample(self) -> None:
        dev = self.device
        clock = dev.sm_clock_mhz()
        if clock is not None:
            self.sm_clock_mhz.append(clock)
        power = dev.power_w()
        if power is not None:
            self.power_w.append(power)
        temp = dev.temperature_c()
        if temp is not None:
            self.temperature_c.append(temp)
        bits, call = dev.reasons()
        if bits is not None:
            self.reasons_seen |= bits
            self.reason_samples += 1
            self.reason_call = call

    def verdict(self) -> tuple[bool, str]:
        """(valid, reason): invalid when the clock fell under the floor or a slowdown bit was set."""
        problems = []
        default, kind = self.device.default_sm_clock_mhz()
        if self.sm_clock_mhz and default:
            low = min(self.sm_clock_mhz)
            if low < self.clock_floor * default:
                problems.append(f"SM clock fell to {low:.0f} MHz, under {self.clock_floor:.0%} of its "
                                f"{kind} {default:.0f} MHz")
        slow = self.reasons_seen & SLOWDOWN_BITS
        if slow:
            problems.append("clock slowdown during the timed window: " + ", ".join(reason_names(slow)))
        if problems:
            return False, "; ".join(problems)
        if not self.sm_clock_mhz or not self.reason_samples:
            missing = [name for name, ok in (("SM clock", self.sm_clock_mhz), ("clock-event reasons",
                                                                                self.reason_samples)) if not ok]
            return False, "unverified: NVML gave no " + " and no ".join(missing)
        if not default:
            return False, "unverified: NVML gave no default SM clock to compare with"
        return True, (f"SM clock {min(self.sm_clock_mhz):.0f}-{max(self.sm_clock_mhz):.0f} MHz "
                      f"(>= {self.clock_floor:.0%} of {default:.0f} MHz), no power or thermal slowdown "
                      f"in {len(self.sm_clock_mhz)} samples")

    def summary(self) -> dict[str, Any]:
        """Min and median SM clock, median and max power and temperature, reasons seen."""
        out: dict[str, Any] = {"samples": len(self.sm_clock_mhz), "nvml_index": self.device.nvml_index,
                               "matched_by": self.device.matched_by}
        if self.sm_clock_mhz:
            out["sm_clock_min_mhz"] = min(self.sm_clock_mhz)
            out["sm_clock_median_mhz"] = statistics.median(self.sm_clock_mhz)
        default, kind = self.device.default_sm_clock_mhz()
        if default:
            out["sm_clock_default_mhz"] = default
            out["sm_clock_default_kind"] = kind
        for name, values in (("power_w", self.power_w), ("temperature_c", self.temperature_c)):
            if values:
                out[f"{name}_median"] = statistics.median(values)
                out[f"{name}_max"] = max(values)
        if self.reason_samples:
            out["clock_event_reasons"] = self.reasons_seen
            out["clock_event_reason_names"] = reason_names(self.reasons_seen)
            out["clock_event_call"] = self.reason_call
        return out
