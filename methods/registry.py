"""The method registry: a dict and a decorator, the only door by which the harness meets a head.

    @register("protonet")
    class ProtoNet(Head): ...

    head = create("protonet", metric="cosine")
"""
from __future__ import annotations

import fnmatch
import inspect
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


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a head visible under `name` (lower case, as typed on a command line)."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name '{name}' is already registered by {_REGISTRY[name].__module__}")
        cls.method_name = name
        _REGISTRY[name] = cls
        return cls

    return add


def get(name: str) -> type[nn.Module]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name) from None


#: facts about the run that a head may ask for by naming them in its constructor
CONTEXT_ARGS = ("feature_shape", "num_train_classes")


def create(name: str, context: dict | None = None, **config) -> nn.Module:
    """Build the head registered as `name`.

    `config` holds its hyper-parameters (from YAML); `context` holds facts of the run (`feature_shape`, the
    backbone map's (C, T, H, W); `num_train_classes`), passed only to heads whose constructor names them.
    """
    cls = get(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in config if k not in accepted or k in CONTEXT_ARGS)
    if unknown:
        valid = sorted(k for k in accepted if k not in ("self", *CONTEXT_ARGS))
        raise TypeError(
            f"method '{name}' has no setting {', '.join(map(repr, unknown))}; its settings are: {', '.join(valid) or '(none)'}"
        )
    facts = {k: v for k, v in (context or {}).items() if k in accepted}
    return cls(**facts, **config)


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
