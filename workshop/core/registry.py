"""The model registry: `model_type` string -> family, builder and parameter schema.

Families register their models with `register_model`; `create_model` (in
`workshop.models.factories`) looks them up here. A user registers a custom
model the same way:

    @register_model("my-vae", family="vae", parameters=MyParams)
    class MyVAE(nnx.Module):
        def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs): ...

after which `create_model(ModelConfiguration(model_type="my-vae", ...), rngs=rngs)`
builds it. A new family is registered the same way under a new family name:
the trainer, the evaluation and the binaries ask models for what they can do
(`workshop.core.protocols`), not for their family. The registry never imports
a family: it only holds what was registered.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import pydantic

if TYPE_CHECKING:
    from flax import nnx

    from workshop.core.configuration import ModelConfiguration

__all__ = [
    "FAMILIES",
    "ModelSpec",
    "get_model_spec",
    "is_registered",
    "register_model",
    "registered_model_types",
    "typed_parameters",
    "unregister_model",
    "validate_parameters",
]

# The built-in families; `register_model` accepts any other family name too.
FAMILIES = ("vae", "gan", "diffusion", "flow", "ebm", "autoregressive")

Builder = Callable[..., "nnx.Module"]
_B = TypeVar("_B", bound=Builder)
_S = TypeVar("_S", bound=pydantic.BaseModel)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one `model_type`.

    Attributes:
      model_type: the configuration's `model_type` string (lower case).
      family: one of `FAMILIES`, or a new family's name.
      builder: `builder(config, *, rngs) -> model`; a model class qualifies.
      parameters: a Pydantic model (extra keys forbidden) describing the valid
        keys of `ModelConfiguration.parameters`, or None for "no parameters".
      description: one line for listings.
    """

    model_type: str
    family: str
    builder: Builder
    parameters: type[pydantic.BaseModel] | None
    description: str = ""

    def parse_parameters(self, parameters: dict[str, Any]) -> pydantic.BaseModel | None:
        """Validates `parameters` against the schema; returns the typed object."""
        return validate_parameters(self.model_type, parameters)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    model_type: str,
    *,
    family: str,
    parameters: type[pydantic.BaseModel] | None = None,
    description: str = "",
    override: bool = False,
) -> Callable[[_B], _B]:
    """Decorator registering a builder (function or class) under `model_type`."""
    key = model_type.strip().lower()
    if not (isinstance(family, str) and family.isidentifier() and family == family.lower()):
        raise ValueError(f"family {family!r} must be a lower-case identifier, e.g. one of the built-in families "
                         f"{', '.join(FAMILIES)} or a new family's name")
    if parameters is not None and parameters.model_config.get("extra") != "forbid":
        raise ValueError(
            f"the parameters schema of {model_type!r} must forbid extra keys "
            "(model_config = ConfigDict(extra='forbid')) so typos are caught"
        )

    def decorator(builder: _B) -> _B:
        if key in _REGISTRY and not override:
            raise ValueError(
                f"model_type {key!r} is already registered (family {_REGISTRY[key].family!r}); "
                "pass override=True to replace it"
            )
        _REGISTRY[key] = ModelSpec(key, family, builder, parameters, description)
        return builder

    return decorator


def unregister_model(model_type: str) -> None:
    """Removes a registration (for tests and interactive sessions)."""
    _REGISTRY.pop(model_type.strip().lower(), None)


def is_registered(model_type: str) -> bool:
    return model_type.strip().lower() in _REGISTRY


def registered_model_types(family: str | None = None) -> list[str]:
    """Sorted model types, optionally only those of one family."""
    return sorted(k for k, s in _REGISTRY.items() if family is None or s.family == family)


def get_model_spec(model_type: str) -> ModelSpec:
    """The spec of `model_type`; a ValueError listing the known types otherwise."""
    key = model_type.strip().lower()
    if key not in _REGISTRY:
        known = ", ".join(registered_model_types()) or "(none registered)"
        raise ValueError(f"model_type {model_type!r} is unknown or not built yet; known: {known}")
    return _REGISTRY[key]


def validate_parameters(model_type: str, parameters: dict[str, Any]) -> pydantic.BaseModel | None:
    """Checks `parameters` of a registered `model_type` and returns them typed.

    Raises:
      ValueError: naming each bad key and, for unknown keys, the valid ones.
    """
    spec = get_model_spec(model_type)
    schema = spec.parameters
    if schema is None:
        if parameters:
            raise ValueError(
                f"parameters {sorted(parameters)} are not valid for model_type {spec.model_type!r}, "
                "which takes no parameters"
            )
        return None
    return _validate(schema, spec.model_type, parameters)


def typed_parameters(model_type: str, parameters: dict[str, Any], schema: type[_S]) -> _S:
    """`parameters` of a model class whose parameter schema is `schema`.

    A registered `model_type` is checked by its registered schema when that is
    `schema` or a subclass of it (so "beta-vae" gets beta 4 by default from the
    VAE class); a class built directly from a configuration of an unregistered
    type, or registered with an unrelated schema, falls back to `schema`.

    Raises:
      ValueError: naming each bad key and, for unknown keys, the valid ones.
    """
    key = model_type.strip().lower()
    if key in _REGISTRY:
        registered = _REGISTRY[key].parameters
        if registered is not None and issubclass(registered, schema):
            return _validate(registered, key, parameters)
    return _validate(schema, key, parameters)


def _validate(schema: type[_S], model_type: str, parameters: dict[str, Any]) -> _S:
    try:
        return schema.model_validate(parameters)
    except pydantic.ValidationError as err:
        valid = ", ".join(sorted(schema.model_fields))
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                problems.append(f"parameters key {field!r} is not valid for model_type {model_type!r}")
            else:
                problems.append(f"parameters.{field}: {e['msg']} (got {e.get('input')!r})")
        raise ValueError("; ".join(problems) + f". Valid keys for {model_type!r}: {valid}") from None
