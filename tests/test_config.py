import dataclasses

import pytest

from ithp_fast import ITHPConfig
from ithp_fast.reference import ITHP

RELEASED_KEYS = [
    "X0_dim", "X1_dim", "X2_dim", "inter_dim", "B0_dim", "B1_dim",
    "drop_prob", "p_beta", "p_gamma", "p_lambda", "max_sen_len",
]


def test_paper_defaults():
    cfg = ITHPConfig()
    assert (cfg.X0_dim, cfg.X1_dim, cfg.X2_dim) == (768, 74, 47)
    assert (cfg.inter_dim, cfg.B0_dim, cfg.B1_dim) == (256, 128, 64)
    assert (cfg.drop_prob, cfg.p_beta, cfg.p_gamma, cfg.p_lambda, cfg.max_sen_len) == (0.3, 8, 32, 0.3, 50)


def test_for_dataset_visual_widths():
    assert ITHPConfig.for_dataset("mosi").X2_dim == 47
    assert ITHPConfig.for_dataset("MOSEI").X2_dim == 35
    assert ITHPConfig.for_dataset("mosi", B1_dim=32).B1_dim == 32
    with pytest.raises(ValueError, match="unknown dataset 'iemocap'"):
        ITHPConfig.for_dataset("iemocap")


def test_dict_round_trip_has_released_keys():
    cfg = ITHPConfig.for_dataset("mosei", drop_prob=0.1)
    d = cfg.to_dict()
    assert sorted(d) == sorted(RELEASED_KEYS)
    assert ITHPConfig.from_dict(d) == cfg


def test_reference_accepts_plain_dict_and_config_alike():
    d = ITHPConfig(X0_dim=16, inter_dim=8).to_dict()
    a, b = ITHP(d), ITHP(ITHPConfig.from_dict(d))
    assert a.config == b.config
    assert a.X0_dim == 16 and a.p_beta == 8.0  # the released model's attribute names


def test_missing_and_unknown_keys_are_named():
    d = ITHPConfig().to_dict()
    del d["B1_dim"]
    with pytest.raises(KeyError, match=r"missing keys \['B1_dim'\]"):
        ITHP(d)
    d = {**ITHPConfig().to_dict(), "B2_dim": 3}
    with pytest.raises(KeyError, match=r"unknown keys \['B2_dim'\]"):
        ITHP(d)


@pytest.mark.parametrize("key", ["X0_dim", "X1_dim", "X2_dim", "inter_dim", "B0_dim", "B1_dim"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_widths(key, value):
    with pytest.raises(ValueError, match=f"{key} must be a positive width, got {value}"):
        ITHPConfig(**{key: value})


def test_width_type():
    with pytest.raises(TypeError, match="B0_dim must be an int, got float"):
        ITHPConfig(B0_dim=12.0)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_drop_prob_range(p):
    with pytest.raises(ValueError, match=r"drop_prob must lie in \[0, 1\)"):
        ITHPConfig(drop_prob=p)


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ITHPConfig().B0_dim = 3


def test_not_a_dict():
    with pytest.raises(TypeError, match="expected a dict of ITHP_args or an ITHPConfig, got list"):
        ITHP([768, 74])


def test_eval_sampling_option():
    with pytest.raises(ValueError, match="eval_sampling: expected one of"):
        ITHP(ITHPConfig(), eval_sampling="median")


def test_level_tuples_and_released_fields_describe_the_same_model():
    cfg = ITHPConfig()
    assert cfg.levels == 2 and cfg.released
    assert cfg.detector_dims == (74, 47) and cfg.bottleneck_dims == (128, 64)
    assert cfg.detector_weights == (8.0, 32.0) and cfg.level_weights == (1.0, 0.3)
    same = ITHPConfig(detector_dims=(74, 47), bottleneck_dims=(128, 64), detector_weights=(8, 32))
    assert same == cfg and same.to_dict() == cfg.to_dict()
    both = ITHPConfig(X1_dim=74, detector_dims=(74, 47), p_lambda=0.3, level_weights=(1, 0.3))
    assert both == cfg


@pytest.mark.parametrize("levels", [1, 3, 4])
def test_n_levels(levels):
    dims = tuple(range(3, 3 + levels))
    cfg = ITHPConfig(detector_dims=dims, bottleneck_dims=dims[::-1], detector_weights=(2.0,) * levels, p_lambda=0.5)
    assert cfg.levels == levels and not cfg.released
    assert cfg.level_weights == tuple(0.5 ** k for k in range(levels))  # (1, p_lambda, p_lambda^2, ...)
    assert cfg.X1_dim == 3 and cfg.B0_dim == dims[-1] and cfg.p_beta == 2.0
    assert cfg.X2_dim == (4 if levels > 1 else None) and cfg.B1_dim == (dims[-2] if levels > 1 else None)
    d = cfg.to_dict()
    assert sorted(d) == sorted(RELEASED_KEYS + ["detector_dims", "bottleneck_dims", "detector_weights",
                                                "level_weights"])
    assert ITHPConfig.from_dict(d) == cfg
    model = ITHP(d)
    assert model.config == cfg and model.detector_dims == list(dims)


def test_two_levels_with_other_level_weights_keep_their_tuples_in_the_dict():
    cfg = ITHPConfig(level_weights=(2.0, 0.5))
    assert cfg.p_lambda == 0.5 and not cfg.released
    assert cfg.to_dict()["level_weights"] == [2.0, 0.5]
    assert ITHPConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs, message", [
    (dict(detector_dims=(7, 5, 3), bottleneck_dims=(8, 6)),
     "the level tuples must have one entry per level, the same count; detector_dims has 3, bottleneck_dims has 2"),
    (dict(detector_dims=(7, 0)), r"detector_dims\[1\] must be a positive width, got 0"),
    (dict(detector_dims=(7, 5), bottleneck_dims=(-2, 6)), r"bottleneck_dims\[0\] must be a positive width, got -2"),
    (dict(detector_weights=(8.0, -1.0)), r"detector_weights\[1\] must be a non-negative weight, got -1.0"),
    (dict(level_weights=(1.0, -0.3)), r"level_weights\[1\] must be a non-negative weight, got -0.3"),
    (dict(p_lambda=-0.3), "p_lambda must be a non-negative weight, got -0.3"),
    (dict(p_beta=-8.0), "p_beta must be a non-negative weight, got -8.0"),
    (dict(level_weights=(1.0, float("inf"))), r"level_weights\[1\] must be finite"),
    (dict(X1_dim=70, detector_dims=(74, 47)), r"X1_dim=70 differs from detector_dims\[0\]=74"),
    (dict(p_lambda=0.2, level_weights=(1.0, 0.3)), r"p_lambda=0.2 differs from level_weights\[1\]=0.3"),
    (dict(X2_dim=47, detector_dims=(74,), bottleneck_dims=(128,), detector_weights=(8,)),
     "X2_dim describes level 2, but detector_dims has 1 level"),
    (dict(detector_dims=()), "detector_dims must have at least one entry"),
])
def test_level_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ITHPConfig(**kwargs)


def test_level_tuple_types():
    with pytest.raises(TypeError, match=r"detector_dims\[0\] must be an int, got float"):
        ITHPConfig(detector_dims=(7.0, 5))
    with pytest.raises(TypeError, match="detector_dims must be a sequence with one entry per level, got int"):
        ITHPConfig(detector_dims=7)
