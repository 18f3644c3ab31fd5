"""A first run: build ITHP with the paper's MOSI config, run one forward pass and one encode.

    python examples/quickstart.py
"""

import torch

import ithp_fast

torch.manual_seed(0)
cfg = ithp_fast.ITHPConfig.for_dataset("mosi")  # X0 768, acoustic 74, visual 47
model = ithp_fast.ITHP(cfg)

x = torch.randn(8, 50, cfg.X0_dim)  # text token states [batch, tokens, 768]
visual = torch.rand(8, 50, cfg.X2_dim)  # note the order: x, visual, acoustic
acoustic = torch.rand(8, 50, cfg.X1_dim)

b1, IB_total, kl0, mse0, kl1, mse1 = model(x, visual, acoustic)
IB_total.backward()
print(f"{type(model).__module__}.{type(model).__name__}: b1 {tuple(b1.shape)}")
terms = dict(IB_total=IB_total, kl0=kl0, mse0=mse0, kl1=kl1, mse1=mse1)
print("  ".join(f"{name} {value.item():.4f}" for name, value in terms.items()))

model.eval()
with torch.no_grad():
    z = model.encode(x)  # posterior-mean b1 from text alone
print(f"encode: {tuple(z.shape)}")
