"""Helpers shared by the transformers conversion tests (Wav2Vec2 and HuBERT layouts)."""

import torch

TOL = 1e-4


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Jitter every parameter so that norm weights/biases are not the trivial 1/0 and any swap shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def padded_batch(lengths=(8000, 5600), seed=1):
    """White-noise utterances zero-padded into a batch, with lengths and an HF attention mask."""
    gen = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        waves[i, :n] = torch.randn(n, generator=gen)
    lengths = torch.tensor(lengths)
    attention_mask = (torch.arange(waves.shape[1])[None, :] < lengths[:, None]).long()
    return waves, lengths, attention_mask


def assert_states_match(ours, hf_out, hf_model, pre_ln: bool) -> None:
    """Every hidden state within TOL of transformers' on the valid frames."""
    valid = ~ours.padding_mask
    hf_states = list(hf_out.hidden_states)
    assert len(hf_states) == len(ours.layer_states)
    if pre_ln:
        # transformers 5 records the last layer's output *before* the final LayerNorm in
        # hidden_states (capture_outputs(tie_last_hidden_states=False)); our last state,
        # like HF's last_hidden_state, is after it.
        assert (hf_out.last_hidden_state - hf_states[-1]).abs().max() > 1e-2
        hf_states[-1] = hf_model.encoder.layer_norm(hf_states[-1])
    for i, (ref, got) in enumerate(zip(hf_states, ours.layer_states)):
        diff = (ref[valid] - got[valid]).abs().max().item()
        assert diff <= TOL, f"hidden state {i}: max abs diff {diff}"
    diff = (hf_out.last_hidden_state[valid] - ours.layer_states[-1][valid]).abs().max().item()
    assert diff <= TOL, f"last_hidden_state: max abs diff {diff}"
