"""Export to and import from HF ``transformers`` wav2vec 2.0 checkpoints.

An export directory holds ``config.json`` (a ``Wav2Vec2Config``), ``model.safetensors``
and ``preprocessor_config.json`` (a ``Wav2Vec2FeatureExtractor`` config), so that
``Wav2Vec2Model.from_pretrained(dir)`` -- and, for a pretraining model,
``Wav2Vec2ForPreTraining.from_pretrained(dir)`` -- load it with no missing keys.

Key mapping (ours -> HF); everything else has the same name on both sides:

========================================================  =========================================
``SpeechEncoder``                                         ``Wav2Vec2Model``
========================================================  =========================================
``mask_embedding``                                        ``masked_spec_embed``
``encoder.pos_conv_embed.conv.parametrizations.weight.``  same (transformers >= 4.3x saves the
``original0`` / ``original1`` (weight_norm, dim=2)        parametrization names; older checkpoints
                                                          use ``weight_g`` / ``weight_v``, which
                                                          :func:`import_hf` also reads)
========================================================  =========================================

A :class:`Wav2Vec2Pretraining` is written with ``Wav2Vec2ForPreTraining``'s layout: the
encoder under ``wav2vec2.``, then ``quantizer.weight_proj``, ``quantizer.codevectors``,
``project_q`` and ``project_hid`` at the top level. ``Wav2Vec2Model`` loads such a file
too (it strips ``wav2vec2.``) but reports the head keys as unexpected, exactly as it
does for ``facebook/wav2vec2-base``; pass ``encoder_only=True`` for a file with the
bare encoder.

What HF cannot represent: padded CNN convolutions (``SEED004_CONV``), rejected with a
:class:`ConfigError`. Fields HF has no slot for (``sample_rate``, ``feature_grad_mult``,
the Gumbel temperature schedule, the feature penalty weight, ``do_normalize``) are kept
under a ``"speechssl"`` key of ``config.json`` (transformers keeps unknown keys) so that
a round trip restores the exact configs; checkpoints from elsewhere get our defaults.

HuBERT (:func:`export_hubert`, :func:`encoder_to_hubert`, :func:`hubert_to_encoder`):
transformers' ``HubertModel`` is the same network as ``Wav2Vec2Model`` under the same
parameter names (``masked_spec_embed`` included), so one :class:`SpeechEncoder` -- the
encoder of a HuBERT or of a wav2vec 2.0 run -- exports to either. The ``HubertConfig``
sets the two switches HuBERT has and wav2vec 2.0 does not: ``feat_proj_layer_norm=True``
(our projection always normalises the CNN features first) and
``conv_pos_batch_norm=False`` (our positional conv is weight-normalised, not
batch-normalised); import refuses checkpoints with either switch the other way
(DistilHuBERT-style projections, HuBERT variants with a BatchNorm positional conv).
transformers has no HuBERT pretraining head, so only the encoder is exported; head
models (``HubertForCTC`` ...) keep the encoder under ``hubert.``, which import strips.

Import never touches the network: it reads local files only and needs no
``transformers`` model class.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor

from speechssl.config import check
from speechssl.errors import ConfigError, SpeechSSLError
from speechssl.models.config import EncoderConfig
from speechssl.models.encoder import SpeechEncoder
from speechssl.models.objectives.contrastive import ContrastiveConfig, Wav2Vec2Pretraining

if TYPE_CHECKING:
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
PREPROCESSOR_FILE = "preprocessor_config.json"

HF_PREFIX = "wav2vec2."
"""Where ``Wav2Vec2ForPreTraining`` (and every other head model) keeps the encoder."""
HUBERT_PREFIX = "hubert."
"""Where ``HubertForCTC`` / ``HubertForSequenceClassification`` keep the encoder."""
_PREFIXES = {"wav2vec2": HF_PREFIX, "hubert": HUBERT_PREFIX}
_CONFIG_CLASSES = {"wav2vec2": "Wav2Vec2Config", "hubert": "HubertConfig"}
EXTRA_KEY = "speechssl"
"""config.json key holding the fields HF has no slot for."""

_OUR_TO_HF = {"mask_embedding": "masked_spec_embed"}
_HF_TO_OUR = {v: k for k, v in _OUR_TO_HF.items()}
_LEGACY_WEIGHT_NORM = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}
_ENCODER_ROOTS = ("feature_extractor.", "feature_projection.", "encoder.", "masked_spec_embed", "adapter.")
_HEAD_ROOTS = ("quantizer.", "project_q.", "project_hid.")

_CONV_NORM_TO_HF = {"group_norm": "group", "layer_norm": "layer"}
_CONV_NORM_FROM_HF = {v: k for k, v in _CONV_NORM_TO_HF.items()}
# Exact (erf) GELU: HF's "gelu" is GELUActivation -> F.gelu, as our nn.GELU()/F.gelu.
_EXACT_GELU = ("gelu", "gelu_python")
_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm / nn.GroupNorm default, used throughout our encoder

_ENCODER_EXTRAS = ("sample_rate", "feature_grad_mult")
_OBJECTIVE_EXTRAS = ("gumbel_temp_max", "gumbel_temp_min", "gumbel_temp_decay", "penalty_weight")


# ---------------------------------------------------------------- configs


def hf_config_from(
    encoder_cfg: EncoderConfig,
    objective_cfg: ContrastiveConfig | None = None,
    *,
    do_normalize: bool = False,
) -> Wav2Vec2Config:
    """The ``transformers.Wav2Vec2Config`` describing our encoder (and objective).

    Without ``objective_cfg`` the masking/quantizer fields keep HF's defaults
    (``mask_time_prob=0.05``: SpecAugment for fine-tuning, which also makes HF keep
    ``masked_spec_embed``). Raises :class:`ConfigError` for a padded CNN.
    """
    from transformers import Wav2Vec2Config

    fields, extras = _encoder_fields(encoder_cfg, do_normalize)
    if objective_cfg is not None:
        check(objective_cfg)
        fields.update(
            num_codevector_groups=objective_cfg.codebook_groups,
            num_codevectors_per_group=objective_cfg.codebook_entries,
            codevector_dim=objective_cfg.codevector_dim,
            proj_codevector_dim=objective_cfg.final_dim,
            num_negatives=objective_cfg.num_negatives,
            contrastive_logits_temperature=objective_cfg.logit_temp,
            diversity_loss_weight=objective_cfg.diversity_weight,
            feat_quantizer_dropout=objective_cfg.target_dropout,
            mask_time_prob=objective_cfg.mask_prob,
            mask_time_length=objective_cfg.mask_length,
            mask_time_min_masks=objective_cfg.min_masks,
        )
        extras["objective"] = {name: getattr(objective_cfg, name) for name in _OBJECTIVE_EXTRAS}
    fields[EXTRA_KEY] = extras
    return Wav2Vec2Config(**fields)


def hubert_config_from(encoder_cfg: EncoderConfig, *, do_normalize: bool = False) -> HubertConfig:
    """The ``transformers.HubertConfig`` describing our encoder.

    The masking fields keep HF's defaults (``mask_time_prob=0.05``, so ``HubertModel``
    keeps ``masked_spec_embed``). Raises :class:`ConfigError` for a padded CNN.
    """
    from transformers import HubertConfig

    fields, extras = _encoder_fields(encoder_cfg, do_normalize)
    # Our FeatureProjection is LayerNorm -> Linear -> Dropout, as HuBERT BASE/LARGE;
    # our positional conv is weight-normalised (HF's BatchNorm variant is another network).
    fields.update(feat_proj_layer_norm=True, conv_pos_batch_norm=False)
    fields[EXTRA_KEY] = extras
    return HubertConfig(**fields)


def _encoder_fields(encoder_cfg: EncoderConfig, do_normalize: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config fields Wav2Vec2Config and HubertConfig share, and our extras for them."""
    check(encoder_cfg)
    padded = [i for i, (_, _, _, padding) in enumerate(encoder_cfg.conv_layers) if padding]
    if padded:
        raise ConfigError(
            f"conv_layers {padded} use padding "
            f"{[encoder_cfg.conv_layers[i][3] for i in padded]}: HF Wav2Vec2/HuBERT convolutions have no "
            "padding, so this encoder (e.g. the seed-004 50 Hz layout) cannot be exported to transformers"
        )
    fields: dict[str, Any] = dict(
        conv_dim=[c for c, _, _, _ in encoder_cfg.conv_layers],
        conv_kernel=[k for _, k, _, _ in encoder_cfg.conv_layers],
        conv_stride=[s for _, _, s, _ in encoder_cfg.conv_layers],
        conv_bias=encoder_cfg.conv_bias,
        feat_extract_norm=_CONV_NORM_TO_HF[encoder_cfg.conv_norm],
        feat_extract_activation="gelu",
        hidden_act="gelu",
        hidden_size=encoder_cfg.hidden,
        num_hidden_layers=encoder_cfg.layers,
        num_attention_heads=encoder_cfg.heads,
        intermediate_size=encoder_cfg.ffn,
        do_stable_layer_norm=encoder_cfg.style == "pre_ln",
        num_conv_pos_embeddings=encoder_cfg.pos_conv_kernel,
        num_conv_pos_embedding_groups=encoder_cfg.pos_conv_groups,
        layer_norm_eps=_LAYER_NORM_EPS,
        feat_proj_dropout=encoder_cfg.feature_dropout,
        hidden_dropout=encoder_cfg.dropout,
        attention_dropout=encoder_cfg.attention_dropout,
        activation_dropout=encoder_cfg.activation_dropout,
        layerdrop=encoder_cfg.layerdrop,
    )
    extras: dict[str, Any] = {
        "encoder": {name: getattr(encoder_cfg, name) for name in _ENCODER_EXTRAS},
        "do_normalize": bool(do_normalize),
    }
    return fields, extras


