"""Recipe configs: sections of pydantic dataclasses loaded from YAML plus ``key=value`` dotted overrides, checked
strictly.

A YAML file is the single source of truth of a run. :func:`load_config` reads it, applies overrides such as
``training.epochs=5`` or ``fewshot.sizes=[5,10]`` (values are YAML, with YAML 1.2 numbers: ``1e-3`` is a number), and
refuses, before any work, an unknown key (naming it and listing the allowed keys), a value of the wrong type (naming
the key and the expected type; no coercion: ``"3"`` is not an integer, ``true`` is not a number), a value outside a
field's choices (listing them) and a path that does not exist; one message names every such problem, each on its own
line. Relative paths are relative to the working directory; ``bundled:maccrobat2020`` names the corpus shipped in
the package.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import typing
from collections.abc import Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from clinical_prompt.backbone import backbone_problem
from clinical_prompt.errors import ClinicalPromptError
from clinical_prompt.extractors.mrc.settings import PROMPT_SHARING
from clinical_prompt.layout import EXTRACTOR_FILE
from clinical_prompt.prompts.config import DEPTHS, PROMPT_INITS, REPARAMETERIZATIONS
from clinical_prompt.pull import parse_repo_id
from clinical_prompt.quantization import QUANTIZATIONS
from clinical_prompt.readers import FORMATS, resolve_corpus_path
from clinical_prompt.schema import SchemaError, load_schema
from clinical_prompt.strategies import STRATEGIES
from clinical_prompt.training import MIXED_PRECISION, TrainingConfig

FEWSHOT_UNITS = ("documents", "sentences")
SOFT_STRATEGIES = tuple(name for name, spec in STRATEGIES.items() if spec.uses_soft_prompts)
SECTION = ConfigDict(extra="forbid")  # every section: an unknown key is an error

C = TypeVar("C")


class ConfigError(ClinicalPromptError, ValueError):
    """An invalid recipe config: ``problems`` holds each ``(dotted key, problem)`` (key ``""`` for the whole file),
    ``key`` and ``problem`` the first; the message gives each on its own line, after the source file."""

    def __init__(self, key: str, problem: str, source: str | None = None, *,
                 more: Sequence[tuple[str, str]] = ()) -> None:
        self.problems = [(key, problem), *more]
        self.key, self.problem, self.source = key, problem, source
        lines = [": ".join(part for part in (source, key, problem) if part) for key, problem in self.problems]
        super().__init__("\n".join(lines))


def _field(default: Any = dataclasses.MISSING, *, help: str, choices: Sequence[str] = (), path: bool = False,
           factory: Any = dataclasses.MISSING) -> Any:
    return field(default=default, default_factory=factory,
                 metadata={"help": help, "choices": tuple(choices), "path": path})


# --- sections ---------------------------------------------------------------------------------------------------


@dataclass(config=SECTION)
class DataConfig:
    """One corpus mapped onto a schema, split into train and test."""

    train: StrictStr | None = _field(None, path=True, help="training documents (a folder or file in `format`)")
    test: StrictStr | None = _field(None, path=True, help="test documents; null: hold out test_documents of train")
    schema: StrictStr = _field("maccrobat-med", help="built-in schema name or schema YAML file")
    format: StrictStr = _field("brat", choices=FORMATS, help="how the corpus is stored")
    test_documents: StrictInt | None = _field(
        None, help="with test: a seeded sample of this many (null: all); without: the last this many of train")
    train_documents: StrictInt | None = _field(None, help="a seeded sample of this many training documents (null: all)")
    annotated_only: StrictBool = _field(False, help="train only on documents with at least one concept of the schema")
    dev_fraction: StrictFloat = _field(0.1, help="share of the training documents kept for dev scoring")


@dataclass(config=SECTION)
class ModelConfig:
    """What is trained: the strategy, the backbone and how rows are built."""

    strategy: StrictStr = _field("soft-prompt-frozen", choices=tuple(STRATEGIES), help="training strategy")
    backbone: StrictStr = _field("minilm", help="minilm, mpnet, a hub id or a local model folder")
    max_length: StrictInt = _field(256, help="tokens per row, prompt and query included")
    negative_ratio: StrictFloat | None = _field(
        1.0, help="MRC strategies: training rows without a gold answer kept per row with one (null: all)")
    head_dropout: StrictFloat = _field(0.3, help="MRC strategies: dropout of the span head while training")
    quantization: StrictStr | None = _field(
        None, choices=QUANTIZATIONS, help="soft-prompt-frozen: an 8bit or 4bit backbone through bitsandbytes")


@dataclass(config=SECTION)
class PromptSection:
    """The soft prompt (strategies soft-prompt and soft-prompt-frozen)."""

    num_virtual_tokens: StrictInt = _field(16, help="virtual tokens per prompt block")
    depth: StrictStr = _field("deep", choices=DEPTHS, help="input-layer tokens or key/value prefixes in every layer")
    start_layer: StrictInt = _field(
        0, help="deep prompts: first layer with prefixes; the layers below run once per text (late prompts)")
    reparameterization: StrictStr = _field("none", choices=REPARAMETERIZATIONS, help="trained through an MLP or LSTM")
    prompt_init: StrictStr = _field("query", choices=PROMPT_INITS, help="how the prompt tables start")
    sharing: StrictStr = _field(
        "per-type", choices=PROMPT_SHARING, help="one block per concept and relation type, or one shared block")
    prompt_dropout: StrictFloat = _field(0.0, help="dropout on the prompt vectors while training")
    encoder_hidden_size: StrictInt | None = _field(None, help="MLP bottleneck or LSTM size (null: the hidden size)")


@dataclass(config=SECTION)
class TrainingSection:
    """How long and how fast; null learning rates take the strategy's defaults."""

    epochs: StrictInt = _field(3, help="passes over the training rows")
    batch_size: StrictInt = _field(8, help="rows per batch on each process")
    gradient_accumulation_steps: StrictInt = _field(1, help="batches per optimizer step")
    group_by_length: StrictBool = _field(False, help="batches of rows of similar length: far less padding")
    eval_batch_size: StrictInt = _field(32, help="rows per forward pass when extracting")
    backbone_lr: StrictFloat | None = _field(None, help="backbone learning rate (null: the strategy's)")
    head_lr: StrictFloat | None = _field(None, help="head learning rate (null: the strategy's)")
    prompt_lr: StrictFloat | None = _field(None, help="prompt learning rate (null: the strategy's)")
    weight_decay: StrictFloat = _field(0.01, help="AdamW weight decay")
    warmup_ratio: StrictFloat = _field(0.0, help="share of optimizer steps with linear warmup")
    eval_every_epoch: StrictBool = _field(True, help="score dev after every epoch, else after the last only")
    early_stopping_patience: StrictInt | None = _field(None, help="stop after this many epochs without dev gain")
    load_best_at_end: StrictBool = _field(True, help="restore the epoch with the best dev strict F1")
    mixed_precision: StrictStr = _field("auto", choices=MIXED_PRECISION, help="auto: bf16 where the GPU has it")
    seed: StrictInt = _field(42, help="seed of the weights, the data order and every sample")
    keep_checkpoints: StrictBool = _field(False, help="keep the per-epoch checkpoints after training")

    def training_config(self, output_dir: Path, *, dev: bool = True) -> TrainingConfig:
        """The library's :class:`TrainingConfig` of this section; no early stopping without dev documents."""
        return TrainingConfig(
            output_dir=output_dir, num_epochs=self.epochs, per_device_batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, group_by_length=self.group_by_length,
            weight_decay=self.weight_decay, warmup_ratio=self.warmup_ratio, eval_every_epoch=self.eval_every_epoch,
            early_stopping_patience=self.early_stopping_patience if dev else None,
            load_best_at_end=self.load_best_at_end, mixed_precision=self.mixed_precision, seed=self.seed,
        )


