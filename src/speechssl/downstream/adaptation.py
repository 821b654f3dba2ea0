"""Adaptation regimes: which upstream weights train together with the probe.

``regime`` (a :class:`~speechssl.downstream.config.BenchConfig` field) is one of

- ``frozen``: nothing of the upstream trains; features come from the on-disk cache.
- ``full``: every upstream weight except the CNN waveform front end (``adapt.train_cnn``
  trains it too) and the pretraining-only mask embedding.
- ``partial``: exactly ``adapt.partial_layers`` Transformer layers -- the bottom, middle or
  top block (``adapt.partial``), ML-SUPERB 2.0's three partial fine-tuning variants.
- ``adapter``: Houlsby bottleneck adapters (``h + up(gelu(down(h)))``, the up projection
  zero-initialised so training starts from the pretrained function) after the attention
  and the feed-forward sublayer of every Transformer layer, plus those layers' LayerNorms
  (Houlsby et al. 2019 train them too); everything else stays fixed.
- ``lora``: LoRA (through ``peft``) on the attention and/or feed-forward projections of
  every Transformer layer; everything else stays fixed.

Regimes other than ``frozen`` need an upstream with Transformer layers: our ``ckpt:``
encoders and ``hf:`` models. Both follow the ``transformers`` Wav2Vec2 layout (a
``feature_extractor`` CNN and ``encoder.layers`` whose blocks have ``attention`` and
``feed_forward``), which is what this module relies on; anything else is refused with a
message that says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from speechssl.downstream.config import AdaptConfig, BenchConfig, SpecAugmentConfig, regime_label
from speechssl.errors import ConfigError

_LORA_TARGETS = {
    "attention": r"attention\.(q_proj|k_proj|v_proj|out_proj)",
    "ffn": r"feed_forward\.(intermediate_dense|output_dense)",
}
# Used only by pretraining (masking); never reached in a benchmark forward pass.
_PRETRAINING_ONLY = ("mask_embedding", "masked_spec_embed")


# ---------------------------------------------------------------- the upstream's parts


def backbone(upstream: nn.Module, regime: str = "") -> nn.Module:
    """The module holding ``feature_extractor`` and ``encoder.layers`` (refused otherwise)."""
    for candidate in (getattr(upstream, "encoder", None), getattr(upstream, "model", None)):
        if (isinstance(candidate, nn.Module) and hasattr(candidate, "feature_extractor")
                and isinstance(getattr(getattr(candidate, "encoder", None), "layers", None), nn.ModuleList)):
            return candidate
    name = getattr(upstream, "name", "") or type(upstream).__name__
    raise ConfigError(
        f"regime {regime or '(adapted)'} needs an upstream with Transformer layers (ckpt: or hf:); "
        f"{name!r} has no encoder to adapt -- use regime=frozen"
    )


def transformer_layers(upstream: nn.Module) -> nn.ModuleList:
    return backbone(upstream).encoder.layers


def partial_layer_ids(num_layers: int, position: str, count: int) -> list[int]:
    """Indices of the ``count`` layers of a ``position`` block among ``num_layers``."""
    if count > num_layers:
        raise ConfigError(f"adapt.partial_layers={count} but the upstream has only {num_layers} Transformer layers")
    start = {"bottom": 0, "middle": (num_layers - count) // 2, "top": num_layers - count}[position]
    return list(range(start, start + count))


# ---------------------------------------------------------------- adapters


class HoulsbyAdapter(nn.Module):
    """``h -> h + up(gelu(down(h)))``; identity at initialisation (``up`` is zero)."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, size)
        self.up = nn.Linear(size, dim)
        nn.init.normal_(self.down.weight, std=0.01)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(hidden)))


def _apply_to_output(adapter: HoulsbyAdapter):
    """A forward hook that passes a sublayer's output (or the first item of a tuple output,
    as ``transformers`` attention returns) through ``adapter``."""

    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (adapter(output[0]), *output[1:])
        return adapter(output)

    return hook


def add_adapters(upstream: nn.Module, size: int) -> list[str]:
    """Insert two Houlsby adapters in every Transformer layer; returns the adapters' names."""
    names = []
    for index, layer in enumerate(transformer_layers(upstream)):
        for sublayer in ("attention", "feed_forward"):
            target = getattr(layer, sublayer, None)
            if not isinstance(target, nn.Module):
                raise ConfigError(f"regime adapter: Transformer layer {index} ({type(layer).__name__}) has no "
                                  f"{sublayer!r} sublayer to place an adapter after")
            dim = _output_dim(target)
            adapter = HoulsbyAdapter(dim, size)
            layer.add_module(f"adapter_{sublayer}", adapter)  # registered: trained, saved, moved with .to()
            target.register_forward_hook(_apply_to_output(adapter))
            names.append(f"layers.{index}.adapter_{sublayer}")
    return names


