from pathlib import Path

import pytest

from lightning_stacks.config import ConfigError, load_config, round_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def test_defaults_are_the_paper_sine_network():
    cfg = load_config()
    assert cfg.data.name == "sine" and list(cfg.model.widths) == [1024, 1024, 1024]
    assert list(cfg.model.bottleneck) == [1, 1] and cfg.model.variant == "stack"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)


def test_overrides_apply_and_convert_types():
    cfg = load_config(None, ["trainer.max_epochs=3", "model.widths=[4,5,6]", "optim.lr=0.01"])
    assert cfg.trainer.max_epochs == 3 and list(cfg.model.widths) == [4, 5, 6] and cfg.optim.lr == 0.01


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.widht'.*valid keys under model: bottleneck, variant, widths"):
        load_config(None, ["model.widht=[3]"])


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'epochs'.*valid keys under <top level>:.*trainer"):
        load_config(None, ["epochs=3"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"bad value for config key 'trainer.max_epochs'"):
        load_config(None, ["trainer.max_epochs=many"])


def test_bad_choice_lists_choices():
    with pytest.raises(ConfigError, match=r"model.variant='resnet' is not one of: stack, simplified, plain"):
        load_config(None, ["model.variant=resnet"])


def test_bottleneck_length_must_match_stacks():
    with pytest.raises(ConfigError, match=r"model.bottleneck needs len\(model.widths\)-1 = 2"):
        load_config(None, ["model.bottleneck=[4]"])


def test_yaml_unknown_key_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("trainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_epoch' \(from .*bad.yaml\).*max_epochs"):
        load_config(p)


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(None, ["trainer.max_epochs"])


@pytest.mark.parametrize("override,pattern", [
    ("reduce.max_drop=2", r"reduce.max_drop must be in \[0, 1\]"),
    ("reduce.tolerances=[1,-1,1]", "reduce.tolerances must all be >= 0"),
    ("reduce.clusters=[1,-1,1]", "reduce.clusters must all be >= 0"),
    ("model.widths=[4,-1,4]", "model.widths must be >= 0"),
    ("schedule.batch_start=0", "batch_start/batch_end must be >= 1"),
    ("logger.kind=tensorboard", "logger.kind='tensorboard' is not one of: wandb, csv, none"),
    ("data.x_min=2", "data.x_min must be < data.x_max"),
    ("reduce.bottleneck_tol=-0.5", "reduce.bottleneck_tol must be >= 0"),
    ("reduce.weak_share=1.5", r"reduce.weak_share must be in \[0, 1\]"),
    ("reduce.polish=true", "reduce.polish needs the automatic mode"),
])
def test_invalid_values(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_rounds_override_the_training_time_methods():
    from lightning_stacks.config import round_config
    from lightning_stacks.training import method_callbacks

    cfg = load_config(None, ["group_sparsity.lambdas=[0.02]",
                             "rounds=[{epochs: 2}, {epochs: 2, group_sparsity: {lambdas: []}, pruning: {sparsity: 0.5}}]"])
    first, second = round_config(cfg, 0), round_config(cfg, 1)
    assert list(first.group_sparsity.lambdas) == [0.02] and first.pruning.sparsity == 0
    assert list(second.group_sparsity.lambdas) == [] and second.pruning.sparsity == 0.5
    assert [type(c).__name__ for c in method_callbacks(first)] == ["GroupSparsityCallback"]
    assert [type(c).__name__ for c in method_callbacks(second)] == ["PolynomialPruningCallback"]
    bad = load_config(None, ["rounds=[{epochs: 2, group_sparsity: {lambda: [0.1]}}]"])
    with pytest.raises(ConfigError, match=r"unknown config key 'group_sparsity.lambda' \(from rounds\[0\]\).*lambdas"):
        round_config(bad, 0)
    bad = load_config(None, ["rounds=[{epochs: 2, layer_sparsity: {penalties: [-1.0]}}]"])
    with pytest.raises(ConfigError, match="layer_sparsity"):
        round_config(bad, 0)


@pytest.mark.parametrize("overrides,pattern", [
    (["data.root=/data"], r"data.root is read for data.name=mnist only, not 'sine'; drop it"),
    (["data.name=digits", "data.root=/data"], r"data.root is read for data.name=mnist only, not 'digits'; drop it \(data.name=digits reads no files\)"),
    (["data.name=csv", "data.path=a.csv", "data.root=/data"], r"not 'csv'; drop it \(give the file as data.path\)"),
    (["data.name=digits", "data.path=a.csv"], r"data.path is read for data.name=csv or npz only, not 'digits'"),
    (["data.name=csv"], r"data.name=csv needs data.path=<your .csv file>"),
    (["data.name=npz", "data.path=a.npz", "data.target=y"], r"data.target selects a CSV column; data.name='npz'"),
    (["data.target=3"], r"data.target selects a CSV column; data.name='sine'"),
    (["data.name=csv", "data.path=a.csv", "data.target=[a,'']"], "data.target must be a column name"),
    (["data.kwargs={n: 3}"], r"data.kwargs are passed to data.module's class only; set data.module="),
    (["data.name=csv", "data.path=a.csv", "data.val_fraction=1"], r"data.val_fraction must be in \[0, 1\), got 1"),
    (["data.name=csv", "data.path=a.csv", "data.test_fraction=-0.1"], r"data.test_fraction must be in \[0, 1\)"),
    (["data.name=csv", "data.path=a.csv", "data.val_fraction=0.5", "data.test_fraction=0.5"], r"val_fraction \+ data.test_fraction must be < 1"),
    (["data.name=csv", "data.path=a.csv", "data.task=ranking"], r"data.task='ranking' is not one of: auto, classification, regression"),
    (["data.task=regression"], r"data.task applies to data.name=csv or npz only, not 'sine'"),
    (["data.name=digits", "data.standardize=false"], r"data.standardize applies to data.name=csv or npz only"),
    (["data.name=mnist", "data.module=a.b:C"], r"data.module='a.b:C' conflicts with data.name='mnist'"),
    (["data.name=module"], r"data.name=module needs data.module=package.module:ClassName"),
    (["data.module=a.b"], r"data.module='a.b' must have the form package.module:ClassName"),
])
def test_data_keys_that_would_be_ignored_are_refused(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_data_module_selects_its_name_and_keeps_kwargs():
    cfg = load_config(None, ["data.module=my_pkg.data:MyData", "data.kwargs={n: 3, path: x.csv}"])
    assert cfg.data.name == "module" and dict(cfg.data.kwargs) == {"n": 3, "path": "x.csv"}
    cfg = load_config(None, ["data.name=csv", "data.path=a.csv", "data.target=[y1,2]", "data.task=regression"])
    assert list(cfg.data.target) == ["y1", 2] and cfg.data.val_fraction == 0.15 and cfg.data.standardize


def test_an_override_reaches_into_one_round():
    cfg = load_config(ROOT / "configs" / "mnist_shrink.yaml",
                      ["rounds.1.reduction.max_drop=0.02", "rounds.2.distill={weight: 0.5, temperature: 2}",
                       "rounds.2.optim.lr=5e-4", "model.widths.0=512"])
    assert cfg.rounds[1].reduction == {"max_drop": 0.02}
    assert cfg.rounds[1].epochs == 30 and cfg.rounds[2].epochs == 30  # the rest of each entry is kept
    assert cfg.rounds[2].schedule["batch_start"] == 128 and cfg.rounds[2].optim == {"lr": 5e-4}
    last = round_config(cfg, 2)
    assert last.distill.weight == 0.5 and last.distill.temperature == 2.0 and last.optim.lr == 5e-4
    assert list(cfg.model.widths) == [512, 1024, 1024]


@pytest.mark.parametrize(("override", "pattern"), [
    ("rounds.3.epochs=5", r"'rounds' has 3 entries \(0-2\), not 4"),
    ("rounds.1.epochs=abc", r"bad value in override 'rounds.1.epochs=abc'"),
    ("rounds.1.no_such_key=1", r"unknown config key in override 'rounds.1.no_such_key=1'"),
    ("seed.0=1", r"'seed' holds a value, not a list or mapping"),
    ("trainer.0.x=1", r"'trainer' is not a list, so it has no entry 0"),
    ("rounds.1.nothing.x=1", r"no key 'nothing' under 'rounds.1'"),
])
def test_a_bad_override_into_a_list_names_the_problem(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(ROOT / "configs" / "mnist_shrink.yaml", [override])
