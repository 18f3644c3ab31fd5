"""A few hundred training steps on a small synthetic task: fast and reference reach the same loss.

The detectors are learnable functions of the text features (``sigmoid`` of fixed random
projections), so the IB objective can drop well below its start. Both models start from the
same weights and see the same batches; only their random draws differ, so their losses are
compared within the spread between two reference runs with different seeds (and a floor).
"""

import pytest
import torch
from fused_helpers import FUSED_BACKENDS, skip_triton_on_cpu_without_interpreter  # noqa: F401
from helpers import small_config

import ithp_fast
from ithp_fast.reference import ITHP as ReferenceITHP

ROWS = 64


def batches(cfg, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    to_acoustic = torch.randn(cfg.X0_dim, cfg.X1_dim, generator=g) / cfg.X0_dim**0.5
    to_visual = torch.randn(cfg.X0_dim, cfg.X2_dim, generator=g) / cfg.X0_dim**0.5
    for _ in range(steps):
        x = torch.randn(ROWS, cfg.X0_dim, generator=g)
        yield x, torch.sigmoid(3 * x @ to_visual), torch.sigmoid(3 * x @ to_acoustic)


def train(model, cfg, steps, device, torch_seed):
    torch.manual_seed(torch_seed)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for x, visual, acoustic in batches(cfg, steps):
        loss = model(x.to(device), visual.to(device), acoustic.to(device))[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def tail_mean(losses, n=50):
    return sum(losses[-n:]) / n


@pytest.fixture
def one_thread():
    """Tiny ops on a shared CPU: one thread avoids OpenMP waits that dominate otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_same_final_loss(device, backend, one_thread):
    steps = 300 if device == "cuda" or backend == "torch" else 100  # the interpreter is slow
    cfg = small_config(drop_prob=0.1)
    torch.manual_seed(0)
    init = ReferenceITHP(cfg).state_dict()
    runs = {}
    for name, seed in (("ref_a", 1), ("ref_b", 2), ("fast", 3)):
        model = ithp_fast.ITHP(cfg, backend=backend) if name == "fast" else ReferenceITHP(cfg)
        model.load_state_dict(init)
        runs[name] = train(model, cfg, steps, device, seed)
    start = runs["ref_a"][0]
    finals = {name: tail_mean(losses) for name, losses in runs.items()}
    assert finals["ref_a"] < 0.92 * start and finals["fast"] < 0.92 * start, (start, finals)
    spread = abs(finals["ref_a"] - finals["ref_b"])
    assert abs(finals["fast"] - finals["ref_a"]) <= 3 * spread + 0.05 * finals["ref_a"], finals
