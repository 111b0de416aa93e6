import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread_per_worker():
    # The suite runs one pytest worker per core (-n 2) on tiny tensors: more intra-op threads
    # only contend.
    torch.set_num_threads(1)