@dataclass(config=SECTION)
class FewshotSection:
    """The few-shot sweep: training sizes x strategies x seeds."""

    unit: StrictStr = _field("documents", choices=FEWSHOT_UNITS, help="what sizes count")
    sizes: list[StrictInt] = _field(factory=lambda: [5, 10, 20], help="training sizes; samples are nested")
    strategies: list[StrictStr] = _field(
        factory=list, choices=tuple(STRATEGIES), help="strategies to sweep (empty: model.strategy)")
    seeds: list[StrictInt] = _field(factory=lambda: [1, 2, 3], help="one sample and run per seed")


@dataclass(config=SECTION)
class ShapeSection:
    """The prompt shape study: each axis varied alone around the `prompt` section."""

    strategies: list[StrictStr] = _field(factory=list, choices=SOFT_STRATEGIES, help="empty: model.strategy")
    num_virtual_tokens: list[StrictInt] = _field(factory=lambda: [4, 16, 64], help="prompt lengths")
    depth: list[StrictStr] = _field(factory=lambda: list(DEPTHS), choices=DEPTHS, help="depths")
    reparameterization: list[StrictStr] = _field(
        factory=lambda: list(REPARAMETERIZATIONS), choices=REPARAMETERIZATIONS, help="reparameterizations")
    sharing: list[StrictStr] = _field(
        factory=lambda: list(PROMPT_SHARING), choices=PROMPT_SHARING, help="block sharing")
    prompt_init: list[StrictStr] = _field(
        factory=lambda: list(PROMPT_INITS), choices=PROMPT_INITS, help="initializations")