def _config_dict(hf_cfg: Any) -> dict[str, Any]:
    if isinstance(hf_cfg, Mapping):
        return dict(hf_cfg)
    to_dict = getattr(hf_cfg, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"expected a transformers config or a config.json mapping, got {type(hf_cfg).__name__}")


def _check_supported(data: Mapping[str, Any], source: str = "config") -> None:
    """Refuse HF variants our encoder cannot reproduce, naming what is unsupported."""
    model_type = data.get("model_type", "wav2vec2")
    if model_type not in _CONFIG_CLASSES:
        raise ConfigError(
            f"{source}: model_type {model_type!r} is not supported; only plain wav2vec2 and hubert checkpoints "
            "(Wav2Vec2Model / Wav2Vec2ForPreTraining / HubertModel / ...ForCTC) can be imported "
            "(Wav2Vec2-Conformer, Wav2Vec2-BERT, WavLM, data2vec have different layers)"
        )
    if model_type == "hubert":
        if not data.get("feat_proj_layer_norm", True):
            raise ConfigError(
                f"{source}: feat_proj_layer_norm=False (a projection without LayerNorm, as in DistilHuBERT) "
                "is not supported; our feature projection always normalises the CNN features"
            )
        if data.get("conv_pos_batch_norm", False):
            raise ConfigError(
                f"{source}: conv_pos_batch_norm=True (BatchNorm before the positional conv, no weight norm) "
                "is not supported"
            )
    if data.get("add_adapter"):
        raise ConfigError(f"{source}: add_adapter=True (convolutional adapter after the encoder) is not supported")
    if data.get("adapter_attn_dim") is not None:
        raise ConfigError(
            f"{source}: adapter_attn_dim={data['adapter_attn_dim']} (MMS attention adapters) is not supported"
        )
    for key in ("hidden_act", "feat_extract_activation"):
        value = data.get(key, "gelu")
        if value not in _EXACT_GELU:
            raise ConfigError(
                f"{source}: {key}={value!r} is not supported; our encoder uses the exact (erf) GELU ('gelu')"
            )
    norm = data.get("feat_extract_norm", "group")
    if norm not in _CONV_NORM_FROM_HF:
        raise ConfigError(f"{source}: feat_extract_norm={norm!r} is not supported (need 'group' or 'layer')")
    eps = data.get("layer_norm_eps", _LAYER_NORM_EPS)
    if not math.isclose(float(eps), _LAYER_NORM_EPS, rel_tol=1e-6):
        raise ConfigError(f"{source}: layer_norm_eps={eps} is not supported (our LayerNorms use {_LAYER_NORM_EPS})")
    lengths = {key: len(data[key]) for key in ("conv_dim", "conv_kernel", "conv_stride") if key in data}
    if len(set(lengths.values())) > 1:
        raise ConfigError(f"{source}: conv_dim, conv_kernel and conv_stride differ in length: {lengths}")


