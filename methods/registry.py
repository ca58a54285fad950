"""The method registry: a dict and a decorator, the only door by which the harness meets a head.

    @register("protonet")
    class ProtoNet(Head): ...

    head = create("protonet", metric="cosine")
    head.settings                     # {"metric": "cosine", "scale": 10.0}: every setting, defaults included

The registry, not the head, records a head's settings: the constructor's arguments resolved against its
signature, as plain JSON data, which results and checkpoints store and from which a head is rebuilt.
"""
from __future__ import annotations

import fnmatch
import functools
import inspect
import json
from typing import Callable

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}


class UnknownMethodError(KeyError):
    def __init__(self, name: str):
        self.name = name
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        super().__init__(f"unknown method '{name}'; registered methods: {known}")

    def __str__(self) -> str:  # KeyError quotes its message; a user should read a sentence
        return self.args[0]


class SettingsError(TypeError):
    """A head setting that is unknown, missing, or cannot be stored as JSON."""


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a head visible under `name` (lower case, as typed on a command line), and make
    every instance record the settings it was built with (`head.settings`, see `resolve_settings`)."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name '{name}' is already registered by {_REGISTRY[name].__module__}")
        cls.method_name = name
        _record_settings(cls)
        _REGISTRY[name] = cls
        return cls

    return add


def _record_settings(cls: type[nn.Module]) -> None:
    """Wrap cls.__init__ so that an instance, however built, keeps its resolved settings in `.settings`."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "records_settings", False):
        return

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = {k: v for k, v in list(bound.arguments.items())[1:] if k not in CONTEXT_ARGS}
        self.settings = plain_settings(getattr(cls, "method_name", cls.__name__), given)

    recording_init.records_settings = True
    cls.__init__ = recording_init


def get(name: str) -> type[nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name) from None


#: facts about the run that a head may ask for by naming them in its constructor
CONTEXT_ARGS = ("feature_shape", "num_train_classes")


def _setting_parameters(cls: type[nn.Module]) -> dict[str, inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return {p.name: p for p in params if p.name not in CONTEXT_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def plain_settings(name: str, settings: dict) -> dict:
    """`settings` as plain JSON data (tuples become lists); a value JSON cannot hold exactly (an object, NaN,
    Inf) is a SettingsError naming the setting."""
    out = {}
    for key, value in settings.items():
        try:
            text = json.dumps(value, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as e:
            raise SettingsError(f"method '{name}' setting '{key}' = {value!r} cannot be stored as JSON ({e}); settings must be "
                                "numbers (finite), strings, booleans, null, or lists and mappings of them") from None
        out[key] = json.loads(text)
    return out


def resolve_settings(name: str, config: dict) -> dict:
    """Every setting of head `name` as its constructor will receive it: the given ones, then the defaults of
    the rest, as plain JSON data. An unknown setting, or a required one not given, is a SettingsError."""
    params = _setting_parameters(get(name))
    unknown = sorted(k for k in config if k not in params)
    if unknown:
        raise SettingsError(f"method '{name}' has no setting {', '.join(map(repr, unknown))}; its settings are: {', '.join(params) or '(none)'}")
    missing = [k for k, p in params.items() if k not in config and p.default is p.empty]
    if missing:
        raise SettingsError(f"method '{name}' needs the setting{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}, which has no default")
    return plain_settings(name, {k: config[k] if k in config else p.default for k, p in params.items()})


def create(name: str, context: dict | None = None, **config) -> nn.Module:
    """Build the head registered as `name` with its resolved settings (recorded as `head.settings`).

    `config` holds its hyper-parameters (from YAML); `context` holds facts of the run (`feature_shape`, the
    backbone map's (C, T, H, W); `num_train_classes`), passed only to heads whose constructor names them.
    """
    cls = get(name)
    settings = resolve_settings(name, config)
    accepted = inspect.signature(cls.__init__).parameters
    facts = {k: v for k, v in (context or {}).items() if k in accepted}
    return cls(**facts, **settings)


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
