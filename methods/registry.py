"""The method registry: a dict and a decorator, the only door by which the harness meets a head.

    @register("protonet")
    class ProtoNet(Head): ...

    head = create("protonet", metric="cosine")
    head.settings                     # {"metric": "cosine", "scale": 10.0}: every setting, defaults included

Methods from outside `methods/` (installed plug-ins, `--method package.module:Class`, a protocol's `imports:`)
come in through methods/external.py, which `get` and `list_methods` consult.

The registry, not the head, records a head's settings: the constructor's arguments resolved against its
signature, as plain JSON data, which results and checkpoints store and from which a head is rebuilt. It also
checks them against the head's `settings_schema` (methods/settings.py: the kind and bounds of each setting)
whenever it resolves them, so a value the head cannot use is refused, named, before anything is built.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import inspect
import json
from typing import Callable

from torch import nn

from harness.names import NAME_RULE, name_problem
from methods.settings import Setting

_REGISTRY: dict[str, type[nn.Module]] = {}


class UnknownMethodError(KeyError):
    def __init__(self, name: str):
        self.name = name
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        super().__init__(f"unknown method '{name}'; registered methods: {known}")

    def __str__(self) -> str:  # KeyError quotes its message; a user should read a sentence
        return self.args[0]


class SettingsError(TypeError):
    """A head setting that is unknown, missing, cannot be stored as JSON, or is outside what the head's
    `settings_schema` allows. `setting` names it (None: the settings as a whole), `fix` says what to write."""

    def __init__(self, message: str, *, method: str | None = None, setting: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.method, self.setting, self.fix = method, setting, fix


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a head visible under `name` (lower case, as typed on a command line), and make
    every instance record the settings it was built with (`head.settings`, see `resolve_settings`)."""

    problem = name_problem(name)
    if problem:  # the name becomes a folder of results and checkpoints
        raise ValueError(f"method name {name!r} cannot be registered: {problem}; a method name is {NAME_RULE}")

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name '{name}' is already registered by {_REGISTRY[name].__module__}")
        _check_schema(name, cls)
        cls.method_name = name
        _record_settings(cls)
        _REGISTRY[name] = cls
        return cls

    return add


def _check_schema(name: str, cls: type[nn.Module]) -> None:
    """A head's `settings_schema` must name constructor settings, each with a kind from methods.settings."""
    schema = getattr(cls, "settings_schema", {})
    params = _setting_parameters(cls)
    if not isinstance(schema, dict):
        raise ValueError(f"method '{name}': settings_schema must be a dict of setting name -> Number(...), Integer(...), Choice(...), ...")
    for key, spec in schema.items():
        if key not in params:
            raise ValueError(f"method '{name}': settings_schema names '{key}', which is not a setting of its constructor ({', '.join(params) or 'none'})")
        if not isinstance(spec, Setting):
            raise ValueError(f"method '{name}': settings_schema['{key}'] is {spec!r}, not a kind from methods.settings (Number, Integer, Integers, Choice, Flag)")