def _hf_fields(hf_cfg: Any, source: str) -> tuple[Any, dict[str, Any]]:
    """Validated ``Wav2Vec2Config`` / ``HubertConfig`` (HF defaults filled in) and our extras."""
    import transformers

    data = _config_dict(hf_cfg)
    _check_supported(data, source)
    extras = data.get(EXTRA_KEY) or {}
    if not isinstance(extras, Mapping):
        extras = {}
    class_name = _CONFIG_CLASSES[data.get("model_type", "wav2vec2")]
    config_class = getattr(transformers, class_name)
    if isinstance(hf_cfg, config_class):
        return hf_cfg, dict(extras)
    data.pop("model_type", None)
    try:
        return config_class.from_dict(data), dict(extras)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: not a valid {class_name}: {exc}") from None


def _known(extras: Any, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(extras, Mapping):
        return {}
    return {name: extras[name] for name in names if name in extras}


def encoder_config_from_hf(
    hf_cfg: Wav2Vec2Config | HubertConfig | Mapping[str, Any], *, source: str = "config"
) -> EncoderConfig:
    """Our :class:`EncoderConfig` for a ``Wav2Vec2Config`` or ``HubertConfig`` (or the dict of a config.json).

    Raises :class:`ConfigError` for variants we do not implement (Conformer and other
    model types, adapters, non-GELU activations, another LayerNorm epsilon, HuBERT
    without the projection LayerNorm or with a BatchNorm positional conv).
    """
    cfg, extras = _hf_fields(hf_cfg, source)
    cfg_out = EncoderConfig(
        conv_layers=[
            (int(c), int(k), int(s), 0) for c, k, s in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)
        ],
        conv_norm=_CONV_NORM_FROM_HF[cfg.feat_extract_norm],
        conv_bias=bool(cfg.conv_bias),
        hidden=cfg.hidden_size,
        layers=cfg.num_hidden_layers,
        heads=cfg.num_attention_heads,
        ffn=cfg.intermediate_size,
        style="pre_ln" if cfg.do_stable_layer_norm else "post_ln",
        pos_conv_kernel=cfg.num_conv_pos_embeddings,
        pos_conv_groups=cfg.num_conv_pos_embedding_groups,
        feature_dropout=float(cfg.feat_proj_dropout),
        dropout=float(cfg.hidden_dropout),
        attention_dropout=float(cfg.attention_dropout),
        activation_dropout=float(cfg.activation_dropout),
        layerdrop=float(cfg.layerdrop),
        **_known(extras.get("encoder"), _ENCODER_EXTRAS),
    )
    check(cfg_out, prefix=source)
    return cfg_out


