"""Model FLOPs utilisation (MFU): how close a training step runs to the hardware's matmul peak.

``mfu = achieved FLOP/s / peak FLOP/s`` where

* **achieved FLOP/s** = FLOPs per audio-second of one training step (forward + backward,
  counted once with ``torch.utils.flop_counter.FlopCounterMode``, as
  :mod:`speechssl.downstream.cost` counts forward passes) times the audio-seconds the run
  trains on per wall-clock second;
* **peak FLOP/s** is *measured*: the median rate of square matmuls in the run's compute dtype
  (fp32 on CPU, bf16 under bf16 autocast, ...) with the run's thread count -- 2048 x 2048 on
  CPU, 8192 x 8192 on a GPU. On a GPU whose name is in :data:`DATASHEET_TFLOPS` the datasheet
  number (dense, no sparsity) is reported as well, as ``mfu_datasheet``.

What is counted: only matrix-multiply, convolution and attention kernels, at 2 FLOPs per
multiply-accumulate (element-wise work, norms and the optimizer count 0), so MFU is the
share of the matmul peak that the step's matmul-like work reaches. The FLOPs are those the
step really runs, on its padded batch: padding costs FLOPs and they are counted, divided by
the *real* (unpadded) audio-seconds of the batch.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterator

import torch

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

DATASHEET_TFLOPS: dict[str, dict[str, float]] = {
    # Dense tensor-core peaks from NVIDIA's datasheets (the sparsity figures are 2x these).
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},  # SXM5
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
"""TFLOP/s by device family and dtype; first match of the family name in the device name wins."""


# ---------------------------------------------------------------- FLOPs


def step_flop_formulas() -> dict[Any, Any]:
    """FlopCounterMode formulas missing for the kernels a CPU training step hits.

    The cost module's forward formula for ``_scaled_dot_product_flash_attention_for_cpu``
    plus its backward (torch's ``sdpa_backward_flop_count``, as for the CUDA kernels).
    With attention dropout on, CPU attention runs as plain ``bmm``\\ s, which are counted anyway.
    """
    from torch.utils import flop_counter

    from speechssl.downstream.cost import _extra_flop_formulas

    extra = dict(_extra_flop_formulas())
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    count = getattr(flop_counter, "sdpa_backward_flop_count", None)
    if op is not None and count is not None and op not in flop_counter.flop_registry:

        def cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                   **kwargs) -> int:
            return count(grad_out_shape, query_shape, key_shape, value_shape)

        extra[op] = cpu_sdpa_backward_flop
    return extra


def flop_counter() -> Any:
    """A silent ``FlopCounterMode`` with :func:`step_flop_formulas`."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=step_flop_formulas())


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of whatever ``fn()`` runs (call ``backward()`` inside it to count the backward pass)."""
    counter = flop_counter()
    with counter:
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- peak


_PEAK_CACHE: dict[tuple[Any, ...], dict[str, Any]] = {}


def measured_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    size: int | None = None,
    threads: int | None = None,
    budget_seconds: float = 1.0,
) -> dict[str, Any]:
    """Matmul peak of ``device`` in FLOP/s: the fastest of a few timed ``size^3`` matmuls.

    The fastest, not the median: a peak is what the hardware can do, and on a shared machine
    (a VM, a loaded core) the median of a handful of samples fell to 101 GFLOP/s where the
    same 2048^3 matmul reached 178 seconds later, which put measured MFU above 100 %.

    ``size`` defaults to 2048 on CPU and 8192 on a GPU (large enough to reach the plateau).
    On CPU it runs with ``threads`` (default: ``torch.get_num_threads()``, the run's count).
    One warm-up, then at least 3 and at most 7 timed repeats, stopping once
    ``budget_seconds`` are spent. Cached per process by (device, dtype, size, threads, and on
    CUDA the fp32 matmul precision, i.e. TF32 or not).

    Returns ``{"flops_per_second", "source"}``, ``source`` saying what was measured.
    """
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    size = size or (8192 if on_gpu else 2048)
    threads = threads or torch.get_num_threads()
    fp32_mode = torch.get_float32_matmul_precision() if on_gpu else ""
    key = (device.type, device.index, dtype, size, threads, fp32_mode)
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]

    previous_threads = torch.get_num_threads()
    if not on_gpu:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
        b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
        inner = 10 if on_gpu else 1  # GPU matmuls take ~1 ms: time several per sample

        def sample() -> float:
            if on_gpu:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(inner):
                torch.mm(a, b)
            if on_gpu:
                torch.cuda.synchronize(device)
            return (time.perf_counter() - start) / inner

        sample()  # warm-up: allocations, kernel selection, thread pool start
        times: list[float] = []
        spent = 0.0
        while len(times) < 3 or (spent < budget_seconds and len(times) < 7):
            times.append(sample())
            spent += times[-1] * inner
        seconds = min(times)
    finally:
        if not on_gpu:
            torch.set_num_threads(previous_threads)
    name = str(dtype).replace("torch.", "")
    if on_gpu and dtype == torch.float32 and fp32_mode != "highest":
        name += f" (matmul precision {fp32_mode}: TF32)"
    where = f"{threads} thread(s)" if not on_gpu else torch.cuda.get_device_name(device)
    result = {
        "flops_per_second": 2.0 * size**3 / seconds,
        "source": f"measured: fastest of {len(times)} {name} {size}x{size} matmuls, {where}",
    }
    _PEAK_CACHE[key] = result
    return result


def datasheet_peak(device_name: str, precision: str, *, tf32: bool = False) -> dict[str, Any] | None:
    """The datasheet peak (FLOP/s) of a known GPU for ``precision`` (fp32 -> TF32 if ``tf32``), else None."""
    column = "tf32" if precision == "fp32" and tf32 else precision
    for family, peaks in DATASHEET_TFLOPS.items():
        if family.lower() in device_name.lower() and column in peaks:
            return {
                "flops_per_second": peaks[column] * 1e12,
                "source": f"datasheet: {family} {column} dense {peaks[column]:g} TFLOP/s",
            }
    return None


# ---------------------------------------------------------------- the trainer's meter


class MfuMeter:
    """Throughput and MFU of a training run, for its metrics records.

    Per update::

        with meter.measure():
            record = update()          # forward + backward + optimizer step of one update
        meter.add(record["batch_seconds"])
        ...
        record.update(meter.stats())   # when a record is written

    The first update of the process runs under FlopCounterMode (a real update; the mode only
    watches) and sets the FLOPs per audio-second; the peak is measured right after it. That
    update (warm-up: allocations, kernel selection, compilation) is left out of the throughput
    window, as is anything between updates (validation, checkpoints): ``audio_s_per_s`` is
    audio-seconds trained per second spent in updates (data loading included) since the
    previous record, over all processes.
    """

    def __init__(
        self,
        device: torch.device,
        precision: str,
        *,
        world_size: int = 1,
        enabled: bool = True,
        eager_while_counting: bool = False,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.world_size = world_size
        self.enabled = enabled
        self.eager_while_counting = eager_while_counting
        self.say = say
        self.flops_per_audio_second: float | None = None
        self.peak: dict[str, Any] | None = None
        self.datasheet: dict[str, Any] | None = None
        self._pending_flops: int | None = None
        self._elapsed = 0.0
        self._first = True  # the process's first update: warm-up (and the counted one), outside any window
        self._window_seconds = 0.0  # audio-seconds (all processes) in the window
        self._window_time = 0.0  # wall seconds spent in those updates

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        """Time one update; count its FLOPs if none are known yet."""
        counter = None
        stack = contextlib.ExitStack()
        if self.enabled and self.flops_per_audio_second is None:
            if self.eager_while_counting and hasattr(torch.compiler, "set_stance"):
                # Compiled regions run eagerly here: FlopCounterMode sees every op (same FLOPs).
                stack.enter_context(torch.compiler.set_stance("force_eager"))
            counter = stack.enter_context(flop_counter())
        start = time.perf_counter()
        with stack:
            yield
        self._elapsed = time.perf_counter() - start
        if counter is not None:
            self._pending_flops = int(counter.get_total_flops())

    def add(self, batch_seconds: float) -> None:
        """``batch_seconds``: real audio of the update just measured, all processes together."""
        first, self._first = self._first, False
        if not first:
            self._window_seconds += batch_seconds
            self._window_time += self._elapsed
        if self._pending_flops is None:
            return
        flops, self._pending_flops = self._pending_flops, None
        local_seconds = batch_seconds / self.world_size
        if flops <= 0 or local_seconds <= 0:
            self.enabled = False
            self._note("mfu: no FLOPs counted in the first update; mfu is not logged")
            return
        self.flops_per_audio_second = flops / local_seconds
        dtype = PRECISION_DTYPES.get(self.precision, torch.float32)
        self.peak = measured_peak(self.device, dtype)
        if self.device.type == "cuda":
            tf32 = torch.get_float32_matmul_precision() != "highest"
            self.datasheet = datasheet_peak(torch.cuda.get_device_name(self.device), self.precision, tf32=tf32)
        line = (
            f"mfu: {self.flops_per_audio_second / 1e9:.2f} GFLOP per audio-second (forward + backward, "
            f"FlopCounterMode, first update); peak {self.peak['flops_per_second'] / 1e9:.1f} GFLOP/s "
            f"({self.peak['source']})"
        )
        if self.datasheet is not None:
            line += f"; {self.datasheet['source']}"
        self._note(line + f" -> at most {self.ceiling_audio_s_per_s():.2f} audio-s/s per process")

    def ceiling_audio_s_per_s(self) -> float:
        """Audio-seconds per second one process would reach at 100 % of the measured peak."""
        if not self.flops_per_audio_second or not self.peak:
            return math.nan
        return self.peak["flops_per_second"] / self.flops_per_audio_second

    def stats(self) -> dict[str, float]:
        """``audio_s_per_s`` (all processes) and ``mfu`` since the previous call; then a new window."""
        seconds, elapsed = self._window_seconds, self._window_time
        self._window_seconds = self._window_time = 0.0
        if elapsed <= 0.0 or seconds <= 0.0:
            return {}
        rate = seconds / elapsed
        out = {"audio_s_per_s": _significant(rate)}
        if self.enabled and self.flops_per_audio_second and self.peak:
            achieved = self.flops_per_audio_second * rate / self.world_size  # per process
            out["mfu"] = _significant(achieved / self.peak["flops_per_second"])
            if self.datasheet is not None:
                out["mfu_datasheet"] = _significant(achieved / self.datasheet["flops_per_second"])
        return out

    def _note(self, line: str) -> None:
        if self.say is not None:
            self.say(line)


def _significant(value: float, digits: int = 5) -> float:
    return float(f"{value:.{digits}g}")


VOLATILE_RECORD_KEYS = ("wall_seconds", "rss_mb", "audio_s_per_s", "mfu", "mfu_datasheet")
"""Keys of a train record that depend on timing or memory, not on the computation:
leave them out when comparing runs (exact resume, DDP equivalence)."""
