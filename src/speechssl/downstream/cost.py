"""What a benchmark run costs: upstream compute (FLOPs), GPU-hours and energy / CO2.

Three independent measurements, reported next to the scores (LeBenchmark 2.0 reports
parameters, compute and the energy / carbon footprint of its models):

* :func:`count_upstream_flops` -- FLOPs of one upstream forward pass, counted by
  ``torch.utils.flop_counter.FlopCounterMode``. Only matmul-like, convolution and
  attention kernels are counted; see its docstring for what that leaves out.
* :func:`gpu_hours` -- wall-clock hours times the GPUs the run used.
* :class:`EnergyTracker` -- energy (kWh) and CO2-equivalent (kg) measured by
  codecarbon's *offline* tracker. It never touches the network, writes no file unless
  asked to, and never fails a run: when codecarbon is missing or broken the result
  holds ``None`` and an ``energy_error`` saying why.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

DEFAULT_COUNTRY = "FRA"
"""ISO 3166-1 alpha-3 code of the grid whose carbon intensity converts kWh to CO2.

France by default (LeBenchmark is a French benchmark); set it to where the machine
actually is (``cost.country``): the CO2 figure is only as right as this code."""

_HEAVY_OP = re.compile(r"mm|matmul|linear|conv|attention|transformer|rnn|lstm|gru|fft|einsum", re.IGNORECASE)
"""Op names that do real arithmetic work; seen but not counted, they make a count partial."""


# ---------------------------------------------------------------- FLOPs


def _extra_flop_formulas() -> dict[Any, Any]:
    """Formulas FlopCounterMode lacks for kernels our upstreams hit on CPU.

    ``scaled_dot_product_attention`` on CPU dispatches to
    ``_scaled_dot_product_flash_attention_for_cpu``, which (torch 2.13) is not in the
    registry although its CUDA siblings are; it gets the same formula (the two
    batched matmuls QK^T and AV).
    """
    from torch.utils import flop_counter

    extra = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    count = getattr(flop_counter, "sdpa_flop_count", None)
    if op is not None and count is not None and op not in flop_counter.flop_registry:

        def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return count(query_shape, key_shape, value_shape)

        extra[op] = cpu_sdpa_flop  # FlopCounterMode passes it shapes, not tensors
    return extra


class _OpRecorder(TorchDispatchMode):
    """Records the name of every aten op that runs (to tell which ones went uncounted)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _native_kernels() -> Iterator[None]:
    """Turn off oneDNN (and cuDNN) while counting.

    An ``nn.LSTM`` on CPU otherwise runs as one fused ``mkldnn_rnn_layer`` op (and as
    ``_cudnn_rnn`` on GPU) that FlopCounterMode cannot see into; with these backends off
    it runs as per-step ``addmm``\\ s, which are counted exactly. Convolutions are counted
    at ``aten.convolution``, before any backend is chosen, so they are unaffected. The
    flags are process-wide: do not count while another thread runs a model.
    """
    getters = []
    for get, set_ in (("_get_mkldnn_enabled", "_set_mkldnn_enabled"), ("_get_cudnn_enabled", "_set_cudnn_enabled")):
        if hasattr(torch._C, get) and hasattr(torch._C, set_):
            getters.append((getattr(torch._C, set_), getattr(torch._C, get)()))
    try:
        for set_, _ in getters:
            set_(False)
        yield
    finally:
        for set_, previous in getters:
            set_(previous)


