"""``fuse:<mode>:<spec>+<spec>[+...]``: upstreams of different frame rates as one upstream.

CV-HuBERT-style frame-rate fusion: encoders at 20, 40 and 80 ms frames (``conv_stack(...,
frame_ms=...)``) see the same audio at different granularities; fusing them lets a probe
use all of them. Every member runs on the same waveforms (each with its own input
normalisation), then its layers are brought to the frame rate of the *finest* member
and combined according to ``<mode>``:

``layers``
    The fused layer list is every member's layer list, in spec order (member 1's
    ``L1`` layers, then member 2's ...). The featurizer's softmax-weighted layer sum then
    learns one weight per (member, layer), so a probe chooses across frame rates and
    depths at once, members with different layer counts need no pairing rule, and the
    learned weights say which frame rate was used (``metadata()["fusion"]["layer_sources"]``
    names the member and layer behind every index). Needs one feature dim for all members
    (the upstream contract: all layers have the same shape). The default choice.
``concat``
    Layer ``i`` is the concatenation along the feature dim of every member's layer ``i``;
    ``feature_dim`` is the sum of the members'. ``sum``: their element-wise sum (dims
    must match). Both pair layers by index, so members need the same layer count; a
    single-layer member (``mfcc``, ``fbank``) is paired with every layer instead.

Alignment. Frame ``k`` of a member at ``r`` frames/s is taken to cover
``[k / r, (k + 1) / r)``. Fused frame ``j`` (at the finest rate ``R``) has its centre at
``(j + 0.5) / R`` and takes member frame ``floor((j + 0.5) * r / R)`` -- repetition, i.e.
nearest-neighbour upsampling -- clamped to that utterance's own valid frames, so padding
is never read and the result is padding-invariant whenever every member is. For the
``conv_stack`` front ends this is exact: a 40 ms frame is built from 20 ms frames
``2k, 2k+1`` and is repeated on exactly those. For unrelated front ends (fbank's
centred 10 ms windows against a CNN) the pairing is off by at most half a coarse frame.
The fused lengths are those of the finest member (the first one in spec order if several
share the finest rate); the others are stretched or edge-repeated to them.

Spec syntax. ``fuse:`` then a mode, ``:``, then two or more member specs joined by
``+``: ``fuse:layers:ckpt:runs/h20/best.pt+ckpt:runs/h40/best.pt+ckpt:runs/h80/best.pt``.
The mode is mandatory, so it can never be mistaken for a member. A ``+`` starts a new
member only when what follows it is itself a spec (a bare name such as ``fbank``, or a
registered prefix and ``:`` such as ``ckpt:`` / ``hf:``); any other ``+`` belongs to the
path before it, so ``ckpt:runs/a+b/best.pt`` needs no escaping. The one spelling that
cannot be written is a path containing ``+<prefix>:`` or ending in ``+fbank`` (or
another bare name) -- link such a path under another name. Members cannot be ``fuse:``
specs themselves.

Fingerprint: the mode and every member's frame rate and fingerprint, in order, so the
feature cache changes when any member or the combination does.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from speechssl.errors import ConfigError
from speechssl.upstream.base import Upstream, UpstreamOutput, valid_mask

VERSION = "fuse/1"
"""Bump when a change here alters the features (invalidates the feature caches)."""

NAME = "fuse"
MODES = ("layers", "concat", "sum")
SEPARATOR = "+"
USAGE = "fuse:<layers|concat|sum>:<spec>+<spec>[+...]"


# ---------------------------------------------------------------- spec


def _starts_member(text: str) -> bool:
    """Whether ``text`` is itself an upstream spec (a bare name, or ``prefix:...``)."""
    from speechssl.upstream import parse_spec

    try:
        parse_spec(text)
    except ConfigError:
        return False
    return True


def split_members(text: str) -> list[str]:
    """``"ckpt:a+b.pt+fbank"`` -> ``["ckpt:a+b.pt", "fbank"]`` (see the module docstring)."""
    members: list[str] = []
    for piece in text.split(SEPARATOR):
        if members and not _starts_member(piece.strip()):
            members[-1] += SEPARATOR + piece  # part of the previous member's path
        else:
            members.append(piece)
    return [member.strip() for member in members]


def parse_fusion_spec(argument: str) -> tuple[str, list[str]]:
    """``"concat:ckpt:a+ckpt:b"`` -> ``("concat", ["ckpt:a", "ckpt:b"])``; checks the form only."""
    from speechssl.upstream import known_upstreams

    mode, colon, rest = argument.strip().partition(":")
    if mode not in MODES or not colon:
        raise ConfigError(
            f"fuse: expected {USAGE}, got 'fuse:{argument}' (the mode {mode!r} must be one of {', '.join(MODES)})"
        )
    members = split_members(rest)
    if not _starts_member(members[0]):
        raise ConfigError(
            f"fuse: {members[0]!r} is not an upstream spec; members are joined by '{SEPARATOR}', "
            f"each one of: {', '.join(s for s in known_upstreams() if not s.startswith(NAME + ':'))}"
        )
    nested = [m for m in members if m.partition(":")[0] == NAME]
    if nested:
        raise ConfigError(f"fuse: members cannot be fuse: specs themselves, got {nested[0]!r}")
    if len(members) < 2:
        raise ConfigError(
            f"fuse: needs at least two member specs joined by '{SEPARATOR}', got {members} "
            f"(a '{SEPARATOR}' starts a new member only when a spec such as ckpt:<path> or fbank follows it)"
        )
    return mode, members


# ---------------------------------------------------------------- alignment


def upsample_index(frames: int, rate: float, member_rate: float, member_lengths: Tensor) -> Tensor:
    """[B, frames] index into a member's frames for each fused frame (see the module docstring)."""
    centres = torch.arange(frames, dtype=torch.float64, device=member_lengths.device) + 0.5
    index = torch.floor(centres * (float(member_rate) / float(rate))).long()[None, :]
    last = (member_lengths.long() - 1).clamp(min=0)[:, None]
    return torch.minimum(index, last)


