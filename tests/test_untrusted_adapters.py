"""Saved extractors read as untrusted input: copies of real tiny adapters, tampered one way each, then loaded.

Every tampered copy is refused with an error naming the file and the field or tensor, or (unknown config fields,
pickles beside safetensors) loads without reading what it should not; nothing in the files is imported or unpickled.
"""
from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clinical_prompt.extractors import ExtractorFormatError, build_extractor, load_extractor
from clinical_prompt.prompts import AdapterFormatError
from conftest import MEDICATION_VOCAB, medication_schema, save_tiny_bert, save_untrained_extractors

HIDDEN = 32
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), MEDICATION_VOCAB, hidden_size=HIDDEN,
                          num_attention_heads=2, max_position_embeddings=64)


@pytest.fixture(scope="module")
def originals(tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    """A saved frozen soft-prompt extractor and a saved hard-prompt one (with its backbone/), untouched."""
    return save_untrained_extractors(tmp_path_factory.mktemp("originals"), medication_schema(), tiny_backbone)


@pytest.fixture
def soft(originals, tmp_path) -> Path:
    """A fresh copy of the frozen soft-prompt extractor, to tamper with."""
    return Path(shutil.copytree(originals["soft-prompt-frozen"], tmp_path / "soft"))


@pytest.fixture
def hard(originals, tmp_path) -> Path:
    """A fresh copy of the hard-prompt extractor (``backbone/`` and ``heads.safetensors``), to tamper with."""
    return Path(shutil.copytree(originals["hard-prompt"], tmp_path / "hard"))


def load(directory: Path, tiny_backbone: Path):
    return load_extractor(directory, backbone=str(tiny_backbone))


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(path: Path, change) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


class WritesOnUnpickling:
    """Unpickling this object creates the file ``marker``: proof that a pickle was read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(WritesOnUnpickling(marker)))


def test_untouched_copies_load(soft: Path, hard: Path, tiny_backbone: Path) -> None:
    assert load(soft, tiny_backbone).encoder.config.prompt_blocks == ["Drug", "Dosage", "Dosage-Drug"]
    assert load(hard, tiny_backbone).strategy == "hard-prompt"


# --- adapter_config.json, field by field ------------------------------------------------------------------------


def test_unknown_fields_are_reported_by_name_and_file_and_ignored(soft: Path, tiny_backbone: Path) -> None:
    edit_json(soft / CONFIG, from_a_later_version=1, another_field={"x": 1})
    with pytest.warns(UserWarning) as caught:
        extractor = load(soft, tiny_backbone)
    messages = [str(w.message) for w in caught if CONFIG in str(w.message)]
    assert messages and all(str(soft / CONFIG) in m for m in messages)
    assert "['another_field', 'from_a_later_version']" in messages[0]
    assert not hasattr(extractor.encoder.config, "from_a_later_version")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_virtual_tokens", "16", "num_virtual_tokens='16' has type str; expected int"),
        ("num_virtual_tokens", True, "num_virtual_tokens=True has type bool; expected int"),
        ("num_virtual_tokens", 0, r"num_virtual_tokens=0 is not valid; use an integer >= 1"),
        ("num_virtual_tokens", -3, r"num_virtual_tokens=-3 is not valid"),
        ("token_dim", 32.0, "token_dim=32.0 has type float; expected int"),
        ("prompt_blocks", "Drug", r"prompt_blocks='Drug' has type str; expected list\[str\]"),
        ("prompt_blocks", ["Drug", 2, "Dosage-Drug"], r"prompt_blocks=\['Drug', 2, 'Dosage-Drug'\] has type list"),
        ("inference_mode", "yes", "inference_mode='yes' has type str; expected bool"),
        ("prompt_dropout", "0.1", "prompt_dropout='0.1' has type str; expected float"),
        ("depth", ["deep"], "depth=.* has type list; expected str"),
        ("base_model_type", 7, "base_model_type=7 has type int; expected str or null"),
        ("prompt_init_texts", {"Drug": ["x"]}, r"prompt_init_texts=.* expected dict\[str, str\] or null"),
        ("peft_type", "LORA", "peft_type is 'LORA'"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_by_name(soft: Path, tiny_backbone: Path, field, value, message) -> None:
    edit_json(soft / CONFIG, **{field: value})
    with pytest.raises(AdapterFormatError, match=rf"{CONFIG}: {message}"):
        load(soft, tiny_backbone)


def test_nothing_the_config_names_is_imported(soft: Path, tiny_backbone: Path, tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "imported"
    module = tmp_path / "modules" / "adapter_payload.py"
    module.parent.mkdir()
    module.write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: pass\n")
    monkeypatch.syspath_prepend(str(module.parent))
    edit_json(soft / CONFIG, auto_mapping={"base_model_class": "Model", "parent_library": "adapter_payload"})
    load(soft, tiny_backbone)
    assert not marker.exists() and "adapter_payload" not in sys.modules


# --- names that lead outside the adapter ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["base_model_name_or_path", "tokenizer_name_or_path"])
@pytest.mark.parametrize("value", ["../../models/bert", "/srv/models/bert", "~/models/bert"])
def test_a_config_naming_a_path_is_refused(soft: Path, tiny_backbone: Path, field: str, value: str) -> None:
    edit_json(soft / CONFIG, **{field: value})
    with pytest.raises(AdapterFormatError, match=rf"{CONFIG}: {field}='{value}' is not a hub id"):
        load(soft, tiny_backbone)


@pytest.mark.parametrize("value", ["../bert", "/srv/models/bert"])
def test_a_recorded_backbone_path_is_refused(soft: Path, value: str) -> None:
    edit_json(soft / "extractor.json", backbone=value)
    with pytest.raises(ExtractorFormatError, match=f"extractor.json: backbone='{value}' is not a hub id"):
        load_extractor(soft)


@pytest.mark.parametrize("name", [CONFIG, WEIGHTS, "schema.json", "labels.json", "extractor.json"])
def test_a_symlink_leading_outside_is_refused(soft: Path, tiny_backbone: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    (soft / name).rename(outside)  # the same, valid content: only where it lies is wrong
    (soft / name).symlink_to(outside)
    with pytest.raises(AdapterFormatError, match=rf"{name}: leads outside .*soft"):
        load(soft, tiny_backbone)


def test_a_symlink_inside_the_adapter_is_followed(soft: Path, tiny_backbone: Path) -> None:
    (soft / "weights").mkdir()
    (soft / WEIGHTS).rename(soft / "weights" / WEIGHTS)
    (soft / WEIGHTS).symlink_to(Path("weights") / WEIGHTS)
    assert load(soft, tiny_backbone).encoder.config.num_virtual_tokens == 16


@pytest.mark.parametrize("entry", ["backbone", "backbone/model.safetensors", "backbone/tokenizer.json"])
def test_a_backbone_entry_leading_outside_is_refused(hard: Path, tiny_backbone: Path, tmp_path: Path,
                                                     entry: str) -> None:
    outside = tmp_path / "elsewhere" / Path(entry).name
    outside.parent.mkdir()
    (hard / entry).rename(outside)
    (hard / entry).symlink_to(outside)
    with pytest.raises(AdapterFormatError, match=rf"{Path(entry).name}: leads outside .*hard"):
        load(hard, tiny_backbone)


def test_a_shard_index_naming_a_file_outside_is_refused(hard: Path, tiny_backbone: Path, tmp_path: Path) -> None:
    shutil.copy(hard / "backbone" / "model.safetensors", tmp_path / "outside.safetensors")
    names = load_file(hard / "backbone" / "model.safetensors")
    (hard / "backbone" / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {name: "../../outside.safetensors" for name in names}}
    (hard / "backbone" / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(AdapterFormatError, match=r"outside.safetensors: leads outside .*backbone"):
        load(hard, tiny_backbone)


# --- safetensors only -------------------------------------------------------------------------------------------


def test_pickles_beside_safetensors_are_never_read(soft: Path, hard: Path, tiny_backbone: Path,
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    for path in (soft / "adapter_model.bin", soft / "adapter_model.pt", hard / "heads.pkl",
                 hard / "backbone" / "pytorch_model.bin"):
        plant_pickle(path, marker)
    load(soft, tiny_backbone)
    load(hard, tiny_backbone)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("strategy", "weights", "pickle_name"),
    [
        ("soft", WEIGHTS, "adapter_model.bin"),
        ("soft", WEIGHTS, "adapter_model.ckpt"),
        ("hard", "heads.safetensors", "heads.pt"),
        ("hard", "backbone/model.safetensors", "backbone/pytorch_model.bin"),
    ],
)
def test_only_a_pickle_is_a_clear_error(request, tiny_backbone: Path, tmp_path: Path, strategy: str, weights: str,
                                        pickle_name: str) -> None:
    directory = request.getfixturevalue(strategy)
    marker = tmp_path / "unpickled"
    (directory / weights).unlink()
    plant_pickle(directory / pickle_name, marker)
    with pytest.raises(AdapterFormatError, match=rf"{Path(pickle_name).name}: pickle weights are never loaded"):
        load(directory, tiny_backbone)
    assert not marker.exists()


# --- tensors against the config, the schema and the hidden size -------------------------------------------------


def test_prompt_tables_with_a_block_too_few_are_refused(soft: Path, tiny_backbone: Path) -> None:
    edit_tensors(soft / WEIGHTS, lambda t: t.update(prompt_tables=t["prompt_tables"][:2].clone()))
    with pytest.raises(AdapterFormatError, match=rf"{WEIGHTS}: tensor 'prompt_tables' has shape \[2, 16, 128\], "
                                                 r"expected \[3, 16, 128\]"):
        load(soft, tiny_backbone)


def test_prompt_blocks_that_are_not_the_schemas_query_types_are_refused(soft: Path, tiny_backbone: Path) -> None:
    """A config and tables that agree with each other, for two of the schema's three query types."""
    config = json.loads((soft / CONFIG).read_text())
    edit_json(soft / CONFIG, prompt_blocks=["Drug", "Dosage"],
              prompt_init_texts={k: v for k, v in config["prompt_init_texts"].items() if k != "Dosage-Drug"})
    edit_tensors(soft / WEIGHTS, lambda t: t.update(prompt_tables=t["prompt_tables"][:2].clone()))
    with pytest.raises(AdapterFormatError, match=rf"{CONFIG}: prompt_blocks \['Drug', 'Dosage'\] differ from "
                                                 r"\['Drug', 'Dosage', 'Dosage-Drug'\]"):
        load(soft, tiny_backbone)


@pytest.mark.parametrize(("strategy", "weights"), [("soft", WEIGHTS), ("hard", "heads.safetensors")])
@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.update({"heads.start.weight": torch.zeros(1, 48)}),
     rf"tensor 'heads.start.weight' has shape \[1, 48\], expected \[1, {HIDDEN}\]"),
    (lambda t: t.update(extra=t.pop("heads.end.bias")),
     r"tensors do not match the model .*missing \['heads.end.bias'\], unexpected \['extra'\]"),
], ids=["another-hidden-size", "missing-and-extra"])
def test_head_tensors_that_do_not_fit_the_model_are_named(request, tiny_backbone: Path, strategy: str, weights: str,
                                                          change, message: str) -> None:
    directory = request.getfixturevalue(strategy)
    edit_tensors(directory / weights, change)
    with pytest.raises(AdapterFormatError, match=rf"{weights}: {message}"):
        load(directory, tiny_backbone)


