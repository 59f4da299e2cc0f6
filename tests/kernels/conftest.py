"""Shared set-up of the Triton tests: Triton's interpreter runs the kernels on CPU tensors.

The interpreter must be on before triton is first imported (its standard library is decorated then). On a machine
without CUDA it is the only way Triton runs, so it is switched on for this process here, at collection time.
"""
import os

import pytest
import torch

from ssmkit import kernels

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def triton_backend(op: str):
    """The Triton implementation of `op` on CPU under the interpreter, or skip the test saying why not."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("run with TRITON_INTERPRET=1 to test the Triton kernels on CPU")
    pytest.importorskip("triton")
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(standard.zeros_like, InterpretedFunction):
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set; run the Triton tests in their own "
                    "process with TRITON_INTERPRET=1")
    try:
        return kernels.load("triton", op, torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"triton backend unavailable here: {e}")


@pytest.fixture(scope="module")
def triton_scan():
    return triton_backend("selective_scan")


@pytest.fixture(scope="module")
def triton_ssd():
    return triton_backend("ssd")