# --- recipes ----------------------------------------------------------------------------------------------------


_MODEL_DIR_HELP = "a directory written by the train recipe (its model/ folder), or a hub repository ORG/NAME[@REVISION]"
_SAVED_BACKBONE_HELP = "backbone of a frozen model saved without one (trained on a local folder): its name or folder"


@dataclass(config=SECTION)
class TrainRecipe:
    """``train``: fit one extractor, save it, score it on the test split, write its predictions."""

    output_dir: StrictStr = _field("runs/train", help="where the model, metrics and run.json go")
    data: DataConfig = _field(factory=DataConfig, help="the corpus")
    model: ModelConfig = _field(factory=ModelConfig, help="strategy and backbone")
    prompt: PromptSection = _field(factory=PromptSection, help="soft prompt shape")
    training: TrainingSection = _field(factory=TrainingSection, help="training settings")


@dataclass(config=SECTION)
class EvaluateRecipe:
    """``evaluate``: score a trained model directory on gold documents."""

    model_dir: StrictStr = _field(help=_MODEL_DIR_HELP)
    test: StrictStr = _field(path=True, help="gold documents")
    format: StrictStr = _field("brat", choices=FORMATS, help="how the gold documents are stored")
    output_dir: StrictStr = _field("runs/evaluate", help="where metrics, predictions and run.json go")
    backbone: StrictStr | None = _field(None, help=_SAVED_BACKBONE_HELP)
    batch_size: StrictInt = _field(32, help="rows per forward pass")


@dataclass(config=SECTION)
class ExtractRecipe:
    """``extract``: predict BRAT annotations for documents with a trained model directory."""

    model_dir: StrictStr = _field(help=_MODEL_DIR_HELP)
    input: StrictStr = _field(path=True, help="documents to annotate (their annotations are ignored)")
    format: StrictStr = _field("brat", choices=FORMATS, help="how the input documents are stored")
    output_dir: StrictStr = _field("runs/extract", help="where the predicted .txt/.ann files and run.json go")
    backbone: StrictStr | None = _field(None, help=_SAVED_BACKBONE_HELP)
    batch_size: StrictInt = _field(32, help="rows per forward pass")


@dataclass(config=SECTION)
class FewshotRecipe:
    """``fewshot``: learning curves over training sizes, strategies and seeds."""

    output_dir: StrictStr = _field("runs/fewshot", help="where the table, plot and run.json go")
    data: DataConfig = _field(factory=DataConfig, help="the corpus")
    model: ModelConfig = _field(factory=ModelConfig, help="strategy and backbone")
    prompt: PromptSection = _field(factory=PromptSection, help="soft prompt shape")
    training: TrainingSection = _field(factory=TrainingSection, help="training settings")
    fewshot: FewshotSection = _field(factory=FewshotSection, help="the sweep")


@dataclass(config=SECTION)
class TransferRecipe:
    """``transfer``: train on a source corpus, score in-domain and on a target corpus with the same types."""

    output_dir: StrictStr = _field("runs/transfer", help="where the table, plot and run.json go")
    source: DataConfig = _field(factory=DataConfig, help="corpus A: train and in-domain test")
    target: DataConfig = _field(factory=DataConfig, help="corpus B: its test split is scored")
    strategies: list[StrictStr] = _field(factory=list, choices=tuple(STRATEGIES), help="empty: model.strategy")
    model: ModelConfig = _field(factory=ModelConfig, help="strategy and backbone")
    prompt: PromptSection = _field(factory=PromptSection, help="soft prompt shape")
    training: TrainingSection = _field(factory=TrainingSection, help="training settings")