def _output_dim(sublayer: nn.Module) -> int:
    linears = [m for m in sublayer.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"regime adapter: cannot tell the output size of {type(sublayer).__name__}")
    return linears[-1].out_features


# ---------------------------------------------------------------- LoRA


def add_lora(upstream: nn.Module, cfg: AdaptConfig) -> nn.Module:
    """Inject LoRA into the chosen projections of every Transformer layer (``peft``)."""
    from speechssl.extras import require

    peft = require("peft", "the LoRA regime")  # the [bench] extra
    LoraConfig, inject_adapter_in_model = peft.LoraConfig, peft.inject_adapter_in_model  # noqa: N806
    pattern = "|".join(_LORA_TARGETS[t] for t in cfg.lora_targets)
    # peft matches a string target against each module's full name (re.fullmatch).
    target = rf".*encoder\.layers\.\d+\.(?:{pattern})"
    names = [n for n, m in upstream.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(target, n)]
    if not names:
        raise ConfigError(f"regime lora: no {' / '.join(cfg.lora_targets)} projections found in the upstream's "
                          "Transformer layers")
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=target, bias="none")
    return inject_adapter_in_model(config, upstream)


def merge_lora(upstream: nn.Module) -> int:
    """Fold every LoRA update into its base weight and remove the LoRA modules (in place);
    returns how many layers were merged. The result has the original architecture."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, module in list(upstream.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = upstream.get_submodule(parent_name) if parent_name else upstream
            setattr(parent, child, module.get_base_layer())
            merged += 1
    return merged


# ---------------------------------------------------------------- applying a regime


@dataclass
class Adaptation:
    """What applying a regime did to an upstream (recorded in every result)."""

    regime: str
    label: str
    tunable_params: int
    total_params: int
    trained: list[str]
    """Names of the upstream parameters that train (empty for frozen)."""

    def summary(self) -> dict[str, Any]:
        return {"regime": self.regime, "label": self.label, "upstream_tunable_params": self.tunable_params,
                "upstream_params": self.total_params}


def apply_regime(upstream: nn.Module, cfg: BenchConfig) -> Adaptation:
    """Set ``requires_grad`` of every upstream parameter for ``cfg.regime``, inserting
    adapters or LoRA first where the regime has them. Raises ConfigError for an upstream
    that cannot be adapted."""
    regime, adapt = cfg.regime, cfg.adapt
    upstream.requires_grad_(False)
    if regime != "frozen":
        model = backbone(upstream, regime)
        layers = model.encoder.layers
        if regime == "full":
            model.requires_grad_(True)
            if not adapt.train_cnn:
                model.feature_extractor.requires_grad_(False)
        elif regime == "partial":
            for index in partial_layer_ids(len(layers), adapt.partial, adapt.partial_layers):
                layers[index].requires_grad_(True)
        elif regime == "adapter":
            add_adapters(upstream, adapt.adapter_size)
            for layer in layers:
                for module in layer.modules():
                    if isinstance(module, (nn.LayerNorm, HoulsbyAdapter)):
                        module.requires_grad_(True)
        elif regime == "lora":
            add_lora(upstream, adapt)
            upstream.requires_grad_(False)
            for name, param in upstream.named_parameters():
                if ".lora_" in name:
                    param.requires_grad_(True)
        for name, param in upstream.named_parameters():
            if name.rsplit(".", 1)[-1] in _PRETRAINING_ONLY:
                param.requires_grad_(False)
        if adapt.gradient_checkpointing:
            enable_gradient_checkpointing(upstream)
        _disable_internal_masking(model)
        _disable_layerdrop(model)
    trained = [n for n, p in upstream.named_parameters() if p.requires_grad]
    return Adaptation(
        regime=regime, label=regime_label(cfg),
        tunable_params=sum(p.numel() for p in upstream.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in upstream.parameters()),
        trained=trained,
    )


def enable_gradient_checkpointing(upstream: nn.Module) -> None:
    model = backbone(upstream)
    if hasattr(model, "gradient_checkpointing_enable"):  # transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.encoder.gradient_checkpointing = True


def _disable_internal_masking(model: nn.Module) -> None:
    """transformers' Wav2Vec2-family models apply their own SpecAugment in train mode when
    the config asks for it (``mask_time_prob`` defaults to 0.05); our encoders do not.
    Switched off so every upstream is adapted alike -- masking is ``specaugment.*``."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "apply_spec_augment"):
        config.apply_spec_augment = False