def objective_config_from_hf(
    hf_cfg: Wav2Vec2Config | Mapping[str, Any], *, source: str = "config"
) -> ContrastiveConfig:
    """Our :class:`ContrastiveConfig` for the quantizer/masking fields of a ``Wav2Vec2Config``.

    HF has no Gumbel temperature schedule or feature penalty in its config: those come
    from our own export's extras, or keep our defaults (the BASE recipe).
    """
    cfg, extras = _hf_fields(hf_cfg, source)
    if cfg.model_type != "wav2vec2":
        raise ConfigError(f"{source}: a {cfg.model_type} config has no wav2vec 2.0 quantizer or contrastive fields")
    cfg_out = ContrastiveConfig(
        mask_prob=float(cfg.mask_time_prob),
        mask_length=cfg.mask_time_length,
        min_masks=cfg.mask_time_min_masks,
        num_negatives=cfg.num_negatives,
        logit_temp=float(cfg.contrastive_logits_temperature),
        codebook_groups=cfg.num_codevector_groups,
        codebook_entries=cfg.num_codevectors_per_group,
        codevector_dim=cfg.codevector_dim,
        final_dim=cfg.proj_codevector_dim,
        diversity_weight=float(cfg.diversity_loss_weight),
        target_dropout=float(cfg.feat_quantizer_dropout),
        **_known(extras.get("objective"), _OBJECTIVE_EXTRAS),
    )
    check(cfg_out, prefix=source)
    return cfg_out