@dataclass(config=SECTION)
class CompareRecipe:
    """``compare``: the grid of strategies x backbones x corpora."""

    output_dir: StrictStr = _field("runs/compare", help="where the table, plot and run.json go")
    corpora: dict[str, DataConfig] = _field(factory=dict, help="corpus name -> corpus")
    strategies: list[StrictStr] = _field(factory=lambda: list(STRATEGIES), choices=tuple(STRATEGIES), help="strategies")
    backbones: list[StrictStr] = _field(factory=lambda: ["minilm"], help="names, hub ids or folders; absent ones skip")
    model: ModelConfig = _field(factory=ModelConfig, help="row settings (strategy and backbone come from the grid)")
    prompt: PromptSection = _field(factory=PromptSection, help="soft prompt shape")
    training: TrainingSection = _field(factory=TrainingSection, help="training settings")


@dataclass(config=SECTION)
class ShapeRecipe:
    """``shape``: F1 against trainable parameters over soft prompt shapes."""

    output_dir: StrictStr = _field("runs/shape", help="where the table, plot and run.json go")
    data: DataConfig = _field(factory=DataConfig, help="the corpus")
    model: ModelConfig = _field(factory=ModelConfig, help="strategy and backbone")
    prompt: PromptSection = _field(factory=PromptSection, help="the base shape every variant starts from")
    training: TrainingSection = _field(factory=TrainingSection, help="training settings")
    shape: ShapeSection = _field(factory=ShapeSection, help="the axes to vary")


RECIPES: dict[str, type] = {
    "train": TrainRecipe,
    "evaluate": EvaluateRecipe,
    "extract": ExtractRecipe,
    "fewshot": FewshotRecipe,
    "transfer": TransferRecipe,
    "compare": CompareRecipe,
    "shape": ShapeRecipe,
}


# --- loading ----------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-3`` and ``1E5`` are numbers (YAML 1.1 reads them as strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+.0123456789"))


def load_config(recipe: str | type[C], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> C:
    """The config of ``recipe`` (a name in :data:`RECIPES` or a config dataclass of the same kind, whose ``check()``
    raises :class:`ConfigError` on a problem across fields) from the YAML file at ``path`` (or the defaults) with
    ``key=value`` ``overrides`` applied; raises :class:`ConfigError` on any problem."""
    cls = RECIPES[recipe] if isinstance(recipe, str) else recipe
    source = str(path) if path is not None else None
    data: Any = {}
    if path is not None:
        try:
            data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
        except FileNotFoundError:
            raise ConfigError("", "config file not found", source) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "?"
            raise ConfigError("", f"not valid YAML ({where})", source) from None
        data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError("", "the top level must be a mapping of keys to values", source)
    for override in overrides:
        _apply_override(data, override)
    try:
        # A tuple around the class: the adapter's config then reaches plain dataclasses too (a benchmark's own).
        (config,) = TypeAdapter(tuple[cls], config=SECTION).validate_python((data,))
    except ValidationError as error:
        problems = [_problem(cls, item) for item in error.errors()]
        raise ConfigError(*problems[0], source, more=problems[1:]) from None
    problems = list(_field_problems(config))
    if problems:
        raise ConfigError(*problems[0], source, more=problems[1:])
    try:
        check_recipe(config)
    except ConfigError as error:
        raise ConfigError(error.key, error.problem, source) from None
    return config


def _apply_override(data: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError("", f"override {override!r} is not key=value (e.g. training.epochs=3)")
    try:
        value = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        raise ConfigError(key, f"override value {text!r} is not valid YAML") from None
    *parents, last = key.strip().split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parents[: i + 1]), "is not a section; cannot set a key inside it")
        node = child
    node[last] = value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_EXPECTED = {  # pydantic's error type -> what the field takes
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "a number"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "true or false"),
    "string_type": "a string", "dataclass_type": "a section (mapping)", "dict_type": "a mapping", "list_type": "a list",
}


def _problem(cls: type, error: Any) -> tuple[str, str]:
    """``(dotted key, problem)`` of one pydantic error about the config of class ``cls``."""
    loc = error["loc"][1:]  # past the tuple around the class
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if error["type"] in ("unexpected_keyword_argument", "missing"):
        fields = {spec.name: spec for spec in dataclasses.fields(_type_at(cls, loc[:-1]))}
        if error["type"] == "missing":
            return key, f"required ({fields[loc[-1]].metadata['help']})"
        return key, f"unknown key; allowed keys: {', '.join(fields)}"
    if error["type"] not in _EXPECTED:
        return key, error["msg"]
    value = error["input"]
    got = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
           dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)
    if not isinstance(value, (dict, list, type(None))):
        hint = "; YAML reads unquoted yes/no/on/off as booleans: quote the value" if isinstance(value, bool) else ""
        got += f" ({value!r}{hint})"
    return key, f"expected {_EXPECTED[error['type']]}, got {got}"


