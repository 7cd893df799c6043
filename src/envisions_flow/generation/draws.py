"""How the next token is chosen: counter-based uniforms per sequence, drawn from by inverting the
cumulative distribution, or the most likely token (greedy). Each sequence's draws depend on
(seed, sequence, step) alone, so the batch a sequence is decoded in never changes its samples."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def draw_tokens(logits, uniforms, block: int = 256):
    """One token per row drawn from softmax(logits), and its log-prob under that very distribution.

    By inverting the cumulative distribution at the row's uniform in [0, 1) (`uniforms`, shape
    (rows, 1), from `RowStreams`): `torch.multinomial` draws an exponential variate for every
    vocabulary entry (49k per row), a fifth of a CPU decoding step at batch 32. The inversion
    runs in two levels, over sums of `block` entries and then within the block drawn, because
    a cumulative sum over the whole vocabulary runs one entry after another (5% of a step at
    batch 320). Searching with `right=True` for a point below the block's total never lands
    on a zero-probability token. Float64 logits are drawn from in float64, others in float32.
    """
    import torch

    probabilities = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    rows, vocabulary = probabilities.shape
    spare = -vocabulary % block
    padded = (torch.nn.functional.pad(probabilities, (0, spare)) if spare else probabilities).view(rows, -1, block)
    block_totals = padded.sum(dim=-1)
    cumulative = block_totals.cumsum(dim=-1)
    draws = uniforms.to(device=logits.device, dtype=probabilities.dtype) * cumulative[:, -1:]
    chosen_block = torch.searchsorted(cumulative, draws, right=True).clamp_(max=cumulative.shape[1] - 1)
    within = padded.gather(1, chosen_block[:, :, None].expand(rows, 1, block)).squeeze(1).cumsum(dim=-1)
    below = cumulative.gather(1, chosen_block) - block_totals.gather(1, chosen_block)
    remainder = torch.minimum((draws - below).clamp_(min=0), within[:, -1:].nextafter(torch.zeros_like(below)))
    chosen = (chosen_block * block + torch.searchsorted(within, remainder, right=True)).squeeze(1)
    return chosen, probabilities.gather(1, chosen[:, None]).squeeze(1).log()

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea and Flood 2014): a bijection of uint64 that mixes every bit."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))

class RowStreams:
    """A stream of uniforms per sequence, a function of (seed, sequence, step) alone.

    Counter-based (SplitMix64 of the sequence's key plus the step): the t-th number of a
    sequence does not depend on which batch it is decoded in, beside which rows, or how many
    rows left before it, so the same seed gives the same samples whatever `batch_size` is,
    up to the float rounding of the logits themselves, which the batch's size and padding
    change: in float32 a draw lands on another token about once in 500 (where its uniform
    falls within ~1e-5 of a boundary of the cumulative distribution); tests/test_generation.py
    checks equality in float64. Uniforms have 24 bits, as `torch.rand` gives in float32.
    """

    def __init__(self, seed: int, sequences: Sequence[int]) -> None:
        base = _splitmix64(np.array([int(seed) % 2**64], dtype=np.uint64))
        self.keys = _splitmix64(base + _GOLDEN * (np.asarray(sequences, dtype=np.uint64) + np.uint64(1)))

    def uniforms(self, step: int, device="cpu"):
        """The step-th uniform of each remaining row, shape (rows, 1)."""
        import torch

        bits = _splitmix64(self.keys + _GOLDEN * np.full(1, step + 1, dtype=np.uint64)) >> np.uint64(40)
        return torch.from_numpy((bits.astype(np.float32) * np.float32(2.0**-24))[:, None]).to(device)

    def select_rows(self, keep: Sequence[int]) -> None:
        """Keep these rows' streams (the rows that stay in the batch), in this order."""
        self.keys = self.keys[np.asarray(keep, dtype=np.int64)]

def greedy_tokens(logits):
    """The most likely token of each row and its log-prob."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.argmax(dim=-1)
    return chosen, logprobs.gather(1, chosen[:, None]).squeeze(1)