# ---------------------------------------------------------------- state dicts


def _has_masked_spec_embed(hf_cfg: Any) -> bool:
    # Wav2Vec2Model only creates the parameter when some masking is configured.
    return float(hf_cfg.mask_time_prob) > 0.0 or float(hf_cfg.mask_feature_prob) > 0.0


def hf_state_dict(
    model: Wav2Vec2Pretraining | SpeechEncoder, *, encoder_only: bool = False, masked_spec_embed: bool = True
) -> dict[str, Tensor]:
    """Our parameters under HF's names (detached, CPU, contiguous).

    A :class:`Wav2Vec2Pretraining` gives ``Wav2Vec2ForPreTraining`` keys (encoder under
    ``wav2vec2.``) unless ``encoder_only``; a :class:`SpeechEncoder` gives
    ``Wav2Vec2Model`` keys.
    """
    if isinstance(model, Wav2Vec2Pretraining):
        encoder, heads = model.wav2vec2, not encoder_only
    elif isinstance(model, SpeechEncoder):
        encoder, heads = model, False
    else:
        raise TypeError(f"expected a SpeechEncoder or Wav2Vec2Pretraining, got {type(model).__name__}")
    prefix = HF_PREFIX if heads else ""
    out: dict[str, Tensor] = {}
    for name, tensor in encoder.state_dict().items():
        hf_name = _OUR_TO_HF.get(name, name)
        if hf_name == "masked_spec_embed" and not masked_spec_embed:
            continue
        out[prefix + hf_name] = tensor
    if heads:
        assert isinstance(model, Wav2Vec2Pretraining)
        for module_name in ("quantizer", "project_q", "project_hid"):
            for name, tensor in getattr(model, module_name).state_dict().items():
                out[f"{module_name}.{name}"] = tensor
    return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}


