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
