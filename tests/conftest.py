import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # The suite runs one pytest worker per core (-n 2) on tiny tensors: more intra-op threads
    # only contend. Restored afterwards, so a test that changes it cannot leak the change.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
