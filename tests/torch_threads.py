"""The torch thread count of the test session (conftest.py sets two, the machine's cores)."""

import contextlib

import torch


@contextlib.contextmanager
def one_torch_thread():
    """Torch on one thread for a module whose figures were measured so (the micro model's word error rates),
    and back to the session's two after it: left at one, every later test ran on half the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
