"""Fixtures shared by the Part A tests: the tiny IF bundle, its embeddings, one torch thread."""
import pytest
import torch

from diffnb.a.models import load_stage1
from diffnb.a.prompts import load_embeddings


@pytest.fixture(scope="module")
def one_thread():
    """The tiny UNet gains nothing from threads, and on a shared CPU OpenMP threads spin-wait and slow
    the loops tenfold; run a module on one thread and restore the setting after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def stage1():
    return load_stage1("tiny", device="cpu")


@pytest.fixture(scope="module")
def emb():
    return load_embeddings()


@pytest.fixture(scope="session", autouse=True)
def shipped_data_stays_untouched():
    """No test may write into data/ (a finished mini run exports there unless given ``out``)."""
    import hashlib
    from diffnb.core.paths import data_dir

    def digest():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data_dir().rglob("*")) if p.is_file()}

    before = digest()
    yield
    after = digest()
    changed = sorted(str(p) for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"tests changed shipped files {changed}; pass out= to train_mini in tests"
