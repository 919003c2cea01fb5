"""The machine fingerprint that keys stored baselines: processor, device, library versions, threads.

Two runs share baselines only when all of these agree; the calibration ratio makes the figures
comparable across load, but a different processor or library version is a different baseline.
"""

from __future__ import annotations

import hashlib
import json
import platform

import torch


def _processor() -> str:
    # platform.processor() is often empty on Linux; /proc/cpuinfo names the model.
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def fingerprint(device: torch.device | str = "cpu") -> dict[str, str]:
    """What must agree for a stored figure to be comparable with a new one."""
    import transformers

    device = torch.device(device)
    return {
        "processor": _processor(),
        "machine": platform.machine(),
        "device": _device_name(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": str(torch.get_num_threads()),
    }


def fingerprint_id(print_: dict[str, str]) -> str:
    """A short stable name for a fingerprint (the baseline file is named after it)."""
    digest = hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:12]
    device = print_["device"].split()[0].lower()
    return f"{device}-{print_['threads']}t-{digest}"
