"""What the benchmarks share: generated image data, manifests, backbones, the machine description, timing."""
from __future__ import annotations

import hashlib
import io
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

CPU_NOTE = ("CPU run: transferlab.features.build computes in the feature set's precision (auto: bf16 on a CPU "
            "with AVX512-BF16 or AMX, as this one, else fp32) with channels_last; no pinned memory (CUDA only)")


# ---- the machine ------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    """CPU model, cores, GPU (if any) and library versions: what a number in a result depends on."""
    import PIL
    import torch
    import torchvision

    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
               "cuda": torch.version.cuda}
    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    return {"cpu": _cpu_model(), "cores": cores, "usable_cores": usable, "torch_threads": torch.get_num_threads(),
            "memory_gb": mem_gb, "gpu": gpu, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "pillow": PIL.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": loadavg()}


# ---- timing -----------------------------------------------------------------------------------------------

@contextmanager
def timed() -> Iterator[dict]:
    """with timed() as t: ...; then t["seconds"] (wall clock) and the load average around it."""
    out = {"loadavg_before": loadavg()}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        out["loadavg_after"] = loadavg()


def time_call(fn: Callable, *args, **kwargs) -> tuple[object, dict]:
    with timed() as t:
        value = fn(*args, **kwargs)
    return value, t


def proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status in MiB: VmRSS (resident now) or VmHWM (peak resident, this
    program's own: reset by exec, unlike getrusage's ru_maxrss, which a subprocess inherits from the parent
    that started it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ---- generated images -------------------------------------------------------------------------------------

_DIGITS = None


def _digits() -> tuple[np.ndarray, np.ndarray]:
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        d = load_digits()
        _DIGITS = (np.round(d.images * (255.0 / 16.0)).astype(np.uint8), d.target.astype(int))
    return _DIGITS


def digit_image(index: int, size: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """An RGB size×size image derived from scikit-learn digit `index % 1797`: upscaled, shifted by a few pixels,
    tinted, with Gaussian noise, all seeded by (seed, index) so every index gives a distinct image."""
    from PIL import Image

    pixels, target = _digits()
    i = index % len(pixels)
    rng = np.random.default_rng([seed, index])
    gray = Image.fromarray(pixels[i], mode="L").resize((size, size), Image.BILINEAR)
    arr = np.asarray(gray, np.float32) / 255.0
    shift = rng.integers(-size // 16, size // 16 + 1, size=2)
    arr = np.roll(arr, tuple(int(s) for s in shift), axis=(0, 1))
    ink, paper = rng.uniform(0.6, 1.0, 3), rng.uniform(0.0, 0.3, 3)
    rgb = paper + arr[..., None] * (ink - paper)
    rgb = rgb * 255.0 + rng.normal(0.0, 8.0, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), int(target[i])


def write_images(dest: Path, indices: range | list[int], size: int, fmt: str = "JPEG", seed: int = 0,
                 split: str | Callable[[int], str] = "train") -> pd.DataFrame:
    """Write digit-derived images as an ImageFolder (dest/<label>/<index>.<ext>); return their manifest rows
    (image_id, path, label, split, sha256), as transferlab.data.prepare would list them."""
    from PIL import Image

    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    rows = []
    for i in indices:
        arr, label = digit_image(i, size, seed)
        buf = io.BytesIO()
        Image.fromarray(arr, mode="RGB").save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        data = buf.getvalue()
        path = Path(dest) / str(label) / f"{i:06d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append((f"{label}/{path.name}", str(path), str(label),
                     split(i) if callable(split) else split, hashlib.sha256(data).hexdigest()))
    return pd.DataFrame(rows, columns=["image_id", "path", "label", "split", "sha256"])


def make_backbone(dest: Path, arch: str, image_size: int, seed: int = 0):
    """A seeded random-init torchvision backbone saved the way the backbone stage saves it."""
    from transferlab.config.params import Backbone
    from transferlab.models import backbones

    return backbones.create(dest.name, Backbone(arch=arch, weights="none", image_size=image_size), dest, seed)


def predict(head, x: np.ndarray) -> np.ndarray:
    """A trained torch head's (transferlab.heads.torch_heads.FeatureHead) logits on numpy features."""
    import torch

    with torch.inference_mode():
        return head(torch.as_tensor(np.asarray(x, np.float32))).numpy()


def dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20, 2)


# ---- how busy the machine was (it is shared) --------------------------------------------------------------

def _proc_stat() -> tuple[float, float] | None:
    """(busy seconds of all CPUs, steal seconds) since boot, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _own_cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class LoadMeter:
    """CPU time the rest of the machine used while a benchmark ran: busy time of all CPUs (/proc/stat) minus
    this process's and its waited-for children's. others_avg_cores near 0: the machine was ours alone."""

    def __init__(self) -> None:
        self.start, self.own, self.t = _proc_stat(), _own_cpu(), time.perf_counter()

    def read(self) -> dict:
        wall, end, own = time.perf_counter() - self.t, _proc_stat(), _own_cpu() - self.own
        out = {"wall_seconds": round(wall, 2), "cpu_seconds_ours": round(own, 2)}
        if self.start and end:
            busy, steal = end[0] - self.start[0], end[1] - self.start[1]
            others = max(0.0, busy - own)
            out.update(cpu_seconds_all=round(busy, 2), cpu_seconds_others=round(others, 2),
                       others_avg_cores=round(others / wall, 2) if wall else None,
                       steal_seconds=round(steal, 2))
        return out
