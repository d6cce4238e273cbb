from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from xmtc.models.bilstm import bilstm_states, supported


def packed_states(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    out, _ = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


@pytest.mark.parametrize("bias", [True, False])
def test_unpacked_states_and_gradients_equal_packed_lstm(bias):
    torch.manual_seed(0)
    lstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True, bias=bias)
    x = torch.randn(6, 9, 5, requires_grad=True)
    lengths = torch.tensor([9, 1, 4, 9, 7, 2])
    expected, got = packed_states(lstm, x, lengths), bilstm_states(lstm, x, lengths)
    assert got.shape == expected.shape == (6, 9, 8)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert got[1, 1:].abs().sum() == 0  # padding stays zero, as pad_packed_sequence gives
    weight = torch.randn_like(expected)
    grads = [torch.autograd.grad((s * weight).sum(), [x, lstm.weight_hh_l0_reverse, lstm.weight_ih_l0])
             for s in (expected, got)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_follows_replaced_parameters_and_refuses_what_it_cannot_do():
    lstm = nn.LSTM(3, 2, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(2, 4, 3), torch.tensor([4, 3])
    bilstm_states(lstm, x, lengths)
    lstm.load_state_dict({k: torch.randn_like(v) for k, v in lstm.state_dict().items()})  # in place
    torch.testing.assert_close(bilstm_states(lstm, x, lengths), packed_states(lstm, x, lengths))
    lstm.weight_hh_l0 = nn.Parameter(torch.randn_like(lstm.weight_hh_l0))  # a new Parameter object
    torch.testing.assert_close(bilstm_states(lstm, x, lengths), packed_states(lstm, x, lengths))
    assert not supported(nn.LSTM(3, 2, batch_first=True, bidirectional=True, num_layers=2))
    assert not supported(nn.LSTM(3, 2, batch_first=True))


def test_unpadded_batches_take_the_fused_kernel_with_the_same_states():
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 6, 6])
    torch.testing.assert_close(bilstm_states(lstm, x, lengths), packed_states(lstm, x, lengths), atol=1e-6, rtol=1e-5)
    # the same rows padded into a longer batch (the two-way path) give the same states at real positions
    padded = torch.cat([x, torch.zeros(3, 2, 5)], dim=1)
    torch.testing.assert_close(bilstm_states(lstm, padded, lengths)[:, :6], bilstm_states(lstm, x, lengths),
                               atol=1e-6, rtol=1e-5)


def test_large_batches_run_in_chunks_with_the_same_states(monkeypatch):
    import xmtc.models.bilstm as bilstm

    torch.manual_seed(3)
    lstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(7, 6, 5), torch.tensor([6] * 7)
    whole = bilstm_states(lstm, x, lengths)
    calls: list[int] = []
    handle = lstm.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    monkeypatch.setattr(bilstm, "_CHUNK_BYTES", 2 * 6 * 5 * 4)  # two rows of input per pass
    try:
        chunked = bilstm_states(lstm, x, lengths)
    finally:
        handle.remove()
    assert calls == [2, 2, 2, 1]
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-5)