def _align(x: Tensor, index: Tensor) -> Tensor:
    """Gather [B, T', D] member frames at ``index`` [B, T] -> [B, T, D]."""
    index = index.clamp(max=max(x.shape[1] - 1, 0))
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


# ---------------------------------------------------------------- upstream


class FusionUpstream(Upstream):
    """Several upstreams, aligned to the finest frame rate and combined (``layers``/``concat``/``sum``)."""

    def __init__(self, mode: str, members: Sequence[Upstream]) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"fuse: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if len(members) < 2:
            raise ConfigError(f"fuse: needs at least two members, got {len(members)}")
        self.mode = mode
        self.members = nn.ModuleList(members)
        names = [m.name or type(m).__name__ for m in members]
        rates = [float(m.frame_rate) for m in members]
        if len({m.sample_rate for m in members}) > 1:
            raise ConfigError(f"fuse: members expect different sample rates: {[m.sample_rate for m in members]}")
        self.sample_rate = members[0].sample_rate
        self.reference = max(range(len(members)), key=lambda i: (rates[i], -i))  # finest; first on ties
        self.frame_rate = rates[self.reference]
        dims = [int(m.feature_dim) for m in members]
        counts = [int(m.num_layers) for m in members]
        described = ", ".join(f"{n} ({c} layers x {d}, {r:g} Hz)" for n, c, d, r in zip(names, counts, dims, rates))

        if mode in ("layers", "sum") and len(set(dims)) > 1:
            hint = "; use fuse:concat to join different widths" if mode == "layers" else ""
            raise ConfigError(f"fuse:{mode} needs members of one feature dim, got {described}{hint}")
        # For every fused layer, the (member, member layer) pairs it is made of.
        self.layer_sources: list[list[tuple[int, int]]]
        if mode == "layers":
            self.layer_sources = [[(i, k)] for i, c in enumerate(counts) for k in range(c)]
            self.num_layers = len(self.layer_sources)
            self.feature_dim = dims[0]
        else:
            deep = {c for c in counts if c > 1}
            if len(deep) > 1:
                raise ConfigError(
                    f"fuse:{mode} pairs layers by index and needs one layer count (or single-layer members), "
                    f"got {described}; fuse:layers lists every member's layers instead"
                )
            self.num_layers = deep.pop() if deep else 1
            self.feature_dim = sum(dims) if mode == "concat" else dims[0]
            self.layer_sources = [
                [(i, k if c > 1 else 0) for i, c in enumerate(counts)] for k in range(self.num_layers)
            ]

    def forward(self, waveforms: Tensor, lengths: Tensor) -> UpstreamOutput:
        lengths = lengths.to(waveforms.device)
        outputs = [member(waveforms, lengths) for member in self.members]
        ref = outputs[self.reference]
        frames = ref.layers[0].shape[1]
        out_lengths = ref.lengths.long().clamp(max=frames)
        aligned: list[list[Tensor]] = []
        for member, out in zip(self.members, outputs):
            index = upsample_index(frames, self.frame_rate, member.frame_rate, out.lengths.to(waveforms.device))
            aligned.append([_align(x.float(), index) for x in out.layers])

        if self.mode == "layers":
            layers = [x for member_layers in aligned for x in member_layers]
        else:
            per_index = [[m[k] if len(m) > 1 else m[0] for m in aligned] for k in range(self.num_layers)]
            if self.mode == "concat":
                layers = [torch.cat(xs, dim=-1) for xs in per_index]
            else:
                layers = [torch.stack(xs).sum(dim=0) for xs in per_index]
        keep = valid_mask(out_lengths, frames)[:, :, None]
        return UpstreamOutput(layers=[x * keep for x in layers], lengths=out_lengths)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{VERSION}\n{self.mode}".encode())
        for member in self.members:
            digest.update(f"\n{float(member.frame_rate)!r}:{member.fingerprint()}".encode())
        return digest.hexdigest()[:16]

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["fusion"] = {
            "mode": self.mode,
            "members": [m.metadata() for m in self.members],
            "layer_sources": [[list(pair) for pair in pairs] for pairs in self.layer_sources],
        }
        return meta


def build_fusion(argument: str) -> FusionUpstream:
    """The ``fuse:`` builder: parse, build every member (errors name the member), combine."""
    from speechssl.upstream import build_upstream

    mode, specs = parse_fusion_spec(argument)
    members = [build_upstream(spec) for spec in specs]
    return FusionUpstream(mode, members)