def _type_at(cls: type, loc: Sequence[str | int]) -> Any:
    """The type at ``loc`` (field names, mapping keys, list indices) inside config class ``cls``."""
    kind: Any = cls
    for part in loc:
        kind = typing.get_type_hints(kind)[part] if dataclasses.is_dataclass(kind) else typing.get_args(kind)[-1]
    return kind


def _field_problems(config: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, problem)`` for each value outside its field's choices and each set path field that does not
    exist (``bundled:`` names resolve to the package's corpora), in every section of ``config``."""
    for spec in dataclasses.fields(config):
        value, key = getattr(config, spec.name), _join(prefix, spec.name)
        choices = spec.metadata.get("choices")
        items = {f"{key}[{i}]": item for i, item in enumerate(value)} if isinstance(value, list) else {key: value}
        for item_key, item in items.items():
            if choices and item is not None and item not in choices:
                yield item_key, f"{item!r} is not allowed; allowed values: {', '.join(choices)}"
        if spec.metadata.get("path") and value is not None and not resolve_corpus_path(value).exists():
            yield key, f"path {value} does not exist (relative paths start at {Path.cwd()})"
        sections = {_join(key, name): item for name, item in value.items()} if isinstance(value, dict) else {key: value}
        for section_key, section in sections.items():
            if dataclasses.is_dataclass(section):
                yield from _field_problems(section, section_key)


# --- cross-field checks -----------------------------------------------------------------------------------------


def _positive(value: int | None, key: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {value!r}")


def check_data(data: DataConfig, key: str, *, needs_train: bool = True) -> None:
    """Checks of one corpus section that need more than one field (the schema is loaded to check it)."""
    if needs_train and data.train is None:
        raise ConfigError(f"{key}.train", "required: the training documents")
    if data.test is None and data.test_documents is None:
        raise ConfigError(f"{key}.test_documents", "required without a test path: how many documents to hold out")
    _positive(data.test_documents, f"{key}.test_documents")
    _positive(data.train_documents, f"{key}.train_documents")
    if not 0 <= data.dev_fraction < 1:
        raise ConfigError(f"{key}.dev_fraction", f"must be in [0, 1), got {data.dev_fraction}")
    try:
        load_schema(data.schema)
    except (SchemaError, FileNotFoundError, ValueError) as error:
        raise ConfigError(f"{key}.schema", str(error)) from None


def check_model(
    model: ModelConfig, prompt: PromptSection, training: TrainingSection, strategies: Sequence[str]
) -> None:
    """Row, prompt and training values that the library would refuse later, refused now."""
    _positive(model.max_length, "model.max_length", allow_none=False)
    if model.negative_ratio is not None and model.negative_ratio < 0:
        raise ConfigError("model.negative_ratio", f"must be >= 0 or null, got {model.negative_ratio}")
    if not 0 <= model.head_dropout < 1:
        raise ConfigError("model.head_dropout", f"must be in [0, 1), got {model.head_dropout}")
    if model.quantization is not None:
        trained = [s for s in strategies if not STRATEGIES[s].freeze_backbone]
        if trained:
            raise ConfigError("model.quantization", f"needs a frozen backbone; strategy {trained[0]!r} trains it")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("model.quantization", "needs bitsandbytes: pip install 'clinical-prompt[quant]'")
    _positive(prompt.num_virtual_tokens, "prompt.num_virtual_tokens", allow_none=False)
    _positive(prompt.encoder_hidden_size, "prompt.encoder_hidden_size")
    if not 0 <= prompt.prompt_dropout < 1:
        raise ConfigError("prompt.prompt_dropout", f"must be in [0, 1), got {prompt.prompt_dropout}")
    if prompt.start_layer < 0:
        raise ConfigError("prompt.start_layer", f"must be an integer >= 0, got {prompt.start_layer}")
    if prompt.start_layer and prompt.depth != "deep":
        raise ConfigError("prompt.start_layer", f"needs depth 'deep' (key/value prefixes), got {prompt.depth!r}")
    _positive(training.eval_batch_size, "training.eval_batch_size", allow_none=False)
    try:
        training.training_config(Path("."))
    except ValueError as error:
        raise ConfigError("training", str(error).replace("num_epochs", "epochs")
                          .replace("per_device_batch_size", "batch_size")) from None
    for part in ("backbone", "head", "prompt"):
        rate = getattr(training, f"{part}_lr")
        if rate is not None and rate <= 0:
            raise ConfigError(f"training.{part}_lr", f"must be > 0 or null, got {rate}")
        untrained = [s for s in strategies if STRATEGIES[s].learning_rates()[part] is None]
        if rate is not None and part != "head" and len(untrained) == len(strategies):
            raise ConfigError(f"training.{part}_lr", f"strategy {untrained[0]!r} does not train the {part}")


def _strategies(configured: list[str], model: ModelConfig) -> list[str]:
    return list(configured) or [model.strategy]


def check_recipe(config: Any) -> None:
    """The checks of a recipe that involve several fields or sections; a config class not in :data:`RECIPES` (a
    benchmark's own) runs its ``check()`` method instead."""
    if type(config) not in RECIPES.values():
        config.check()
        return
    if isinstance(config, (EvaluateRecipe, ExtractRecipe)):
        _positive(config.batch_size, "batch_size", allow_none=False)
        model = Path(config.model_dir)
        if not model.exists() and parse_repo_id(config.model_dir) is None:
            raise ConfigError("model_dir", f"path {config.model_dir} does not exist (relative paths start at "
                              f"{Path.cwd()}), and it is not a hub repo id ORG/NAME[@REVISION]")
        if model.exists() and not (model / EXTRACTOR_FILE).is_file():
            raise ConfigError("model_dir", f"{config.model_dir} holds no {EXTRACTOR_FILE}; give a directory written by "
                              "save_pretrained (the train recipe's output_dir/model), or a hub repository")
        return
    strategies = [config.model.strategy]
    if isinstance(config, (TrainRecipe, FewshotRecipe, ShapeRecipe)):
        check_data(config.data, "data")
    if isinstance(config, FewshotRecipe):
        strategies = _strategies(config.fewshot.strategies, config.model)
        for i, size in enumerate(config.fewshot.sizes):
            _positive(size, f"fewshot.sizes[{i}]", allow_none=False)
        for name in ("sizes", "seeds"):
            if not getattr(config.fewshot, name):
                raise ConfigError(f"fewshot.{name}", "must hold at least one value")
    if isinstance(config, ShapeRecipe):
        strategies = _strategies(config.shape.strategies, config.model)
        if strategies[0] not in SOFT_STRATEGIES:
            raise ConfigError(
                "model.strategy", f"the shape study needs a soft prompt: one of {', '.join(SOFT_STRATEGIES)}"
            )
        for i, length in enumerate(config.shape.num_virtual_tokens):
            _positive(length, f"shape.num_virtual_tokens[{i}]", allow_none=False)
    if isinstance(config, TransferRecipe):
        check_data(config.source, "source")
        check_data(config.target, "target", needs_train=False)
        if config.target.train is None and config.target.test is None:
            raise ConfigError(
                "target.test", "required: the target corpus's documents (or target.train to hold out from)"
            )
        _check_same_types(config.source.schema, config.target.schema)
        strategies = _strategies(config.strategies, config.model)
    if isinstance(config, CompareRecipe):
        if not config.corpora:
            raise ConfigError("corpora", "name at least one corpus")
        for name, data in config.corpora.items():
            check_data(data, f"corpora.{name}")
        for name in ("strategies", "backbones"):
            if not getattr(config, name):
                raise ConfigError(name, "must hold at least one value")
        strategies = config.strategies
    check_model(config.model, config.prompt, config.training, strategies)
    if not isinstance(config, TrainRecipe) and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("", "this recipe draws its plot with matplotlib: pip install 'clinical-prompt[recipes]'")
    if not isinstance(config, CompareRecipe):
        problem = backbone_problem(config.model.backbone)
        if problem:
            raise ConfigError("model.backbone", f"{config.model.backbone!r} cannot be loaded: {problem}")


def _check_same_types(source: str, target: str) -> None:
    a, b = load_schema(source), load_schema(target)
    if (a.concept_names, a.relation_names) != (b.concept_names, b.relation_names):
        raise ConfigError("target.schema", f"its concept and relation types {list(b.concept_names + b.relation_names)} "
                          f"differ from source.schema's {list(a.concept_names + a.relation_names)}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The fully resolved config as plain data (the layout :func:`load_config` reads back)."""
    return dataclasses.asdict(config)


def config_to_yaml(config: Any) -> str:
    """The fully resolved config as YAML."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