def _expected_hf_shapes(hf_cfg: Any, architecture: str) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the HF model, built on the meta device (no memory, no init)."""
    import transformers

    cls = getattr(transformers, architecture)
    with torch.device("meta"):
        hf_model = cls(hf_cfg)
    return {k: tuple(v.shape) for k, v in hf_model.state_dict().items()}


def _check_keys(tensors: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]], architecture: str) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k])
    if missing or unexpected or wrong:
        raise SpeechSSLError(
            f"export does not match transformers.{architecture}: missing {missing}, unexpected {unexpected}, "
            f"wrong shapes {[(k, tuple(tensors[k].shape), expected[k]) for k in wrong]}"
        )


# ---------------------------------------------------------------- export


def export_hf(
    model: Wav2Vec2Pretraining | SpeechEncoder,
    out_dir: str | Path,
    *,
    do_normalize: bool = False,
    overwrite: bool = False,
    encoder_only: bool = False,
) -> Path:
    """Write ``model`` as a transformers checkpoint directory and return its path.

    ``do_normalize`` goes to ``preprocessor_config.json``: set it when the model was
    trained on zero-mean unit-variance waveforms (``data.normalize_waveform``).
    The directory is written next to ``out_dir`` and renamed into place, so a reader
    never sees half an export; an existing non-empty ``out_dir`` is replaced only with
    ``overwrite=True``.
    """
    if isinstance(model, Wav2Vec2Pretraining):
        encoder_cfg, objective_cfg = model.wav2vec2.cfg, model.cfg
        heads = not encoder_only
    elif isinstance(model, SpeechEncoder):
        encoder_cfg, objective_cfg, heads = model.cfg, None, False
    else:
        raise TypeError(f"expected a SpeechEncoder or Wav2Vec2Pretraining, got {type(model).__name__}")

    hf_cfg = hf_config_from(encoder_cfg, objective_cfg, do_normalize=do_normalize)
    architecture = "Wav2Vec2ForPreTraining" if heads else "Wav2Vec2Model"
    tensors = hf_state_dict(model, encoder_only=encoder_only, masked_spec_embed=_has_masked_spec_embed(hf_cfg))
    return _write_export(Path(out_dir), hf_cfg, architecture, tensors, encoder_cfg, do_normalize, overwrite)


def export_hubert(
    encoder: SpeechEncoder, out_dir: str | Path, *, do_normalize: bool = False, overwrite: bool = False
) -> Path:
    """Write ``encoder`` as a ``transformers.HubertModel`` directory and return its path.

    Takes the encoder itself (a HuBERT run's, or a wav2vec 2.0 run's: the network is
    the same), so it does not depend on how a checkpoint nests it. ``do_normalize`` and
    ``overwrite`` as in :func:`export_hf`; the directory holds ``config.json`` (a
    ``HubertConfig``), ``model.safetensors`` and ``preprocessor_config.json`` (a
    ``Wav2Vec2FeatureExtractor``, which is what HuBERT checkpoints ship with).
    """
    if not isinstance(encoder, SpeechEncoder):
        raise TypeError(f"expected a SpeechEncoder, got {type(encoder).__name__}")
    hf_cfg = hubert_config_from(encoder.cfg, do_normalize=do_normalize)
    tensors = hf_state_dict(encoder, masked_spec_embed=_has_masked_spec_embed(hf_cfg))
    return _write_export(Path(out_dir), hf_cfg, "HubertModel", tensors, encoder.cfg, do_normalize, overwrite)


def encoder_to_hubert(encoder: SpeechEncoder) -> HubertModel:
    """A ``transformers.HubertModel`` (CPU, float32, eval mode) with ``encoder``'s weights.

    Its ``hidden_states`` equal our ``layer_states`` (for ``pre_ln`` the last one after
    the final LayerNorm: compare with ``last_hidden_state``, see :class:`EncoderOutput`).
    """
    from transformers import HubertModel

    if not isinstance(encoder, SpeechEncoder):
        raise TypeError(f"expected a SpeechEncoder, got {type(encoder).__name__}")
    hf_cfg = hubert_config_from(encoder.cfg)
    tensors = hf_state_dict(encoder, masked_spec_embed=_has_masked_spec_embed(hf_cfg))
    _check_keys(tensors, _expected_hf_shapes(hf_cfg, "HubertModel"), "HubertModel")
    model = HubertModel(hf_cfg)
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return model.eval()


def _write_export(
    out_dir: Path,
    hf_cfg: Any,
    architecture: str,
    tensors: dict[str, Tensor],
    encoder_cfg: EncoderConfig,
    do_normalize: bool,
    overwrite: bool,
) -> Path:
    from safetensors.torch import save_file
    from transformers import Wav2Vec2FeatureExtractor

    _check_keys(tensors, _expected_hf_shapes(hf_cfg, architecture), architecture)
    hf_cfg.architectures = [architecture]
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        hf_cfg.dtype = str(next(iter(dtypes))).removeprefix("torch.")
    preprocessor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=encoder_cfg.sample_rate,
        padding_value=0.0,
        do_normalize=bool(do_normalize),
        # Per-frame norms are padding-invariant given the mask; with GroupNorm (BASE)
        # HF's convention is to zero-pad and pass no mask.
        return_attention_mask=encoder_cfg.conv_norm == "layer_norm",
    )

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(hf_cfg.to_json_string(), encoding="utf-8")
        preprocessor.to_json_file(str(tmp / PREPROCESSOR_FILE))

    return write_dir_atomically(out_dir, write, overwrite=overwrite)


def write_dir_atomically(out_dir: Path, write: Callable[[Path], None], *, overwrite: bool) -> Path:
    """``write(tmp)`` fills a temp directory beside ``out_dir``, which is then renamed into place:
    a reader never sees half a directory. A non-empty ``out_dir`` is replaced only with ``overwrite``."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise ConfigError(f"{out_dir}: directory is not empty; pass overwrite=True to replace it")
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(tmp, 0o755)
        write(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        if out_dir.exists():
            old = parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(out_dir, old)
            try:
                os.rename(tmp, out_dir)
            except BaseException:
                os.rename(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# ---------------------------------------------------------------- import


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpeechSSLError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SpeechSSLError(f"{path}: expected a JSON object")
    return data


def _load_tensor_file(path: Path) -> dict[str, Tensor]:
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # corrupt / truncated / not a safetensors file
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise SpeechSSLError(f"{path}: cannot read weights ({type(exc).__name__}: {detail})") from None
    from speechssl.fsutil import safe_torch_load

    state = safe_torch_load(path, "weights file")  # pickles that would run code are refused, in one line
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SpeechSSLError(f"{path}: expected a flat state dict of tensors")
    return dict(state)


def _load_weights(directory: Path) -> dict[str, Tensor]:
    """All tensors of a local HF checkpoint directory (single file or sharded)."""
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (TORCH_FILE, TORCH_INDEX)):
        if (directory / single).is_file():
            return _load_tensor_file(directory / single)
        if (directory / index).is_file():
            weight_map = _read_json(directory / index).get("weight_map")
            if not isinstance(weight_map, Mapping):
                raise SpeechSSLError(f"{directory / index}: no weight_map")
            state: dict[str, Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (directory / shard).is_file():
                    raise SpeechSSLError(f"{directory / shard}: shard listed in {index} is missing")
                state.update(_load_tensor_file(directory / shard))
            return state
    raise SpeechSSLError(
        f"{directory}: no weights found (expected {SAFETENSORS_FILE}, {TORCH_FILE} or a sharded index)"
    )


def _read_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Tensor]]:
    directory = Path(path)
    if not directory.is_dir():
        raise SpeechSSLError(
            f"{directory}: not a local directory (HF export expected; hub ids are not downloaded)"
        )
    if not (directory / CONFIG_FILE).is_file():
        raise SpeechSSLError(f"{directory / CONFIG_FILE}: missing (not an HF checkpoint directory?)")
    return directory, _read_json(directory / CONFIG_FILE), _load_weights(directory)


