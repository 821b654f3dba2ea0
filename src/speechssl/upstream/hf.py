"""``hf:<dir or hub id>``: a ``transformers`` waveform encoder (wav2vec 2.0, HuBERT, WavLM,
data2vec-audio, wav2vec2-conformer), including our own ``speechssl export-hf`` output.

The argument is a local model directory (``hf:/models/wavlm``, ``hf:./facebook/wav2vec2-base``)
or a Hugging Face hub id, ``hf:facebook/wav2vec2-base`` or ``hf:facebook/wav2vec2-base@<revision>``
(branch, tag or commit). An existing path always wins; write ``./org/name`` to insist on a
directory. A hub id is resolved through huggingface_hub's cache (:mod:`speechssl.upstream.hub`):
the cached snapshot when there is one, else a download of only the config, preprocessor config
and weights, and offline (``HF_HUB_OFFLINE=1``, or no connection) one ``ConfigError`` naming the
id and the command that pre-downloads it (``hf download facebook/wav2vec2-base``).

The model itself is then loaded from that directory only (``local_files_only=True``
everywhere), exactly as a local directory is: the same checks, and a feature-cache identity
that hashes the files' bytes, never the id, so a new revision invalidates cached features.

Input preparation follows the directory's ``preprocessor_config.json``, because that is
how the model was trained:

* ``do_normalize``: zero mean / unit variance per utterance over its valid samples.
* ``return_attention_mask``: models whose extractor says False (wav2vec2-base style,
  ``feat_extract_norm="group"``) were trained without one; HF documents that they must
  get zero-padded input *without* a mask (their GroupNorm over time sees the padding
  either way, so such models are not exactly padding-invariant). The others get the mask.

Without a preprocessor config both default to ``feat_extract_norm == "layer"``, which is
what the matching HF checkpoints ship with.

Layers are the ``num_hidden_layers + 1`` hidden states (the Transformer input, then every
layer). transformers 5 records the last one *before* the final LayerNorm of pre-LN
("stable layer norm") models; we use ``last_hidden_state`` there instead, which is
what transformers 4 returned, what the model outputs, and what the native ``ckpt:``
upstream reports -- so the same weights give the same layers through either route.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from speechssl.data.collate import normalize_waveforms
from speechssl.errors import ConfigError
from speechssl.upstream.base import SAMPLE_RATE, Upstream, UpstreamOutput, hash_files, valid_mask

VERSION = "hf/1"
"""Bump when a change here alters the features (invalidates the feature caches)."""

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
SUPPORTED = "wav2vec2, hubert, wavlm, data2vec-audio, wav2vec2-conformer"


def weight_files(directory: Path) -> list[Path]:
    """The files whose bytes define the weights, in a fixed order (sharded or not)."""
    files: list[Path] = []
    for pattern in ("*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                    "pytorch_model.bin.index.json"):
        files.extend(sorted(p for p in directory.glob(pattern) if p.is_file()))
    return files


def _load_error(path: Path, exc: Exception, action: str = "load a transformers model from") -> str:
    """One line for a failed transformers load of ``path`` (its messages run to many lines,
    and for a refused pickle they advise ``weights_only=False``, i.e. running the file)."""
    from speechssl.fsutil import describe_load_failure, is_code_refusal

    if is_code_refusal(exc):
        bins = [p for p in weight_files(path) if p.suffix == ".bin"] if path.is_dir() else []
        return "hf: " + describe_load_failure(bins[0] if len(bins) == 1 else path, "weights file", exc)
    text = str(exc)
    if "custom code" in text or "trust_remote_code" in text:
        return (f"hf: {path}: refused: it asks to run its own modeling code (auto_map in its config); "
                "speechssl never runs code from a model directory")
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"hf: cannot {action} {path}: {first}"


class HFUpstream(Upstream):
    """Hidden states of a ``transformers.AutoModel`` audio encoder loaded from a local directory."""

    def __init__(self, directory: str | Path) -> None:
        super().__init__()
        directory = Path(directory).expanduser()
        if not directory.exists():
            raise ConfigError(f"hf: model directory {directory} does not exist")
        if not directory.is_dir() or not (directory / CONFIG_FILE).is_file():
            raise ConfigError(f"hf: {directory} is not an HF model directory (no {CONFIG_FILE})")
        if not weight_files(directory):
            raise ConfigError(f"hf: {directory} has no weights (model.safetensors or pytorch_model.bin)")
        self.directory = directory

        from transformers import AutoModel

        # trust_remote_code=False: a directory's own modeling code (config.json "auto_map") is
        # never run, not even after transformers' interactive prompt.
        try:
            model, loading = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32,
                                                       trust_remote_code=False, output_loading_info=True)
        except Exception as exc:  # unknown model_type, corrupt weights, ...
            raise ConfigError(_load_error(directory, exc)) from None
        # transformers only logs a note when checkpoint names do not match the model: the
        # benchmark would silently score a randomly initialised encoder. (The mask embedding
        # exists only in models saved for pretraining or fine-tuning.)
        missing = [k for k in loading.get("missing_keys", []) if not k.endswith("masked_spec_embed")]
        if missing:
            raise ConfigError(f"hf: {directory}: {len(missing)} weight tensor(s) of its {model.config.model_type} "
                              f"model are not in the checkpoint (e.g. {missing[0]!r}), so they would be random; "
                              "are the weights saved from this architecture?")
        config = model.config
        if not (
            hasattr(model, "_get_feat_extract_output_lengths")
            and getattr(config, "conv_stride", None)
            and getattr(config, "num_hidden_layers", None)
        ):
            raise ConfigError(
                f"hf: {directory} holds a {type(model).__name__} ({config.model_type}), not a waveform encoder "
                f"with hidden states; supported: {SUPPORTED}"
            )
        self.model = model.eval()

        self.do_normalize, self.use_attention_mask = self._preprocessing(directory, config)
        self.add_adapter = bool(getattr(config, "add_adapter", False))
        self.num_layers = int(config.num_hidden_layers) + 1
        self.feature_dim = int(config.hidden_size)
        self.frame_rate = SAMPLE_RATE / math.prod(int(s) for s in config.conv_stride)

    @staticmethod
    def _preprocessing(directory: Path, config) -> tuple[bool, bool]:
        layer_norm_cnn = getattr(config, "feat_extract_norm", "group") == "layer"
        if not (directory / PREPROCESSOR_FILE).is_file():
            return layer_norm_cnn, layer_norm_cnn
        from transformers import AutoFeatureExtractor

        try:
            extractor = AutoFeatureExtractor.from_pretrained(directory, local_files_only=True,
                                                             trust_remote_code=False)
        except Exception as exc:
            raise ConfigError(_load_error(directory / PREPROCESSOR_FILE, exc, "read")) from None
        rate = getattr(extractor, "sampling_rate", SAMPLE_RATE)
        if rate != SAMPLE_RATE:
            raise ConfigError(
                f"hf: {directory} expects {rate} Hz audio ({PREPROCESSOR_FILE}); speechssl feeds {SAMPLE_RATE} Hz"
            )
        return bool(getattr(extractor, "do_normalize", False)), bool(getattr(extractor, "return_attention_mask", False))

    def output_lengths(self, lengths: Tensor) -> Tensor:
        # The hidden states are taken before any adapter, so its downsampling never applies.
        if self.add_adapter:
            return self.model._get_feat_extract_output_lengths(lengths, add_adapter=False)
        return self.model._get_feat_extract_output_lengths(lengths)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        lengths = lengths.to(waveforms.device)
        mask = valid_mask(lengths, waveforms.shape[1])
        waveforms = waveforms.float() * mask
        if self.do_normalize:
            waveforms = normalize_waveforms(waveforms, lengths)
        out = self.model(
            waveforms,
            attention_mask=mask.long() if self.use_attention_mask else None,
            output_hidden_states=True,
        )
        layers = list(out.hidden_states)
        if len(layers) != self.num_layers:
            raise ConfigError(
                f"hf: {self.directory} returned {len(layers)} hidden states, expected {self.num_layers}"
            )
        if not self.add_adapter and out.last_hidden_state.shape == layers[-1].shape:
            layers[-1] = out.last_hidden_state
        frames = layers[0].shape[1]
        frame_lengths = self.output_lengths(lengths).clamp(min=0, max=frames).long()
        frame_mask = valid_mask(frame_lengths, frames)[:, :, None]
        return UpstreamOutput(layers=[x * frame_mask for x in layers], lengths=frame_lengths)

    def fingerprint(self) -> str:
        files = [self.directory / CONFIG_FILE]
        if (self.directory / PREPROCESSOR_FILE).is_file():
            files.append(self.directory / PREPROCESSOR_FILE)
        return hash_files(files + weight_files(self.directory), extra=VERSION)


def build_hf(argument: str) -> HFUpstream:
    """``hf:<argument>``: a local directory, or a hub id resolved to its cached snapshot."""
    from speechssl.upstream.hub import resolve_model_dir

    return HFUpstream(resolve_model_dir(argument))
