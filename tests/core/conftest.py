"""Shared checks of the mixer contract: stepping a recurrent mixer through a sequence and running it in pieces."""
import pytest
import torch


def _step_through(mixer, x, state=None):
    """Feed x (B, L, ...) to `mixer.step` one position at a time from `state` (default: its initial state)."""
    state = mixer.initial_state(x.shape[0], *x.shape[2:-1]) if state is None else state
    ys = []
    for x_t in x.unbind(1):
        y_t, state = mixer.step(x_t, state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


def _in_pieces(mixer, x, cuts):
    """`forward` on x[:, a:b] for consecutive cuts, carrying the state over; returns (y, final state)."""
    ys, state = [], None
    bounds = [0, *cuts, x.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        y, state = mixer(x[:, a:b], state, return_state=True)
        ys.append(y)
    return torch.cat(ys, 1), state


@pytest.fixture
def step_through():
    return _step_through


@pytest.fixture
def in_pieces():
    return _in_pieces
