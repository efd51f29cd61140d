"""Config loading: YAML + key=value overrides, unknown keys are errors naming the key."""

from dataclasses import dataclass, field
from typing import Optional

import pytest

from mrdkit.config import apply_overrides, from_dict, load_config, to_dict
from mrdkit.errors import MrdkitError


@dataclass
class Optim:
    lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Cfg:
    model: str = "tiny"
    draws: int = 100
    sigma: float = 1e-5
    fp64: bool = False
    split: Optional[str] = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_and_overrides():
    cfg = apply_overrides(Cfg(), ["draws=7", "sigma=2e-4", "fp64=true", "optim.lr=0.5", "optim.betas=0.1,0.2"])
    assert (cfg.draws, cfg.sigma, cfg.fp64, cfg.optim.lr, cfg.optim.betas) == (7, 2e-4, True, 0.5, [0.1, 0.2])
    assert Cfg().draws == 100  # the original is untouched


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# where the numbers come from: tests\ndraws: 3\noptim:\n  lr: 0.1\n")
    cfg = load_config(Cfg, path, ["draws=4"])
    assert cfg.draws == 4 and cfg.optim.lr == 0.1
    assert to_dict(cfg)["optim"]["lr"] == 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["drawz=3"], "unknown config key 'drawz'"),
        (["optim.lrr=3"], "unknown config key 'lrr'"),
        (["draws=abc"], "cannot read 'abc' as int"),
        (["fp64=maybe"], "expected true/false"),
        (["draws"], "not of the form key=value"),
        (["model.x=1"], "has no sub-keys"),
    ],
)
def test_override_errors(overrides, message):
    with pytest.raises(MrdkitError, match=message):
        apply_overrides(Cfg(), overrides)


def test_unknown_key_in_yaml_suggests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sigmaa: 1\n")
    with pytest.raises(MrdkitError, match="did you mean 'sigma'"):
        load_config(Cfg, path)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(MrdkitError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(MrdkitError, match="invalid YAML"):
        load_config(Cfg, bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(MrdkitError, match="expected a mapping"):
        load_config(Cfg, top)


def test_nested_mapping_type_error():
    with pytest.raises(MrdkitError, match="must be a mapping"):
        from_dict(Cfg, {"optim": 3})


def test_exponent_floats_without_a_dot_are_floats_in_set_options_and_yaml_files(tmp_path):
    # PyYAML (YAML 1.1) reads "1e-5" as a string; an untyped bench option such as sigmas=[1e-5] then crashed
    from mrdkit.config import load_yaml, parse_scalar

    assert parse_scalar("1e-3") == 0.001 and isinstance(parse_scalar("1e-3"), float)
    assert parse_scalar("[1e-05, 0.001]") == [1e-5, 1e-3]
    assert parse_scalar("-2E+3") == -2000.0
    assert (parse_scalar("1.10"), parse_scalar("12"), parse_scalar("true")) == (1.1, 12, True)
    assert (parse_scalar("1e"), parse_scalar("e5"), parse_scalar("abc")) == ("1e", "e5", "abc")
    (tmp_path / "c.yaml").write_text("lr: 5e-5\nsigmas: [1e-6, 1e-3]\n")
    assert load_yaml(tmp_path / "c.yaml") == {"lr": 5e-5, "sigmas": [1e-6, 1e-3]}