def _disable_layerdrop(model: nn.Module) -> None:
    """LayerDrop skips random layers in train mode. The weighted layer sum needs every layer
    of every batch (transformers even leaves skipped layers out of ``hidden_states``), so
    adapted upstreams train without it, ours and transformers' alike."""
    if hasattr(model.encoder, "layerdrop"):  # our encoders
        model.encoder.layerdrop = 0.0
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "layerdrop"):
        config.layerdrop = 0.0


def check_budget(tunable: int, cfg: AdaptConfig, where: str) -> None:
    if tunable > cfg.max_tunable_params:
        raise ConfigError(
            f"{where}: {tunable:,} trained parameters exceed adapt.max_tunable_params={cfg.max_tunable_params:,} "
            "(choose a lighter regime or probe, or raise the budget)"
        )


# ---------------------------------------------------------------- optimisation


def layer_index(name: str, num_layers: int, *, pre_ln: bool) -> int:
    """Depth of an upstream parameter for layer-wise LR decay: i + 1 for Transformer layer i,
    0 for everything below the Transformer (CNN, projection, positional convolution, and the
    input LayerNorm of a post-LN encoder), num_layers for the final LayerNorm of a pre-LN one."""
    match = re.search(r"encoder\.layers\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    if pre_ln and re.search(r"(^|\.)encoder\.layer_norm\.", name):
        return num_layers
    return 0


def _is_pre_ln(model: nn.Module) -> bool:
    """Whether ``encoder.layer_norm`` follows the last layer (pre-LN) or precedes the first."""
    flag = getattr(model.encoder, "pre_ln", None)  # our encoders
    if flag is None:
        flag = getattr(getattr(model, "config", None), "do_stable_layer_norm", False)  # transformers
    return bool(flag)


def upstream_param_groups(upstream: nn.Module, cfg: BenchConfig, probe_lr: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the upstream's trained weights, one per depth when
    ``adapt.layer_decay`` < 1: depth d of L layers gets ``upstream_lr * decay^(L-d)``."""
    named = [(n, p) for n, p in upstream.named_parameters() if p.requires_grad]
    if not named:
        return []
    default = probe_lr / 10 if cfg.regime in ("full", "partial") else probe_lr
    base_lr = cfg.adapt.upstream_lr or default
    model = backbone(upstream)
    num_layers, pre_ln = len(model.encoder.layers), _is_pre_ln(model)
    by_depth: dict[int, list[Tensor]] = {}
    for name, param in named:
        depth = layer_index(name, num_layers, pre_ln=pre_ln) if cfg.adapt.layer_decay < 1.0 else num_layers
        by_depth.setdefault(depth, []).append(param)
    return [{"params": params, "lr": base_lr * cfg.adapt.layer_decay ** (num_layers - depth), "upstream": True}
            for depth, params in sorted(by_depth.items())]


# ---------------------------------------------------------------- SpecAugment


class SpecAugment:
    """Zero ``time_masks`` random spans of up to ``time_width`` valid frames and
    ``feature_masks`` random bands of up to ``feature_width`` dimensions of every
    utterance's ``[B, T, D]`` features (called on training batches only)."""

    def __init__(self, cfg: SpecAugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, features: Tensor, lengths: Tensor) -> Tensor:
        if not self.cfg.enabled:
            return features
        batch, frames, dim = features.shape
        device = features.device
        lengths = lengths.to(device)
        keep = torch.ones(batch, frames, dim, dtype=torch.bool, device=device)
        time = torch.arange(frames, device=device)
        channels = torch.arange(dim, device=device)
        for _ in range(self.cfg.time_masks):
            width = torch.minimum(torch.randint(0, self.cfg.time_width + 1, (batch,), device=device), lengths)
            start = (torch.rand(batch, device=device) * (lengths - width + 1)).long()
            span = (time[None, :] >= start[:, None]) & (time[None, :] < (start + width)[:, None])
            keep &= ~span[:, :, None]
        for _ in range(self.cfg.feature_masks):
            width = torch.randint(0, min(self.cfg.feature_width, dim) + 1, (batch,), device=device)
            start = (torch.rand(batch, device=device) * (dim - width + 1)).long()
            band = (channels[None, :] >= start[:, None]) & (channels[None, :] < (start + width)[:, None])
            keep &= ~band[:, None, :]
        return features * keep