@contextlib.contextmanager
def _unfused_attention() -> Iterator[None]:
    """Turn off the "fast path" of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``.

    In eval mode without gradients they otherwise run as one fused op
    (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) that
    FlopCounterMode has no formula for, so a whole Transformer layer would count 0; the
    regular path runs ``addmm``\\ s and scaled-dot-product attention, which are counted.
    Process-wide, like :func:`_native_kernels`.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def _uncounted_heavy_ops(recorder: _OpRecorder, extra: dict[Any, Any]) -> list[str]:
    """Ops that ran, look like real arithmetic work and have no FLOP formula."""
    from torch.utils.flop_counter import flop_registry

    known = {str(op) for op in (*flop_registry, *extra)}
    return sorted(op for op in recorder.seen - known if _HEAVY_OP.search(op.split(".")[-1]))


def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def count_upstream_flops(upstream: nn.Module, seconds: float = 1.0) -> dict[str, Any]:
    """FLOPs of one forward pass of ``upstream`` on ``seconds`` of audio (batch of 1).

    The input is seeded noise (0.1 RMS) at the upstream's ``sample_rate``, on the
    upstream's device; the pass runs under ``torch.no_grad()`` and the module's current
    train/eval mode is left as it is.

    What is counted: ``torch.utils.flop_counter.FlopCounterMode`` counts only matrix
    products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and fused attention
    kernels, at 2 FLOPs per multiply-accumulate (so ``macs = flops / 2``). We add the
    CPU flash-attention kernel it misses and run LSTMs on native kernels so that their
    gate matmuls are counted. Everything else is *not* counted: elementwise ops,
    normalisations, softmax, activations, FFTs. For a transformer or LSTM upstream that
    is a few percent; for the hand-crafted baselines it is most of the work -- MFCC /
    fbank report only their mel-filterbank (and DCT) matmuls, a few MFLOPs per second,
    while their STFTs go uncounted. Ops that look like real arithmetic work (FFT, fused
    RNN / attention / conv kernels with no formula) but were not counted are listed in
    ``uncounted_ops`` and set ``partial``; elementwise ops never set it.

    Returns ``{"flops": total, "flops_per_second", "macs_per_second", "seconds",
    "counted_ops": {op: flops of this pass}, "uncounted_ops": [...], "partial": bool,
    "counter": "torch.utils.flop_counter <torch version>"}``. For a frame-wise upstream
    the per-second figures do not depend on ``seconds``; attention makes them grow
    with it (quadratic term), so compare upstreams at the same ``seconds``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    sample_rate = int(getattr(upstream, "sample_rate", 16_000))
    num_samples = max(1, round(seconds * sample_rate))
    generator = torch.Generator().manual_seed(0)
    device = _module_device(upstream)
    waveforms = (0.1 * torch.randn(1, num_samples, generator=generator)).to(device)
    lengths = torch.tensor([num_samples], dtype=torch.long, device=device)

    extra = _extra_flop_formulas()
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    recorder = _OpRecorder()
    with torch.no_grad(), _native_kernels(), _unfused_attention(), counter, recorder:
        upstream(waveforms, lengths)

    counted = {str(op): int(flops) for op, flops in counter.get_flop_counts().get("Global", {}).items()}
    total = int(sum(counted.values()))
    uncounted = _uncounted_heavy_ops(recorder, extra)
    return {
        "flops": total,
        "flops_per_second": total / seconds,
        "macs_per_second": total / 2 / seconds,
        "seconds": float(seconds),
        "counted_ops": counted,
        "uncounted_ops": uncounted,
        "partial": bool(uncounted),
        "counter": f"torch.utils.flop_counter {torch.__version__}",
    }