def _record_settings(cls: type[nn.Module]) -> None:
    """Wrap cls.__init__ so that an instance, however built, keeps its resolved settings in `.settings`."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "records_settings", False):
        return

    @functools.wraps(init)
    def recording_init(self, *args, **kwargs):
        bound = inspect.signature(init).bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = list(bound.arguments.items())[1:]
        given = {k: v for k, v in arguments if k not in CONTEXT_ARGS}
        name = getattr(cls, "method_name", cls.__name__)
        settings = plain_settings(name, given)
        _check_against_schema(name, cls, settings, {k: v for k, v in arguments if k in CONTEXT_ARGS})  # however the head is built
        init(self, *args, **kwargs)
        self.settings = settings

    recording_init.records_settings = True
    cls.__init__ = recording_init


def registered(name: str) -> bool:
    """Whether `name` is a registered method, loading the installed plug-in that provides it if need be
    (methods/external.py); a plug-in of that name that cannot be loaded is a HarnessError saying why."""
    if name not in _REGISTRY:
        _external().load(name)
    return name in _REGISTRY


def get(name: str) -> type[nn.Module]:
    if not registered(name):
        raise UnknownMethodError(name)
    return _REGISTRY[name]


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
                                "numbers (finite), strings, booleans, null, or lists and mappings of them",
                                method=name, setting=key, fix=f"give methods.{name}.{key} a finite number, text, true/false, or a list of them") from None
        out[key] = json.loads(text)
    return out


def check_settings(name: str, settings: dict, context: dict | None = None) -> None:
    """Each setting of head `name` that its `settings_schema` names, against its kind and bounds (bounds that are
    facts of the run, such as the backbone map's frames, where `context` holds them); the first one outside is a
    SettingsError naming it, its value, what it may be, and the default where that is allowed."""
    _check_against_schema(name, get(name), settings, context)


def _check_against_schema(name: str, cls, settings: dict, context: dict | None) -> None:
    schema = getattr(cls, "settings_schema", {})
    params = _setting_parameters(cls)
    for key, spec in schema.items():
        if key not in settings:
            continue
        value = settings[key]
        problem = spec.problem(value, context)
        if problem is None:
            continue
        default = params[key].default
        if default is not inspect.Parameter.empty and spec.problem(json.loads(json.dumps(default)), context) is None and default != value:
            fix = f"set methods.{name}.{key} to {spec.describe(context)}, or leave it out for the default ({json.dumps(default)})"
        else:
            fix = f"set methods.{name}.{key} to {spec.describe(context)}"
        raise SettingsError(f"method '{name}' setting '{key}' {problem}, got {json.dumps(value)}", method=name, setting=key, fix=fix)


def resolve_settings(name: str, config: dict, context: dict | None = None) -> dict:
    """Every setting of head `name` as its constructor will receive it: the given ones, then the defaults of
    the rest, as plain JSON data. An unknown setting, a required one not given, or a value outside the head's
    `settings_schema` (see `check_settings`; `context`: the facts of the run its bounds may name) is a SettingsError."""
    params = _setting_parameters(get(name))
    if not isinstance(config, dict):
        raise SettingsError(f"the settings of method '{name}' must be a section of name: value, got {config!r}", method=name,
                            fix=f"write e.g. methods: {{{name}: {{{next(iter(params), 'setting')}: ...}}}}")
    unknown = sorted((k for k in config if k not in params), key=str)
    if unknown:
        near = difflib.get_close_matches(str(unknown[0]), list(params), n=1)
        raise SettingsError(f"method '{name}' has no setting {', '.join(map(repr, unknown))}; its settings are: {', '.join(params) or '(none)'}",
                            method=name, setting=str(unknown[0]),
                            fix=f"did you mean '{near[0]}'?" if near else f"use the settings its constructor takes: {', '.join(params) or '(none)'}")
    missing = [k for k, p in params.items() if k not in config and p.default is p.empty]
    if missing:
        raise SettingsError(f"method '{name}' needs the setting{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}, which has no default",
                            method=name, setting=missing[0], fix=f"set methods.{name}.{missing[0]} in the protocol")
    settings = plain_settings(name, {k: config[k] if k in config else p.default for k, p in params.items()})
    check_settings(name, settings, context)
    return settings


def create(name: str, context: dict | None = None, **config) -> nn.Module:
    """Build the head registered as `name` with its resolved settings (recorded as `head.settings`).

    `config` holds its hyper-parameters (from YAML); `context` holds facts of the run (`feature_shape`, the
    backbone map's (C, T, H, W); `num_train_classes`), passed only to heads whose constructor names them, and
    against which the settings' bounds are checked.
    """
    cls = get(name)
    settings = resolve_settings(name, config, context)
    accepted = inspect.signature(cls.__init__).parameters
    facts = {k: v for k, v in (context or {}).items() if k in accepted}
    return cls(**facts, **settings)


def _external():
    """methods/external.py, imported by name: it only finds and registers heads, so it is no part of any head's
    code (harness/provenance.py follows import statements; this keeps it out of every head's hash)."""
    return importlib.import_module("methods.external")


def list_methods(pattern: str = "*") -> list[str]:
    """The registered methods whose names match `pattern`, installed plug-ins included (those that can be loaded)."""
    _external().load_all()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
