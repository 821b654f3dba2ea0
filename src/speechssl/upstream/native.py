"""``ckpt:<path>``: the encoder of one of our own pretraining checkpoints.

``<path>`` is a checkpoint file (``best.pt``, ``step_00001000.pt``) or a pretraining
run directory (or its ``checkpoints/`` folder), in which case ``best.pt`` is used when
present -- the lowest validation loss is the run's own choice of model -- and otherwise
the newest step checkpoint. An HF export of a checkpoint goes through ``hf:`` instead.

Only the :class:`~speechssl.models.encoder.SpeechEncoder` is kept: the quantizer and
projection heads are training-only and would inflate the parameter count and memory.
The waveform normalisation is the one the run trained with
(``data.normalize_waveform``).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from speechssl.data.collate import normalize_waveforms
from speechssl.errors import ConfigError
from speechssl.upstream.base import SAMPLE_RATE, Upstream, UpstreamOutput, hash_files, valid_mask

VERSION = "native/1"
"""Bump when a change here alters the features (invalidates the feature caches)."""

BEST = "best.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` designates (see the module docstring)."""
    from speechssl.pretrain.checkpoint import step_checkpoints

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"ckpt: {path} does not exist")
    if path.is_file():
        return path
    for directory in (path, path / "checkpoints"):
        if (directory / BEST).is_file():
            return directory / BEST
        steps = step_checkpoints(directory)
        if steps:
            return steps[-1][1]
    raise ConfigError(f"ckpt: {path} contains no {BEST} or step_*.pt checkpoint (nor does {path / 'checkpoints'})")


class NativeUpstream(Upstream):
    """All ``layers + 1`` states of our SpeechEncoder (Transformer input, then each layer)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from speechssl.pretrain.checkpoint import load_pretraining_model

        self.checkpoint = resolve_checkpoint(path)
        model, cfg = load_pretraining_model(self.checkpoint)
        self.encoder = model.encoder.eval()
        del model  # drops the quantizer and heads
        encoder_cfg = self.encoder.cfg
        if encoder_cfg.sample_rate != SAMPLE_RATE:
            raise ConfigError(
                f"ckpt: {self.checkpoint} was trained on {encoder_cfg.sample_rate} Hz audio; "
                f"upstreams take {SAMPLE_RATE} Hz"
            )
        self.normalize = bool(cfg.data.normalize_waveform)
        self.num_layers = encoder_cfg.layers + 1
        self.feature_dim = encoder_cfg.hidden
        self.frame_rate = encoder_cfg.sample_rate / encoder_cfg.total_stride

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        lengths = lengths.to(waveforms.device)
        waveforms = waveforms.float() * valid_mask(lengths, waveforms.shape[1])
        if self.normalize:
            waveforms = normalize_waveforms(waveforms, lengths)
        out = self.encoder(waveforms, lengths)
        keep = (~out.padding_mask)[:, :, None]
        return UpstreamOutput(layers=[x * keep for x in out.layer_states], lengths=out.frame_lengths)

    def fingerprint(self) -> str:
        return hash_files([self.checkpoint], extra=VERSION)


def build_native(path: str) -> NativeUpstream:
    return NativeUpstream(path)
