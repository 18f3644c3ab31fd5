"""``import ithp_fast`` and every CPU path work where Triton cannot be imported, and loading the
public names pulls in none of the heavy optional packages (each case in a fresh interpreter)."""

import os
import subprocess
import sys
import textwrap

from helpers import refuse_imports


def run_python(code: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_cpu_paths_without_triton():
    out = run_python(refuse_imports("triton") + textwrap.dedent("""
        import torch, ithp_fast
        cfg = ithp_fast.ITHPConfig(X0_dim=16, X1_dim=5, X2_dim=3, inter_dim=8, B0_dim=4, B1_dim=3)
        model = ithp_fast.ITHP(cfg)
        x, visual, acoustic = torch.randn(2, 3, 16), torch.rand(2, 3, 3), torch.rand(2, 3, 5)
        model(x, visual, acoustic)[1].backward()
        assert model.encoder1[0].weight.grad is not None
        model.eval()
        assert model.encode(x).shape == (2, 3, 3)
        loss, _, _ = ithp_fast.tcmax_loss(torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))
        assert torch.isfinite(loss)
        try:
            ithp_fast.ITHP(cfg, backend="triton")(x, visual, acoustic)
        except RuntimeError as err:
            print(err)
        assert "triton" not in sys.modules
    """))
    assert "backend 'triton' needs the triton package" in out


HEAVY = ("triton", "torch._inductor", "onnx", "onnxruntime", "matplotlib", "tensorboard", "fastapi", "uvicorn")
HUGGING_FACE_MODELS = ("ITHPDeberta",)
"""Public names that are transformers models: importing transformers' modeling code loads torch._dynamo, and
with it Triton and inductor's config, whatever this package does."""


def test_public_names_load_no_heavy_optional_package():
    out = run_python(f"""
        import sys, ithp_fast
        for name in ithp_fast.__all__:
            if name not in {HUGGING_FACE_MODELS!r}:
                getattr(ithp_fast, name)
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        ithp_fast.ITHPDeberta
        print(sorted(m for m in {HEAVY[2:]!r} if m in sys.modules), sorted(m for m in sys.modules
              if m.startswith("ithp_fast.kernels.") and m.endswith("_triton")))
    """)
    assert out.splitlines() == ["[]", "[] []"], out


def test_import_loads_neither_torch_nor_transformers_and_the_auto_classes_know_the_model():
    out = run_python("""
        import sys, ithp_fast
        print(sorted(m for m in ("torch", "transformers", "triton") if m in sys.modules))
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
        print(CONFIG_MAPPING["ithp_deberta"].__name__, "transformers.modeling_utils" in sys.modules,
              "triton" in sys.modules)
        from transformers import AutoModelForSequenceClassification
        tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=20)
        model = AutoModelForSequenceClassification.from_config(ithp_fast.ITHPDebertaConfig(backbone=tiny))
        print(type(model).__name__, type(model).__module__)
    """)
    assert out.splitlines() == ["[]", "ITHPDebertaConfig False False", "ITHPDeberta ithp_fast.deberta"], out


def test_the_auto_classes_know_the_model_when_transformers_came_first():
    out = run_python("""
        from transformers import AutoConfig, AutoModel
        import ithp_fast
        tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=20)
        config = AutoConfig.for_model("ithp_deberta", backbone=tiny)
        print(type(AutoModel.from_config(config)).__name__)
    """)
    assert out.strip() == "ITHPDeberta", out


def test_the_command_line_loads_the_server_packages_only_to_serve():
    out = run_python("""
        import sys
        from ithp_fast.tools.cli import build_parser
        build_parser()
        print(sorted(m for m in ("fastapi", "uvicorn", "starlette") if m in sys.modules))
    """)
    assert out.strip() == "[]", out