def count_probe_macs(probe: nn.Module, in_dim: int, frame_rate: float, seconds: float = 1.0) -> int:
    """Multiply-accumulates of one forward pass of ``probe`` on ``seconds`` of features.

    The input is one utterance of ``round(frame_rate * seconds)`` frames of seeded
    standard-normal ``in_dim``-dimensional features, all valid. The pass runs in eval
    mode under ``torch.no_grad()``; the probe's train/eval mode is restored afterwards.
    A training-free probe (output kind ``verification``, e.g. ``cosine``) has no
    forward pass to count: its ``embed`` is counted instead.

    Counted as in :func:`count_upstream_flops` (FlopCounterMode FLOPs / 2): matrix
    products, convolutions (depthwise ones at their real, grouped cost) and attention,
    with LSTMs on native kernels and the fused attention fast path off so that both
    are counted exactly. Biases, norms, activations, softmax and pooling are not.
    A heavy op left uncounted is logged as a warning.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not seconds > 0 or not frame_rate > 0:
        raise ValueError(f"seconds and frame_rate must be > 0, got {seconds} and {frame_rate}")
    frames = max(1, round(frame_rate * seconds))
    device = _module_device(probe)
    dtype = next((p.dtype for p in probe.parameters() if p.is_floating_point()), torch.float32)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, frames, in_dim, generator=generator).to(device=device, dtype=dtype)
    lengths = torch.tensor([frames], dtype=torch.long, device=device)
    run = probe.embed if getattr(probe, "output_kind", None) == "verification" else probe

    extra = _extra_flop_formulas()
    counter = FlopCounterMode(display=False, custom_mapping=extra)
    recorder = _OpRecorder()
    was_training = probe.training
    probe.eval()
    try:
        with torch.no_grad(), _native_kernels(), _unfused_attention(), counter, recorder:
            run(features, lengths)
    finally:
        probe.train(was_training)

    uncounted = _uncounted_heavy_ops(recorder, extra)
    if uncounted:
        logging.getLogger(__name__).warning("probe MACs leave out ops with no FLOP formula: %s", ", ".join(uncounted))
    return int(counter.get_total_flops()) // 2


# ---------------------------------------------------------------- GPU-hours


def gpu_hours(wall_seconds: float, device: str | torch.device, num_gpus: int = 1) -> float:
    """``wall_seconds / 3600 * num_gpus`` on a CUDA device, 0.0 otherwise.

    ``num_gpus`` is how many GPUs the run held (1 for a single-process run on ``cuda``
    or ``cuda:N``). ``device="auto"`` means CUDA when one is available, as in the runner.
    """
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type != "cuda":
        return 0.0
    return float(wall_seconds) / 3600.0 * int(num_gpus)


# ---------------------------------------------------------------- energy


def _codecarbon_version() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("codecarbon")
    except Exception:  # noqa: BLE001 - a version is a nicety
        return None


_MEASURED = ("cpu_power_w", "ram_power_w", "gpu_power_w", "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh",
             "measure", "cpu_model", "gpu_model")
"""Keys of ``EnergyTracker.result`` besides the headline ones; None when not measured."""


class EnergyTracker:
    """Energy and CO2 of the enclosed code, with codecarbon's ``OfflineEmissionsTracker``.

    ``with EnergyTracker(country="FRA") as energy: ...`` then ``energy.result``::

        {"energy_kwh", "co2_kg", "country", "duration_s", "tracker",
         "cpu_power_w", "ram_power_w", "gpu_power_w",            # mean power over the run
         "cpu_energy_kwh", "ram_energy_kwh", "gpu_energy_kwh",
         "measure": "RAM(), CPU(Cpu Load)",                      # codecarbon's hardware probes
         "cpu_model", "gpu_model",
         "overhead_s": start + stop time of the tracker, "energy_error": None or why}

    Every key is always there (``None`` when not measured), so results stack into tables.

    The tracker is offline: CO2 = energy x the country's average grid intensity from
    codecarbon's bundled energy-mix table (France: 56 gCO2eq/kWh); no API, no token,
    no location lookup. Nothing is written unless ``output_dir`` is given (then
    codecarbon's ``emissions.csv`` goes there); ``allow_multiple_runs`` is on, so no
    ``/tmp/.codecarbon.lock`` is taken and concurrent runs do not block each other --
    but in ``tracking_mode="machine"`` (codecarbon's default) each of them reports the
    *whole machine's* consumption, i.e. concurrent runs double count. ``"process"``
    attributes CPU load and RAM to this process instead (the GPU is always measured
    whole). codecarbon's own settings (``.codecarbon.config``, ``CODECARBON_*`` env
    vars) still apply to hardware options such as ``force_cpu_power`` or ``pue``.

    It never fails the run: if codecarbon is not installed, raises, or returns nothing,
    ``energy_kwh`` and ``co2_kg`` are ``None`` and ``energy_error`` says why. An
    unknown country keeps the energy and drops the CO2 (codecarbon would silently
    use a world average). ``enabled=False`` measures nothing (``tracker: "disabled"``).
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        country: str = DEFAULT_COUNTRY,
        output_dir: str | Path | None = None,
        measure_power_secs: float = 15.0,
        tracking_mode: str = "machine",
        project_name: str = "speechssl",
    ) -> None:
        self.enabled = enabled
        self.country = str(country).upper()
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.measure_power_secs = float(measure_power_secs)
        self.tracking_mode = tracking_mode
        self.project_name = project_name
        self.result: dict[str, Any] | None = None
        self._tracker = None
        self._error: str | None = None
        self._started: float | None = None
        self._overhead = 0.0

    # -- context manager

    def __enter__(self) -> "EnergyTracker":
        self.start()
        return self

    def __exit__(self, *exc_info) -> bool:
        self.stop()
        return False

    # -- explicit start / stop

    def start(self) -> None:
        self._started = time.perf_counter()
        self.result = None
        self._error = None
        self._overhead = 0.0
        if not self.enabled:
            return
        try:
            self._tracker = self._start_codecarbon()
        except Exception as exc:  # noqa: BLE001 - energy is a by-product; never fail the run
            self._tracker = None
            self._error = f"codecarbon failed to start: {type(exc).__name__}: {exc}"
        self._overhead += time.perf_counter() - self._started
        self._started = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        """Stop measuring and return (and keep in ``.result``) the measurement."""
        if self.result is not None:
            return self.result
        if self._started is None:
            raise RuntimeError("EnergyTracker.stop() before start()")
        duration = time.perf_counter() - self._started
        result: dict[str, Any] = {
            "energy_kwh": None,
            "co2_kg": None,
            "country": self.country,
            "duration_s": duration,
            "tracker": "disabled" if not self.enabled else f"codecarbon-offline {_codecarbon_version() or '?'}",
            **dict.fromkeys(_MEASURED),
            "overhead_s": None,
            "energy_error": None,
        }
        if self.enabled and self._tracker is not None:
            t0 = time.perf_counter()
            try:
                result.update(self._stop_codecarbon(self._tracker))
            except Exception as exc:  # noqa: BLE001
                result["energy_kwh"] = result["co2_kg"] = None
                self._error = self._error or f"codecarbon failed to stop: {type(exc).__name__}: {exc}"
            finally:
                self._tracker = None
                self._overhead += time.perf_counter() - t0
        if self.enabled:
            result["overhead_s"] = self._overhead
            result["energy_error"] = self._error
        self.result = result
        return result

    # -- codecarbon

    def _start_codecarbon(self):
        if not re.fullmatch(r"[A-Z]{3}", self.country):
            raise ValueError(f"country must be an ISO 3166-1 alpha-3 code such as FRA, got {self.country!r}")
        from speechssl.extras import require

        codecarbon = require("codecarbon", "energy and CO2 accounting")  # the [energy] extra
        OfflineEmissionsTracker, OutputMethod = codecarbon.OfflineEmissionsTracker, codecarbon.OutputMethod  # noqa: N806

        # Quiet from the first line (after the import, which sets its own level): the
        # tracker logs at INFO/WARNING before it applies log_level.
        logging.getLogger("codecarbon").setLevel(logging.ERROR)

        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = dict(
            project_name=self.project_name,
            country_iso_code=self.country,
            region=None,
            cloud_provider=None,
            cloud_region=None,
            measure_power_secs=self.measure_power_secs,
            tracking_mode=self.tracking_mode,
            log_level="error",
            allow_multiple_runs=True,
            electricitymaps_api_token=None,
            emissions_endpoint=None,
            output_methods=[] if self.output_dir is None else [OutputMethod.CSV],
            # must exist even when nothing is written there
            output_dir=str(self.output_dir) if self.output_dir is not None else tempfile.gettempdir(),
        )
        tracker = OfflineEmissionsTracker(**kwargs)
        # A token from a config file (the deprecated co2_signal one survives an explicit
        # None) would make the emissions engine call Electricity Maps: offline means offline.
        if hasattr(tracker, "_electricitymaps_api_token"):
            tracker._electricitymaps_api_token = None
        if getattr(tracker, "_another_instance_already_running", False):
            raise RuntimeError("another codecarbon instance holds its lock file")
        if not hasattr(tracker, "_start_time"):  # codecarbon swallows errors in __init__
            raise RuntimeError("the tracker did not initialise (see codecarbon's log)")
        tracker.start()  # also swallows errors: checked at stop
        if getattr(tracker, "_start_time", None) is None:
            raise RuntimeError("the tracker did not start (see codecarbon's log)")
        return tracker

    def _stop_codecarbon(self, tracker) -> dict[str, Any]:
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            raise RuntimeError("codecarbon returned no measurement (see its log)")
        out: dict[str, Any] = {
            "energy_kwh": float(data.energy_consumed),
            "co2_kg": float(data.emissions),
            "cpu_power_w": float(data.cpu_power),
            "ram_power_w": float(data.ram_power),
            "gpu_power_w": float(data.gpu_power),
            "cpu_energy_kwh": float(data.cpu_energy),
            "ram_energy_kwh": float(data.ram_energy),
            "gpu_energy_kwh": float(data.gpu_energy),
            "measure": ", ".join(_describe(h) for h in getattr(tracker, "_hardware", [])) or None,
            "cpu_model": getattr(data, "cpu_model", None) or None,
            "gpu_model": getattr(data, "gpu_model", None) or None,
        }
        if not getattr(data, "country_name", None):
            out["co2_kg"] = None
            self._error = (f"codecarbon has no energy mix for country {self.country!r}; "
                           "CO2 not reported (energy is)")
        return out


