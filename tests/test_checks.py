"""Every input validation error, by message, for the reference and the fast class alike."""

import pytest
import torch

from helpers import make_inputs, make_noise, small_config
import ithp_fast
from ithp_fast.reference import ITHP as ReferenceITHP


@pytest.fixture(params=["reference", "fast"])
def model(request):
    cls = ReferenceITHP if request.param == "reference" else ithp_fast.ITHP
    return cls(small_config())


def test_swapped_detectors_say_so(model):
    cfg = model.config
    x, v, a = make_inputs(cfg)
    with pytest.raises(ValueError) as err:
        model(x, a, v)
    msg = str(err.value)
    assert msg.startswith(f"visual: expected last dimension X2_dim={cfg.X2_dim}")
    assert "(x, visual, acoustic)" in msg and "look swapped" in msg


@pytest.mark.parametrize("arg,key", [("x", "X0_dim"), ("visual", "X2_dim"), ("acoustic", "X1_dim")])
def test_wrong_width_names_argument_and_widths(model, arg, key):
    cfg = model.config
    inputs = dict(zip(["x", "visual", "acoustic"], make_inputs(cfg)))
    inputs[arg] = inputs[arg][..., :-1]
    width = getattr(cfg, key)
    with pytest.raises(ValueError, match=rf"{arg}: expected last dimension {key}={width}, got shape .*\(last dimension {width - 1}\)"):
        model(**inputs)


def test_leading_dimensions_must_match(model):
    x, v, a = make_inputs(model.config)
    with pytest.raises(ValueError, match=r"acoustic: leading dimensions \(3, 4\) differ from x's \(3, 5\)"):
        model(x, v, a[:, :4])
    with pytest.raises(ValueError, match="visual: leading dimensions"):
        model(x, v[:1], a)  # would broadcast silently otherwise


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int32])
@pytest.mark.parametrize("arg", ["x", "visual", "acoustic"])
def test_integer_and_boolean_tensors(model, dtype, arg):
    inputs = dict(zip(["x", "visual", "acoustic"], make_inputs(model.config)))
    inputs[arg] = inputs[arg].to(dtype)
    with pytest.raises(TypeError, match=rf"{arg}: expected a floating-point tensor .* got dtype {dtype}"):
        model(**inputs)


def test_not_a_tensor(model):
    x, v, a = make_inputs(model.config)
    with pytest.raises(TypeError, match="acoustic: expected a torch.Tensor, got list"):
        model(x, v, a.tolist())


def test_dtype_differs_from_parameters(model):
    x, v, a = make_inputs(model.config)
    with pytest.raises(TypeError, match=r"x: dtype torch.float64 differs from the model's parameters \(torch.float32\)"):
        model(x.double(), v, a)


def test_different_devices(model):
    x, v, a = make_inputs(model.config)
    with pytest.raises(ValueError, match="visual: is on meta but x is on cpu"):
        model(x, v.to("meta"), a)


def test_wrong_noise_shapes(model):
    cfg = model.config
    x, v, a = make_inputs(cfg)
    e0, e1 = make_noise(cfg)
    with pytest.raises(ValueError, match=rf"noise\[1\] \(eps1\): expected shape \(3, 5, {cfg.B1_dim}\) \(the shape of mu1\), got \(3, 5, {cfg.B0_dim}\)"):
        model(x, v, a, noise=(e0, e0))
    with pytest.raises(TypeError, match=r"noise: expected a tuple of 2 tensors \(eps0, eps1\), got Tensor"):
        model(x, v, a, noise=e0)
    with pytest.raises(TypeError, match="noise: expected a tuple of 2 tensors"):
        model(x, v, a, noise=(e0,))


def test_encode_checks_x(model):
    x, _, _ = make_inputs(model.config)
    with pytest.raises(ValueError, match="x: expected last dimension X0_dim=24"):
        model.encode(x[..., :10])
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        model.encode(x.long())
