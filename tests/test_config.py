from pathlib import Path

import pytest

from wsss.cli import main
from wsss.config import Config, ConfigError, config_to_yaml, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "voc12_deit_small.yaml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert isinstance(config, Config)


def test_defaults_and_overrides():
    config = load_config(None, ["refine.pamr.iterations=5", "refine.pamr.dilations=[1, 2]", "cam.method=rollout"])
    assert config.refine.pamr.iterations == 5
    assert config.refine.pamr.dilations == [1, 2]
    assert config.cam.method == "rollout"
    assert load_config().refine.pamr.iterations == 10


def test_yaml_round_trip(tmp_path):
    config = load_config(CONFIGS / "voc12_deit_small.yaml", ["train.segmenter.lr=0.5"])
    path = tmp_path / "effective.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


def test_invalid_value_names_key_value_and_allowed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("cam:\n  method: gradcam++\nrefine:\n  pamr:\n    iterations: -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "cam.method = 'gradcam++'" in text
    assert "'getam'" in text and "'rollout'" in text
    assert "refine.pamr.iterations = -3" in text and "greater than or equal to 0" in text
    assert str(path) in text


def test_unknown_key_is_reported(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("refine:\n  pamr:\n    iteratons: 5\n")
    with pytest.raises(ConfigError, match=r"refine\.pamr\.iteratons: unknown key"):
        load_config(path)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["refine.pamr.iterations"])
    with pytest.raises(ConfigError, match="refine.pamr is a value"):
        load_config(None, ["refine.pamr=3", "refine.pamr.iterations=2"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="dilations"):
        load_config(None, ["refine.pamr.dilations=[0, 2]"])


def test_cli_config_show(capsys):
    assert main(["config", "show", "--config", str(CONFIGS / "demo.yaml"), "--set", "refine.label.alpha=8"]) == 0
    out = capsys.readouterr().out
    assert "alpha: 8.0" in out and "method: getam" in out


def test_cli_config_error_exit_code(capsys):
    assert main(["config", "show", "--set", "flow.task_runner=ray"]) == 2
    err = capsys.readouterr().err
    assert "flow.task_runner = 'ray'" in err and "'dask'" in err