def _describe(hardware) -> str:
    try:
        return str(hardware.description())
    except Exception:  # noqa: BLE001
        return type(hardware).__name__


# ---------------------------------------------------------------- peak memory


class PeakMemory:
    """Peak memory while a block runs (``with PeakMemory(device) as peak: ...; peak.mb``).

    CUDA: ``torch.cuda.max_memory_allocated`` over the block (tensors only). CPU: the
    largest resident set size of the process, sampled every 20 ms by a thread from
    ``/proc/self/statm`` -- the whole process (interpreter, libraries, caches
    included), so compare CPU figures between runs made in fresh processes. ``kind``
    says which was measured; ``mb`` is None where neither is available.
    """

    def __init__(self, device: torch.device, interval: float = 0.02) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.mb: float | None = None
        self.kind = "cuda_allocated" if self.device.type == "cuda" else "process_rss"
        self._peak = 0
        self._stop = None
        self._thread = None

    @staticmethod
    def _rss_bytes() -> int | None:
        import os

        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._rss_bytes() or 0)

    def __enter__(self) -> "PeakMemory":
        import threading

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self._rss_bytes() is not None:
            self._peak = self._rss_bytes() or 0
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._rss_bytes() or 0)
            self.mb = self._peak / 2**20
        else:
            self.kind = "unavailable"