def test_integer_tensors_are_refused(soft: Path, tiny_backbone: Path) -> None:
    edit_tensors(soft / WEIGHTS, lambda t: t.update(prompt_tables=t["prompt_tables"].long()))
    with pytest.raises(AdapterFormatError, match=rf"{WEIGHTS}: tensor 'prompt_tables' holds I64, not floating point"):
        load(soft, tiny_backbone)


# --- extractor.json settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_length": "32"}, "settings.max_length='32' has type str; expected int"),
        ({"neighbours": 1.5}, "settings.neighbours=1.5 has type float; expected int"),
        ({"decoding": "greedy"}, "settings.decoding='greedy' has type str; expected 'flat' or 'scored' or 'nested'"),
        ({"relation_decoding": "all"}, "settings.relation_decoding='all' has type str; expected 'flat' or 'scored' "
                                       "or 'nested' or null"),
        ({"threshold": None}, "settings.threshold=None has type NoneType; expected float"),
        ({"shell": "rm"}, r"settings: unknown fields \['shell'\]"),
    ],
)
def test_settings_of_the_wrong_type_are_refused(soft: Path, tiny_backbone: Path, settings, message) -> None:
    meta = json.loads((soft / "extractor.json").read_text())
    edit_json(soft / "extractor.json", settings={**meta["settings"], **settings})
    with pytest.raises(ExtractorFormatError, match=f"extractor.json: {message}"):
        load(soft, tiny_backbone)


