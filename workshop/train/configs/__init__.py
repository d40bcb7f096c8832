"""ml_collections config files for //workshop/train:train, one per model.

Every config file ends with `return with_defaults(config)`: the training,
data and eval sections then hold every field of `TrainingConfiguration`,
`DataConfiguration` and `EvaluationConfiguration` (a config file states only
what it changes), so any field can be set from the command line, e.g.
`--config.training.precision=bfloat16`, `--config.training.max_bad_steps=10`,
`--config.eval.every_steps=100` or `--config.data.image.binarize=dynamic`,
even one whose default is None. `config.data` holds every modality's section
(`image`, `text`, `audio`, `protein`); `DataConfiguration` drops those of
other modalities while they hold only defaults, and names any field set in one.

List-valued model fields become tuples, the form ml_collections overrides:
`--config.model.encoder_features=256,256`, or `=[256,256]` (a JSON list), or
`--config.model.parameters.hidden_features=64` (a one-element list).
"""

from __future__ import annotations

import types
import typing

import pydantic
from ml_collections import config_dict

from workshop.core.configuration import DataConfiguration, EvaluationConfiguration, TrainingConfiguration

__all__ = ["with_defaults"]

_SCALARS = (bool, int, float, str)


def _scalar_type(annotation: typing.Any) -> type | None:
    """int for `PositiveInt | None`, str for `Literal["a", "b"]`; None for anything else."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if len(args) != 1:
            return None
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        annotation = type(typing.get_args(annotation)[0])
    return annotation if annotation in _SCALARS else None


def _nested_schema(annotation: typing.Any) -> type[pydantic.BaseModel] | None:
    """The configuration class of a nested section (`OptimizerConfiguration`, `TextData | None`), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) else None


def _fill(section: config_dict.ConfigDict, schema: type[pydantic.BaseModel]) -> None:
    for name, field in schema.model_fields.items():
        if name == "schema_version":
            continue
        nested = _nested_schema(field.annotation)
        if nested is not None:
            if section.get(name) is None:
                section[name] = config_dict.ConfigDict()
            _fill(section[name], nested)
        elif name not in section:
            default = field.get_default(call_default_factory=True)
            if default is None:
                kind = _scalar_type(field.annotation)
                if kind is not None:
                    section[name] = config_dict.placeholder(kind)
            elif isinstance(default, _SCALARS):
                section[name] = default


def _lists_to_tuples(value: typing.Any) -> typing.Any:
    if isinstance(value, config_dict.ConfigDict):  # typed placeholders stay placeholders
        return {k: _lists_to_tuples(v) for k, v in value.items(preserve_field_references=True)}
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def with_defaults(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
    """Adds the missing fields of `config.training`, `config.data` and `config.eval` at their defaults.

    None defaults become typed placeholders (`config_dict.placeholder(int)`), so
    `--config.training.num_devices=8` type-checks and the value stays None
    unless set. Fields already in the config are kept as they are, but the
    lists of `config.model` become tuples (overridable from the command line;
    `parse_config` validates them as lists).
    """
    sections = (("training", TrainingConfiguration), ("data", DataConfiguration), ("eval", EvaluationConfiguration))
    for name, schema in sections:
        if name not in config:
            config[name] = config_dict.ConfigDict()
        _fill(config[name], schema)
    if "model" in config:
        config.model = config_dict.ConfigDict(_lists_to_tuples(config.model))
    return config