def _split_state(
    state: Mapping[str, Tensor], prefix: str = HF_PREFIX
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(encoder tensors under our names, everything else)`` for either HF key layout.

    ``prefix`` is where head models keep the encoder (``wav2vec2.`` or ``hubert.``).
    """
    prefixed = any(k.startswith(prefix) for k in state)
    encoder: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if prefixed:
            if not key.startswith(prefix):
                rest[key] = tensor
                continue
            key = key[len(prefix):]
        elif not key.startswith(_ENCODER_ROOTS):
            rest[key] = tensor
            continue
        for old, new in _LEGACY_WEIGHT_NORM.items():
            if key.endswith(old):
                key = key[: -len(old)] + new
        encoder[_HF_TO_OUR.get(key, key)] = tensor
    return encoder, rest


def _load_into(
    module: torch.nn.Module, state: Mapping[str, Tensor], source: str | Path, optional: set[str]
) -> None:
    try:
        missing, unexpected = module.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise SpeechSSLError(f"{source}: weights do not match config.json: {exc}") from None
    bad_missing = sorted(set(missing) - optional)
    if bad_missing or unexpected:
        raise SpeechSSLError(
            f"{source}: weights do not match config.json: missing {bad_missing}, unexpected {sorted(unexpected)}"
        )
    for key in sorted(set(missing) & optional):
        log.info("%s: no %s in the checkpoint; keeping its fresh initialisation", source, key)


def _sample_rate(directory: Path, cfg: EncoderConfig, extras_present: bool) -> EncoderConfig:
    pre = directory / PREPROCESSOR_FILE
    if extras_present or not pre.is_file():
        return cfg
    rate = _read_json(pre).get("sampling_rate")
    if isinstance(rate, int) and rate > 0 and rate != cfg.sample_rate:
        cfg = dataclasses.replace(cfg, sample_rate=rate)
    return cfg


def _encoder_cfg(directory: Path, config: dict[str, Any]) -> EncoderConfig:
    cfg = encoder_config_from_hf(config, source=str(directory / CONFIG_FILE))
    extras = config.get(EXTRA_KEY)
    has_rate = isinstance(extras, Mapping) and "sample_rate" in (extras.get("encoder") or {})
    return _sample_rate(directory, cfg, has_rate)


def _load_encoder(
    encoder: SpeechEncoder, source: str | Path, state: Mapping[str, Tensor], prefix: str = HF_PREFIX
) -> None:
    enc_state, _ = _split_state(state, prefix)
    stray = [k for k in enc_state if k.startswith("adapter.")]
    if stray:
        raise ConfigError(f"{source}: adapter weights ({stray[0]}, ...) are not supported")
    # A config without masking has no masked_spec_embed (unused at inference).
    _load_into(encoder, enc_state, source, optional={"mask_embedding"})


def _prefix(config: Mapping[str, Any]) -> str:
    return _PREFIXES.get(config.get("model_type", "wav2vec2"), HF_PREFIX)


def import_hf(path: str | Path) -> SpeechEncoder:
    """Load a local HF wav2vec 2.0 or HuBERT checkpoint directory as a :class:`SpeechEncoder` (in eval mode).

    Reads ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``, loaded
    with ``weights_only=True``; sharded checkpoints too). Works for ``Wav2Vec2Model`` /
    ``HubertModel`` keys and for any head model with the encoder under ``wav2vec2.`` /
    ``hubert.`` (heads are ignored), and for both the ``parametrizations.weight.original0/1``
    and the old ``weight_g``/``weight_v`` names of the positional conv. Never uses the network.
    """
    directory, config, state = _read_checkpoint(path)
    encoder = SpeechEncoder(_encoder_cfg(directory, config))
    prefix = _prefix(config)
    _load_encoder(encoder, directory, state, prefix)
    ignored = sorted(_split_state(state, prefix)[1])
    if ignored:
        log.info("%s: ignoring %d non-encoder tensors (%s, ...)", directory, len(ignored), ignored[0])
    return encoder.eval()


def import_hf_pretraining(path: str | Path) -> Wav2Vec2Pretraining:
    """Load a local ``Wav2Vec2ForPreTraining`` checkpoint (encoder + quantizer + heads), in eval mode."""
    directory, config, state = _read_checkpoint(path)
    _, heads = _split_state(state)
    absent = [k for k in ("quantizer.weight_proj.weight", "quantizer.codevectors") if k not in heads]
    if absent:
        raise SpeechSSLError(
            f"{directory}: no quantizer weights ({', '.join(absent)} missing); this is not a "
            "Wav2Vec2ForPreTraining checkpoint -- use import_hf() for the encoder alone"
        )
    objective = objective_config_from_hf(config, source=str(directory / CONFIG_FILE))
    model = Wav2Vec2Pretraining(_encoder_cfg(directory, config), objective)
    _load_encoder(model.wav2vec2, directory, state)
    head_state = {k: v for k, v in heads.items() if k.startswith(_HEAD_ROOTS)}
    for key in sorted(set(heads) - set(head_state)):
        log.info("%s: ignoring %s", directory, key)
    # Load the heads alone: the encoder is already in place.
    head_modules = torch.nn.ModuleDict(
        {"quantizer": model.quantizer, "project_q": model.project_q, "project_hid": model.project_hid}
    )
    _load_into(head_modules, head_state, directory, optional=set())
    return model.eval()


def hubert_to_encoder(model: HubertModel) -> SpeechEncoder:
    """A :class:`SpeechEncoder` (eval mode) with the weights of an in-memory ``HubertModel``.

    The reverse of :func:`encoder_to_hubert`; for a checkpoint directory use :func:`import_hf`.
    Raises :class:`ConfigError` for HuBERT variants our encoder does not implement.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "hubert":
        raise TypeError(f"expected a transformers HubertModel, got {type(model).__name__}")
    source = f"{type(model).__name__}"
    encoder = SpeechEncoder(encoder_config_from_hf(config, source=source))
    _load_encoder(encoder, source, model.state_dict(), HUBERT_PREFIX)
    return encoder.eval()
