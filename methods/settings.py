"""What a head's settings may be: a kind and bounds per setting, declared beside the head, checked by the registry.

    from methods.settings import Choice, Flag, Integer, Integers, MAP_FRAMES, Number

    @register("mymethod")
    class MyMethod(Head):
        settings_schema = {
            "metric": Choice("euclidean", "cosine"),
            "scale": Number(above=0),
            "hidden": Integer(at_least=1, at_most=4096),
            "dropout": Number(at_least=0, below=1),
            "temporal_set": Integers(at_least=1, at_most=MAP_FRAMES, distinct=True),
            "bidirectional": Flag(),
        }

        def __init__(self, metric="euclidean", scale=10.0, hidden=6, dropout=0.1, temporal_set=(2, 3), bidirectional=True): ...

The registry checks every setting the schema names, given or default, whenever it resolves a head's settings
(`methods.resolve_settings`, `methods.create`): a value of another kind or outside its bounds is a SettingsError
that names the setting, the value and what it may be, before anything is built. A bound is a number or a `Fact`
of the run (MAP_FRAMES: the frames T of the backbone map), checked where the run's context is known (the
harness predicts the backbone map's shape from the protocol before any video is read). `also=` adds a check of
the value in context that bounds cannot say (it returns the problem, or None). A setting the schema leaves out
is only checked to be plain JSON.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
import difflib
import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Fact:
    """A figure of the run that a bound may be: `name` for messages, `get(context)` its value."""

    name: str
    get: Callable[[dict], float]

    def value(self, context: dict | None) -> float | None:
        try:
            return self.get(context or {})
        except (KeyError, TypeError, IndexError, ValueError):
            return None  # not known here: the bound is checked where it is


#: the backbone map's (C, T, H, W), as heads receive it in `feature_shape`
MAP_CHANNELS = Fact("C, the channels of the backbone map", lambda c: int(c["feature_shape"][0]))
MAP_FRAMES = Fact("T, the time steps of the backbone map, more with frames.count", lambda c: int(c["feature_shape"][1]))
MAP_POSITIONS = Fact("T x H x W, the positions of the backbone map", lambda c: int(math.prod(c["feature_shape"][1:])))


def _bound(b, context) -> tuple[float, str] | None:
    """(value, text) of a bound, or None when it is a Fact this context does not hold."""
    if b is None:
        return None
    if isinstance(b, Fact):
        v = b.value(context)
        return None if v is None else (v, f"{v:g} ({b.name})")
    return b, f"{b:g}"


class Setting(ABC):
    """Base of the kinds below: `problem(value, context)` says what is wrong with a value, or None."""

    also: Callable[[object, dict], str | None] | None = None

    def problem(self, value, context: dict | None) -> str | None:
        wrong = self._problem(value, context or {})
        if wrong is None and self.also is not None:
            wrong = self.also(value, context or {})
        return wrong

    @abstractmethod
    def _problem(self, value, context: dict) -> str | None:
        """What is wrong with `value` for this kind (the bounds read from `context`), or None."""

    @abstractmethod
    def describe(self, context: dict | None = None) -> str:
        """The kind in words, for messages: e.g. 'a number above 0'."""


@dataclass(frozen=True)
class _Range:
    at_least: object = None
    above: object = None
    at_most: object = None
    below: object = None

    def check(self, v: float, context: dict) -> str | None:
        for key, ok, word in (("at_least", lambda v, b: v >= b, "at least"), ("above", lambda v, b: v > b, "above"),
                              ("at_most", lambda v, b: v <= b, "at most"), ("below", lambda v, b: v < b, "below")):
            bound = _bound(getattr(self, key), context)
            if bound is not None and not ok(v, bound[0]):
                return f"{word} {bound[1]}"
        return None

    def text(self, context: dict | None) -> str:
        parts = []
        for key, word in (("at_least", "at least"), ("above", "above"), ("at_most", "at most"), ("below", "below")):
            b = getattr(self, key)
            if b is not None:
                bound = _bound(b, context)
                parts.append(f"{word} {bound[1] if bound else b.name}")
        return " and ".join(parts)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Number(Setting):
    """A finite number (a whole one is accepted), within the bounds given."""

    at_least: object = None
    above: object = None
    at_most: object = None
    below: object = None
    also: Callable | None = None

    def _range(self) -> _Range:
        return _Range(self.at_least, self.above, self.at_most, self.below)

    def _problem(self, value, context):
        if not _is_number(value) or not math.isfinite(value):
            return f"must be {self.describe(context)}"
        wrong = self._range().check(value, context)
        return f"must be {wrong}" if wrong else None

    def describe(self, context=None):
        bounds = self._range().text(context)
        return "a finite number" + (f" {bounds}" if bounds else "")


@dataclass(frozen=True)
class Integer(Setting):
    """A whole number (not a bool, not 3.0), within the bounds given."""

    at_least: object = None
    at_most: object = None
    also: Callable | None = None

    def _problem(self, value, context):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be {self.describe(context)}"
        wrong = _Range(at_least=self.at_least, at_most=self.at_most).check(value, context)
        return f"must be {wrong}" if wrong else None

    def describe(self, context=None):
        bounds = _Range(at_least=self.at_least, at_most=self.at_most).text(context)
        return "a whole number" + (f" {bounds}" if bounds else "")


@dataclass(frozen=True)
class Integers(Setting):
    """A list of whole numbers, each within the bounds given; `distinct`: no number twice."""

    at_least: object = None
    at_most: object = None
    distinct: bool = False
    min_items: int = 1
    max_items: int | None = None
    also: Callable | None = None

    def _problem(self, value, context):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return f"must be {self.describe(context)}"
        if len(value) < self.min_items or (self.max_items is not None and len(value) > self.max_items):
            return f"must be {self.describe(context)} (it has {len(value)})"
        rng = _Range(at_least=self.at_least, at_most=self.at_most)
        for v in value:
            wrong = rng.check(v, context)
            if wrong:
                return f"must hold numbers {wrong}, and holds {v}"
        if self.distinct and len(set(value)) < len(value):
            twice = next(v for v in value if list(value).count(v) > 1)
            return f"must not hold a number twice, and holds {twice} twice"
        return None

    def describe(self, context=None):
        count = f"{self.min_items} to {self.max_items}" if self.max_items else f"{self.min_items} or more"
        bounds = _Range(at_least=self.at_least, at_most=self.at_most).text(context)
        return f"a list of {count} whole numbers" + (f", each {bounds}" if bounds else "") + (", none twice" if self.distinct else "")


@dataclass(frozen=True)
class Choice(Setting):
    """One of the given values (text)."""

    options: tuple = ()

    def __init__(self, *options):
        object.__setattr__(self, "options", tuple(options))

    def _problem(self, value, context):
        if value in self.options and type(value) is type(self.options[self.options.index(value)]):
            return None
        near = difflib.get_close_matches(str(value), [str(o) for o in self.options], n=1)
        return f"must be {self.describe(context)}" + (f" (did you mean '{near[0]}'?)" if near else "")

    def describe(self, context=None):
        return "one of " + ", ".join(f"'{o}'" for o in self.options)


@dataclass(frozen=True)
class Flag(Setting):
    """true or false."""

    def _problem(self, value, context):
        return None if isinstance(value, bool) else "must be true or false"

    def describe(self, context=None):
        return "true or false"
