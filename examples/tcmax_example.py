"""TCMax on two small multimodal classifiers (synthetic data, a few seconds on a CPU).

    python examples/tcmax_example.py

1. Two encoders, one per modality, each with a linear class head; the fused logits are the sum
   of the two heads (sum fusion), so ``tcmax_loss`` computes the loss exactly in O(B·C). The
   label needs both modalities: modality a carries one bit of it, modality v the other.
2. The same with ITHP: view a is ITHP's ``b1`` (pooled over tokens), view v a detector branch
   (an MLP on the pooled acoustic and visual features); TCMax plus ITHP's information
   bottleneck ``IB_total``.
"""

import torch
from torch import nn

import ithp_fast
from ithp_fast.losses import TCMaxLoss

torch.manual_seed(0)
torch.set_num_threads(1)  # models this small run fastest on one thread
CLASSES = 4  # label = 2 * bit_a + bit_v


def mlp(d_in: int, d_out: int, hidden: int = 32) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


def two_bit_task(n: int, d_a: int, d_v: int, noise: float = 0.8):
    """Modality a shows bit_a (plus noise), modality v shows bit_v; the label needs both."""
    labels = torch.randint(0, CLASSES, (n,))
    bit_a, bit_v = labels // 2, labels % 2
    dir_a, dir_v = torch.randn(d_a), torch.randn(d_v)
    xa = (2 * bit_a[:, None] - 1) * dir_a + noise * torch.randn(n, d_a)
    xv = (2 * bit_v[:, None] - 1) * dir_v + noise * torch.randn(n, d_v)
    return xa, xv, labels


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(dim=-1) == labels).float().mean().item()


# ------------------------------------------------------------------------------------------------
# 1. Two small encoders, sum fusion

xa, xv, y = two_bit_task(1536, d_a=16, d_v=12)
train, test = slice(0, 1024), slice(1024, None)
head_a, head_v = mlp(16, CLASSES), mlp(12, CLASSES)  # encoder + linear class head per modality
criterion = TCMaxLoss()
optimiser = torch.optim.Adam([*head_a.parameters(), *head_v.parameters()], lr=3e-3)
for step in range(200):
    batch = torch.randint(0, 1024, (128,))
    loss, loss_a, loss_v = criterion(head_a(xa[batch]), head_v(xv[batch]), y[batch])
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    if step % 100 == 0 or step == 199:
        print(f"[encoders] step {step:3d}  loss {loss.item():.3f}  loss_a {loss_a.item():.3f}  "
              f"loss_v {loss_v.item():.3f}")
with torch.no_grad():
    logits_a, logits_v = head_a(xa[test]), head_v(xv[test])
    print(f"[encoders] test accuracy: fused {accuracy(logits_a + logits_v, y[test]):.3f}  "
          f"a alone {accuracy(logits_a, y[test]):.3f}  v alone {accuracy(logits_v, y[test]):.3f}  (chance 0.25)")

# ------------------------------------------------------------------------------------------------
# 2. ITHP's b1 and a detector branch as the two views

cfg = ithp_fast.ITHPConfig(X0_dim=24, X1_dim=8, X2_dim=6, inter_dim=32, B0_dim=16, B1_dim=8, drop_prob=0.1)
tokens, n = 5, 1536
text_a, det_v, y = two_bit_task(n, d_a=cfg.X0_dim, d_v=cfg.X1_dim + cfg.X2_dim)
x = text_a[:, None, :] + 0.3 * torch.randn(n, tokens, cfg.X0_dim)  # text token states
detectors = det_v[:, None, :] + 0.3 * torch.randn(n, tokens, cfg.X1_dim + cfg.X2_dim)
acoustic, visual = detectors.split([cfg.X1_dim, cfg.X2_dim], dim=-1)
acoustic, visual = torch.sigmoid(acoustic), torch.sigmoid(visual)  # detectors in [0, 1]

ithp = ithp_fast.ITHP(cfg)
head_b1 = nn.Linear(cfg.B1_dim, CLASSES)
detector_branch = mlp(cfg.X1_dim + cfg.X2_dim, CLASSES)
ib_weight = 2 / (cfg.p_beta + cfg.p_gamma)
params = [*ithp.parameters(), *head_b1.parameters(), *detector_branch.parameters()]
optimiser = torch.optim.Adam(params, lr=3e-3)
for step in range(200):
    batch = torch.randint(0, 1024, (128,))
    b1, IB_total, *_ = ithp(x[batch], visual[batch], acoustic[batch])  # note: x, visual, acoustic
    logits_a = head_b1(b1.mean(dim=1))
    logits_v = detector_branch(torch.cat([acoustic[batch], visual[batch]], dim=-1).mean(dim=1))
    loss, loss_a, loss_v = criterion(logits_a, logits_v, y[batch])
    total = loss + ib_weight * IB_total
    optimiser.zero_grad()
    total.backward()
    optimiser.step()
    if step % 100 == 0 or step == 199:
        print(f"[ITHP b1 + detectors] step {step:3d}  TCMax {loss.item():.3f}  IB_total {IB_total.item():.3f}")
ithp.eval()
with torch.no_grad():
    logits_a = head_b1(ithp.encode(x[test]).mean(dim=1))  # posterior-mean b1 from text alone
    logits_v = detector_branch(torch.cat([acoustic[test], visual[test]], dim=-1).mean(dim=1))
    print(f"[ITHP b1 + detectors] test accuracy: fused {accuracy(logits_a + logits_v, y[test]):.3f}  "
          f"b1 alone {accuracy(logits_a, y[test]):.3f}  detectors alone {accuracy(logits_v, y[test]):.3f}")
