from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from speechssl.config import config_hash, from_dict, load_config, param, save_config, to_dict
from speechssl.errors import ConfigError


@dataclass
class Optim:
    lr: float = param(5e-4, gt=0, help="peak learning rate")
    betas: tuple[float, float] = (0.9, 0.98)
    schedule: Literal["linear", "tri_stage", "cyclic"] = "linear"


@dataclass
class Data:
    batch_seconds: float = param(60.0, gt=0)
    languages: list[str] = param(default_factory=lambda: ["en"], choices=["en", "fr", "de"])
    root: Optional[Path] = None
    name: str = "synth"


@dataclass
class Experiment:
    optim: Optim = field(default_factory=Optim)
    data: Data = field(default_factory=Data)
    layers: int = param(4, min=1, max=48)
    dropout: float = param(0.1, min=0.0, lt=1.0)

    def validate(self) -> None:
        if self.layers > 24 and self.dropout == 0:
            raise ConfigError("deep models need dropout > 0")


def test_defaults_yaml_and_overrides_compose(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("optim:\n  lr: 3e-4\nlayers: 6\ndata:\n  languages: [en, fr]\n")
    cfg = load_config(Experiment, path, ["layers=8", "optim.schedule=cyclic", "data.root=/x"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # YAML 1.1 reads "3e-4" as a string
    assert cfg.layers == 8 and cfg.optim.schedule == "cyclic"
    assert cfg.data.languages == ["en", "fr"] and cfg.data.root == Path("/x")
    assert cfg.optim.betas == (0.9, 0.98)


def test_string_field_keeps_override_verbatim():
    assert load_config(Experiment, None, ["data.name=1e3"]).data.name == "1e3"


@pytest.mark.parametrize(
    "override, message",
    [
        (["optim.lrr=1"], "did you mean 'optim.lr'"),
        (["layerz=3"], "did you mean 'layers'"),
        (["data.batch_seconds=-5"], "data.batch_seconds: must be > 0"),
        (["layers=0"], "layers: must be >= 1"),
        (["dropout=1.0"], "dropout: must be < 1.0"),
        (["layers=abc"], "layers: expected an integer"),
        (["optim.lr=fast"], "optim.lr: expected a number"),
        (["optim.schedule=cosine"], "must be one of"),
        (["data.languages=[fer]"], "did you mean 'fr'"),
        (["optim.betas=[0.9]"], "expected 2 items"),
        (["optim.lr.x=1"], "is a value, not a section"),
        (["layers"], "must look like key.sub=value"),
        (["optim=3"], "expected a mapping"),
        (["layers=30", "dropout=0"], "deep models need dropout"),
    ],
)
def test_bad_overrides_fail_with_clear_messages(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(Experiment, None, override)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(Experiment, {"layers": True})


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        load_config(Experiment, path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Experiment, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Experiment, bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Experiment, top)


def test_saved_config_round_trips_and_hash_is_stable(tmp_path):
    cfg = load_config(Experiment, None, ["layers=12", "data.root=/data"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(Experiment, path)
    assert again == cfg
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(Experiment, None, ["layers=11"])) != config_hash(cfg)
    assert yaml.safe_load(path.read_text())["data"]["root"] == "/data"
    assert to_dict(cfg)["optim"]["betas"] == [0.9, 0.98]


def test_check_canonicalises_and_catches_values_set_in_code():
    from speechssl.config import check

    a, b = Experiment(dropout=0), Experiment(dropout=0.0)
    check(a)
    assert isinstance(a.dropout, float) and config_hash(a) == config_hash(b)
    with pytest.raises(ConfigError, match="layers: expected an integer"):
        check(Experiment(layers="four"))


def test_a_partly_given_section_keeps_the_enclosing_defaults():
    # The demo's pretrain section defaults to the HuBERT recipe; overriding one key of it
    # must not fall back to PretrainConfig's own (wav2vec 2.0) defaults for the others.
    from speechssl.demo import DemoConfig

    cfg = load_config(DemoConfig, None, ["pretrain.steps=2", "pretrain.encoder.layers=1"])
    assert (cfg.pretrain.objective, cfg.pretrain.steps, cfg.pretrain.encoder.layers) == ("hubert", 2, 1)
    assert cfg.pretrain.encoder.hidden == DemoConfig().pretrain.encoder.hidden
    assert cfg.pretrain.hubert.unmasked_weight == 1.0