# --- every strategy's folder, finetune included ------------------------------------------------------------------

WEIGHTS_OF = {"soft-prompt-frozen": WEIGHTS, "soft-prompt": WEIGHTS, "hard-prompt": "heads.safetensors",
              "finetune": "heads.safetensors"}


@pytest.fixture(scope="module")
def every_strategy(originals, tiny_backbone, tmp_path_factory) -> dict[str, Path]:
    """A saved extractor of each of the four strategies."""
    root = tmp_path_factory.mktemp("every-strategy")
    for strategy in ("soft-prompt", "finetune"):
        torch.manual_seed(0)
        build_extractor(strategy, medication_schema(), str(tiny_backbone), max_length=32).save_pretrained(
            root / strategy)
    return {**originals, "soft-prompt": root / "soft-prompt", "finetune": root / "finetune"}


@pytest.fixture(params=list(WEIGHTS_OF))
def saved(request, every_strategy, tmp_path) -> tuple[str, Path]:
    """``(strategy, a fresh copy of its saved folder)``."""
    return request.param, Path(shutil.copytree(every_strategy[request.param], tmp_path / request.param))


def test_every_strategy_refuses_weights_that_link_outside(saved, tiny_backbone: Path, tmp_path: Path) -> None:
    strategy, directory = saved
    weights = directory / WEIGHTS_OF[strategy]
    outside = tmp_path / "elsewhere.safetensors"
    weights.rename(outside)
    weights.symlink_to(outside)
    with pytest.raises(AdapterFormatError, match=rf"{WEIGHTS_OF[strategy]}: leads outside .*{strategy}"):
        load(directory, tiny_backbone)


