"""Recipe configs: YAML + dotted overrides, strict checks before any work, run metadata."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from clinical_prompt.cli import main
from clinical_prompt.recipes import RECIPES, ConfigError, load_config
from clinical_prompt.recipes.config import config_to_yaml
from clinical_prompt.recipes.metadata import data_paths, git_revision, path_checksums, run_metadata
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "configs"
TINY_TRAIN = CONFIGS / "tiny-train.yaml"


def recipe_of(config: Path) -> str:
    return next(name for name in RECIPES if name in config.stem)


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    """Shipped configs name paths relative to the repository root."""
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_or_names_its_missing_model_dir(config):
    if "../shared/data" in config.read_text() and not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    recipe = recipe_of(config)
    if recipe in ("evaluate", "extract"):  # they read a model that the train recipe writes first
        with pytest.raises(ConfigError, match=r"model_dir: path runs/train-maccrobat/model does not exist"):
            load_config(recipe, config)
        return
    loaded = load_config(recipe, config)
    assert isinstance(loaded, RECIPES[recipe])
    assert yaml.safe_load(config.read_text())["output_dir"] == loaded.output_dir


def test_overrides_are_yaml_values_at_dotted_keys():
    config = load_config("fewshot", CONFIGS / "tiny-fewshot.yaml", [
        "training.epochs=3", "fewshot.sizes=[3, 6, 12]", "data.train_documents=null", "training.head_lr=1e-3",
        "model.negative_ratio=2", "data.annotated_only=false",
    ])
    assert config.training.epochs == 3
    assert config.fewshot.sizes == [3, 6, 12]
    assert config.data.train_documents is None
    assert config.training.head_lr == 1e-3  # a number, as in YAML 1.2 (YAML 1.1 reads 1e-3 as a string)
    assert config.model.negative_ratio == 2.0 and isinstance(config.model.negative_ratio, float)
    assert config.data.annotated_only is False


def test_defaults_fill_what_the_file_leaves_out():
    config = load_config("train", TINY_TRAIN)
    assert config.prompt.depth == "deep"  # not in tiny-train.yaml
    assert config.training.weight_decay == 0.01


@pytest.mark.parametrize(("override", "message"), [
    ("training.epoch=3", r"training\.epoch: unknown key; allowed keys: epochs, batch_size, .*keep_checkpoints"),
    ("trainig.epochs=3", r"trainig: unknown key; allowed keys: output_dir, data, model, prompt, training$"),
    ("data.shema=ddi", r"data\.shema: unknown key; allowed keys: train, test, schema, format"),
])
def test_a_misspelled_key_is_refused_naming_it_and_the_allowed_keys(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("train", TINY_TRAIN, [override])


def test_a_misspelled_key_in_the_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY_TRAIN.read_text().replace("  epochs: 1", "  epochz: 1"))
    with pytest.raises(ConfigError) as caught:
        load_config("train", path)
    assert str(caught.value).startswith(f"{path}: training.epochz: unknown key; allowed keys: epochs,")


@pytest.mark.parametrize(("override", "message"), [
    ("training.epochs=three", r"training\.epochs: expected an integer, got a string \('three'\)"),
    ("training.epochs=2.5", r"training\.epochs: expected an integer, got a number"),
    ("training.epochs=true", r"training\.epochs: expected an integer, got a boolean"),
    ("training.head_lr=fast", r"training\.head_lr: expected a number, got a string"),
    ("training.head_lr='0.001'", r"training\.head_lr: expected a number, got a string \('0\.001'\)"),
    ("data.annotated_only=maybe", r"data\.annotated_only: expected true or false, got a string"),
    ("training=5", r"training: expected a section \(mapping\), got an integer"),
    ("data.schema=null", r"data\.schema: expected a string, got null"),
    ("training.mixed_precision=no", r"training\.mixed_precision: expected a string, got a boolean \(False; YAML reads "
                                    r"unquoted yes/no/on/off as booleans: quote the value\)"),
])
def test_a_wrong_type_is_refused_naming_the_key_and_the_expected_type(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("train", TINY_TRAIN, [override])


def test_every_problem_is_named_on_its_own_line():
    with pytest.raises(ConfigError) as caught:
        load_config("train", TINY_TRAIN, ["training.epochz=1", "model.max_length=long"])
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{TINY_TRAIN}: model.max_length: expected an integer, got a string ('long')"
    assert lines[1].startswith(f"{TINY_TRAIN}: training.epochz: unknown key; allowed keys: epochs,")
    assert len(lines) == 2 and caught.value.key == "model.max_length"


def test_a_wrong_type_inside_a_list_names_the_item():
    with pytest.raises(ConfigError, match=r"fewshot\.sizes\[1\]: expected an integer, got a string"):
        load_config("fewshot", CONFIGS / "tiny-fewshot.yaml", ["fewshot.sizes=[4, ten]"])


@pytest.mark.parametrize(("recipe", "config", "override", "message"), [
    ("train", TINY_TRAIN, "model.strategy=soft",
     r"model\.strategy: 'soft' is not allowed; allowed values: finetune, hard-prompt, soft-prompt, soft-prompt-frozen"),
    ("train", TINY_TRAIN, "prompt.depth=shallow",
     r"prompt\.depth: 'shallow' is not allowed; allowed values: input, deep"),
    ("train", TINY_TRAIN, "data.format=csv", r"allowed values: brat, ade-corpus-v2, psytar-conll"),
    ("train", TINY_TRAIN, "model.quantization=int4",
     r"model\.quantization: 'int4' is not allowed; allowed values: 8bit, 4bit"),
    ("fewshot", CONFIGS / "tiny-fewshot.yaml", "fewshot.strategies=[finetune, lora]",
     r"fewshot\.strategies\[1\]: 'lora' is not allowed; allowed values: finetune,"),
    ("shape", CONFIGS / "tiny-shape.yaml", "shape.reparameterization=[mlp, gru]",
     r"shape\.reparameterization\[1\]: 'gru' is not allowed; allowed values: none, mlp, lstm"),
])
def test_a_value_outside_its_choices_is_refused_listing_them(recipe, config, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(recipe, config, [override])


def test_a_missing_data_path_is_refused_naming_the_key_and_the_path(tmp_path):
    missing = tmp_path / "no-such-corpus"
    with pytest.raises(ConfigError, match=rf"data\.train: path {missing} does not exist"):
        load_config("train", TINY_TRAIN, [f"data.train={missing}"])
    with pytest.raises(ConfigError, match=rf"corpora\.maccrobat\.test: path {missing} does not exist"):
        load_config("compare", CONFIGS / "tiny-compare.yaml", [f"corpora.maccrobat.test={missing}"])


@pytest.mark.parametrize(("recipe", "config", "overrides", "message"), [
    ("train", TINY_TRAIN, ["data.test_documents=null"], r"data\.test_documents: required without a test path"),
    ("train", TINY_TRAIN, ["data.dev_fraction=1.0"], r"data\.dev_fraction: must be in \[0, 1\)"),
    ("train", TINY_TRAIN, ["training.epochs=0"], r"training: epochs must be an integer >= 1, got 0"),
    ("train", TINY_TRAIN, ["model.strategy=finetune", "training.head_lr=null", "training.prompt_lr=1e-2"],
     r"training\.prompt_lr: strategy 'finetune' does not train the prompt"),
    ("train", TINY_TRAIN, ["data.schema=no-such-schema"], r"data\.schema: .*no-such-schema"),
    ("shape", CONFIGS / "tiny-shape.yaml", ["model.strategy=hard-prompt"], r"model\.strategy: the shape study needs"),
    ("fewshot", CONFIGS / "tiny-fewshot.yaml", ["fewshot.seeds=[]"], r"fewshot\.seeds: must hold at least one value"),
    ("compare", CONFIGS / "tiny-compare.yaml", ["corpora={}"], r"corpora: name at least one corpus"),
    ("train", TINY_TRAIN, ["model.strategy=soft-prompt", "model.quantization=8bit"],
     r"model\.quantization: needs a frozen backbone; strategy 'soft-prompt' trains it"),
    ("compare", CONFIGS / "tiny-compare.yaml", ["model.quantization=4bit"],
     r"model\.quantization: needs a frozen backbone; strategy 'finetune' trains it"),
    ("train", TINY_TRAIN, ["prompt.depth=input", "prompt.start_layer=2"],
     r"prompt\.start_layer: needs depth 'deep'"),
    ("train", TINY_TRAIN, ["prompt.start_layer=-1"], r"prompt\.start_layer: must be an integer >= 0"),
])
def test_values_that_do_not_go_together_are_refused_before_any_work(recipe, config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(recipe, config, overrides)


def test_a_missing_backbone_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.backbone: .* cannot be loaded"):
        load_config("train", TINY_TRAIN, [f"model.backbone={tmp_path / 'no-model'}"])


def test_transfer_needs_the_same_types_on_both_sides(shared_data):
    with pytest.raises(ConfigError, match=r"target\.schema: its concept and relation types .* differ from source"):
        load_config("transfer", CONFIGS / "tiny-transfer.yaml", ["target.schema=maccrobat-med"])


def test_evaluate_needs_a_saved_model_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"model_dir: .* holds no extractor\.json"):
        load_config("evaluate", None, [f"model_dir={tmp_path}", "test=bundled:maccrobat2020"])
    with pytest.raises(ConfigError, match=r"model_dir: required"):
        load_config("evaluate", None, ["test=bundled:maccrobat2020"])


def test_the_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config("shape", CONFIGS / "tiny-shape.yaml", ["prompt.num_virtual_tokens=8"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config("shape", path) == config


def test_the_command_line_refuses_a_bad_key_before_any_work(tmp_path, capsys):
    output = tmp_path / "run"
    code = main(["train", "--config", str(TINY_TRAIN), f"output_dir={output}", "training.epoch=2"])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("clinical-prompt: error: ") and "training.epoch: unknown key" in error
    assert not output.exists()  # nothing was started: no run.json, no training directory


def test_the_command_line_prints_the_resolved_config(capsys):
    assert main(["fewshot", "--config", str(CONFIGS / "tiny-fewshot.yaml"), "--print-config", "fewshot.seeds=[7]"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["fewshot"]["seeds"] == [7]
    assert printed["training"]["weight_decay"] == 0.01


def test_evaluate_without_gold_and_pred_or_a_config_is_an_input_error(capsys):
    assert main(["evaluate", "--gold", "x"]) == 2
    assert "evaluate needs --gold DIR --pred DIR, or --config FILE" in capsys.readouterr().err


def test_run_metadata_holds_config_versions_checksums_and_revision(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("one")
    (corpus / "a.ann").write_text("")
    config = load_config("train", TINY_TRAIN, [f"data.train={corpus}", "data.test_documents=1"])
    metadata = run_metadata("train", config, num_processes=2)
    assert metadata["config"] == dataclasses.asdict(config)
    assert set(metadata["versions"]) >= {"torch", "transformers", "peft", "accelerate", "python"}
    assert metadata["data"] == {"data.train": {"path": str(corpus), "files": 2, **path_checksums(corpus)}}
    assert metadata["git_revision"] == git_revision() != ""
    assert metadata["num_processes"] == 2
    before = path_checksums(corpus)["sha256"]
    (corpus / "a.ann").write_text("T1\tDrug 0 3\tone\n")
    assert path_checksums(corpus)["sha256"] != before
    json.dumps(metadata)  # plain data


def test_git_revision_is_unknown_outside_a_checkout(tmp_path):
    assert git_revision(tmp_path) == "unknown"


def test_data_paths_lists_every_set_path_field():
    config = load_config("compare", CONFIGS / "tiny-compare.yaml")
    assert data_paths(config) == {"corpora.maccrobat.train": "bundled:maccrobat2020"}


def test_corpus_names_skip_generic_path_parts(tmp_path):
    from clinical_prompt.recipes.runs import corpus_name

    (tmp_path / "psytar" / "data" / "all").mkdir(parents=True)
    (tmp_path / "psytar" / "data" / "all" / "test.txt").write_text("")
    (tmp_path / "site-a.2024").mkdir()
    assert corpus_name(str(tmp_path / "psytar" / "data" / "all" / "test.txt")) == "psytar"
    assert corpus_name("../shared/data/ddi-corpus-2013-brat/Train") == "ddi-corpus-2013-brat"
    assert corpus_name(str(tmp_path / "site-a.2024")) == "site-a.2024"
    assert corpus_name("bundled:maccrobat2020") == "maccrobat2020"
    assert corpus_name("train") == "train"
