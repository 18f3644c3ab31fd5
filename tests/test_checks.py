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
    message = rf"{arg}: expected last dimension {key}={width}, got shape .*\(last dimension {width - 1}\)"
    with pytest.raises(ValueError, match=message):
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
    message = r"x: dtype torch.float64 differs from the model's parameters \(torch.float32\)"
    with pytest.raises(TypeError, match=message):
        model(x.double(), v, a)


def test_different_devices(model):
    x, v, a = make_inputs(model.config)
    with pytest.raises(ValueError, match="visual: is on meta but x is on cpu"):
        model(x, v.to("meta"), a)


def test_wrong_noise_shapes(model):
    cfg = model.config
    x, v, a = make_inputs(cfg)
    e0, e1 = make_noise(cfg)
    message = (rf"noise\[1\] \(eps1\): expected shape \(3, 5, {cfg.B1_dim}\) \(the shape of mu1\), "
               rf"got \(3, 5, {cfg.B0_dim}\)")
    with pytest.raises(ValueError, match=message):
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


def test_forward_levels_detector_list(model):
    cfg = model.config
    x, v, a = make_inputs(cfg)
    with pytest.raises(ValueError, match=r"detectors: expected a sequence of 2 tensors, one per level in level "
                                         r"order, widths detector_dims=\(7, 5\), got 3 tensor\(s\)"):
        model.forward_levels(x, (a, v, v))
    with pytest.raises(TypeError, match="detectors: expected a sequence of 2 tensors.* got Tensor"):
        model.forward_levels(x, a)
    with pytest.raises(ValueError, match=r"detectors\[1\]: expected last dimension detector_dims\[1\]=5, got shape "
                                         r"\(3, 5, 7\)"):
        model.forward_levels(x, (a, a))
    with pytest.raises(ValueError, match=r"detectors\[0\]: leading dimensions \(3, 4\) differ from x's \(3, 5\)"):
        model.forward_levels(x, (a[:, :4], v))


@pytest.mark.parametrize("call", ["forward", "forward_levels"])
def test_masks_name_the_argument_and_the_expected_shape(model, call):
    cfg = model.config
    x, v, a = make_inputs(cfg)

    def run(**masks):
        if call == "forward":
            return model(x, v, a, **masks)
        return model.forward_levels(x, (a, v), **masks)

    good = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"token_mask: expected a bool tensor of shape \(3, 5\) \(x's leading "
                                         r"dimensions; True = a real token\), got shape \(3, 4\)"):
        run(token_mask=good[:, :4])
    with pytest.raises(TypeError, match=r"token_mask: expected a bool tensor of shape \(3, 5\) .* got dtype "
                                        r"torch.int64 \(use mask.bool\(\) or mask > 0\)"):
        run(token_mask=good.long())
    with pytest.raises(ValueError, match=r"detector_mask: expected a bool tensor of shape \(3, 2\) \(\[batch, "
                                         r"levels\] = x's first dimension by 2 levels; True = present\), got shape "
                                         r"\(3, 5\)"):
        run(detector_mask=good)
    with pytest.raises(TypeError, match=r"detector_mask: .* got dtype torch.float32"):
        run(detector_mask=torch.ones(3, 2))
    with pytest.raises(TypeError, match="token_mask: expected a bool tensor .* got list"):
        run(token_mask=good.tolist())
    with pytest.raises(ValueError, match="token_mask: is on meta but x is on cpu"):
        run(token_mask=good.to("meta"))


def test_forward_needs_two_levels():
    from helpers import level_config

    for cls in (ReferenceITHP, ithp_fast.ITHP):
        model = cls(level_config(3))
        x, v, a = make_inputs(model.config)
        with pytest.raises(ValueError, match=r"forward\(x, visual, acoustic\) is the released two-level call, but "
                                             r"this model has 3 level\(s\); use forward_levels"):
            model(x, v, a)


def test_noise_has_one_eps_per_level():
    from helpers import level_config, make_level_inputs, make_level_noise

    model = ReferenceITHP(level_config(3))
    x, detectors = make_level_inputs(model.config)
    noise = make_level_noise(model.config)
    with pytest.raises(TypeError, match=r"noise: expected a tuple of 3 tensors \(eps0, eps1, eps2\), got tuple of 2"):
        model.forward_levels(x, detectors, noise=noise[:2])
    with pytest.raises(ValueError, match=r"noise\[2\] \(eps2\): expected shape \(3, 5, 5\) \(the shape of mu2\)"):
        model.forward_levels(x, detectors, noise=(*noise[:2], noise[0]))