def test_every_strategy_refuses_a_pickle_in_place_of_its_weights(saved, tiny_backbone: Path, tmp_path: Path) -> None:
    strategy, directory = saved
    marker = tmp_path / "unpickled"
    (directory / WEIGHTS_OF[strategy]).unlink()
    plant_pickle(directory / Path(WEIGHTS_OF[strategy]).with_suffix(".bin"), marker)
    with pytest.raises(AdapterFormatError, match=r"\.bin: pickle weights are never loaded"):
        load(directory, tiny_backbone)
    assert not marker.exists()


def test_every_strategy_loads_from_a_hub_cache_snapshot_and_refuses_links_out_of_it(saved, tiny_backbone: Path,
                                                                                     tmp_path: Path) -> None:
    """Files of a snapshot link into their repository's blobs, as huggingface_hub lays them out."""
    strategy, directory = saved
    repo = tmp_path / "hub" / "models--org--adapter"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    for number, path in enumerate(sorted(p for p in directory.rglob("*") if p.is_file())):
        relative = path.relative_to(directory)
        blob = repo / "blobs" / str(number)
        path.rename(blob)
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / relative).symlink_to(Path(*[".."] * (len(relative.parts) + 1), "blobs", blob.name))
    assert load(snapshot, tiny_backbone).strategy == strategy
    other = tmp_path / "hub" / "models--org--other" / "blobs" / "weights"
    other.parent.mkdir(parents=True)
    (snapshot / WEIGHTS_OF[strategy]).resolve().rename(other)
    (snapshot / WEIGHTS_OF[strategy]).unlink()
    (snapshot / WEIGHTS_OF[strategy]).symlink_to(other)
    with pytest.raises(AdapterFormatError, match=rf"{WEIGHTS_OF[strategy]}: leads outside .*snapshots/0123abcd"):
        load(snapshot, tiny_backbone)


def test_finetune_heads_and_settings_are_checked(every_strategy, tiny_backbone: Path, tmp_path: Path) -> None:
    directory = Path(shutil.copytree(every_strategy["finetune"], tmp_path / "finetune"))
    edit_tensors(directory / "heads.safetensors",
                 lambda t: t.update({"tagging_head.classifier.weight": torch.zeros(2, HIDDEN)}))
    with pytest.raises(AdapterFormatError, match=r"heads.safetensors: tensor 'tagging_head.classifier.weight' has "
                                                 rf"shape \[2, {HIDDEN}\], expected \[\d+, {HIDDEN}\]"):
        load(directory, tiny_backbone)
    meta = json.loads((directory / "extractor.json").read_text())
    edit_json(directory / "extractor.json", settings={**meta["settings"], "max_length": "32"})
    with pytest.raises(ExtractorFormatError, match="extractor.json: settings.max_length='32' has type str"):
        load(directory, tiny_backbone)
