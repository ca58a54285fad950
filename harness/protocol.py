"""Protocols: YAML files validated into frozen dataclasses, with a hash of their resolved content.

    include: base-synthetic.yaml     # a file (or list of files) beside this one; this file overrides it
    imports: [mypkg.heads]           # modules whose import registers methods (with the included files' imports)
    name: synthetic-5w1s
    way: 5
    shot: 1

Every field has a type and a default. An unknown key, a wrong type or an impossible value stops with a
HarnessError that names the file the value came from, the field, and the fix.

YAML is read strictly (`parse_yaml`): a key written twice in one section, an alias that refers to the section it
is in, aliases that expand to more than MAX_YAML_VALUES values or nest more than MAX_YAML_DEPTH deep, an empty
file, a file over MAX_PROTOCOL_BYTES and more than MAX_INCLUDED_FILES files read through `include:` are errors
that name the file and the line. `--set` values are read by the same rules.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.errors import HarnessError
from harness.names import NAME_RULE, name_problem
from harness.shipped import shipped_dir, shipped_files

PARTS = ("train", "val", "test")

#: the most episodes one set may hold (the protocol's `episodes`, `--episodes`, `train.val_episodes`): 100 times
#: the literature's 10,000; every episode is sampled, hashed and kept in memory (about 2 KB for 5-way 1-shot)
MAX_EPISODES = 1_000_000
#: the most training episodes (train.steps x train.tasks_per_batch): 100 times TRX's reference recipe
MAX_TRAIN_EPISODES = 10_000_000
#: what a protocol file may be: its size, the values it holds once its aliases are expanded, how deep its
#: sections and lists nest, and how many files one protocol reads through include:
MAX_PROTOCOL_BYTES = 1_000_000
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 50
MAX_INCLUDED_FILES = 100
#: a module's dotted name, as `imports:` lists it
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class SplitFiles:
    train: str = "trainlist.txt"
    val: str = "vallist.txt"
    test: str = "testlist.txt"


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "synthetic"
    #: folder of <class>/<video>/<frame>.jpg; relative paths are taken from the data home (FSV_HOME)
    root: str = "synthetic"
    #: folder of the split files; empty means the data root
    split_dir: str = ""
    splits: SplitFiles = field(default_factory=SplitFiles)
    #: which part the protocol evaluates on
    part: str = "test"
    #: what a missing, unreadable or too-short video is: "error" (stop) or "exclude" (drop it, recorded)
    bad_videos: str = "error"


@dataclass(frozen=True)
class FramesSpec:
    count: int = 16
    #: "uniform": indices evenly spaced over the whole video (deterministic, as at test time)
    sampling: str = "uniform"
    #: short side after resizing, then a centre crop of crop x crop
    resize: int = 64
    crop: int = 64
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class BackboneSpec:
    name: str = "tiny3d"
    #: weight file; empty for a backbone the harness pretrains itself (its checkpoint in the data home)
    weights: str = ""


@dataclass(frozen=True)
class TrainSpec:
    """Episodic meta-training on the train split; model selection on val episodes (never test).

    The recipe fields (all but the seeds) left out, or null, take the method's own recipe (`train_defaults`
    beside its head: its reference's), else the harness's (`harness.train.DEFAULTS`); a training records each
    setting it used and where it came from."""

    #: seed of the training episodes (their own stream, apart from the test episodes)
    seed: int = 1
    #: optimizer steps
    steps: int | None = None
    #: episodes whose gradients are averaged into one optimizer step
    tasks_per_batch: int | None = None
    #: training queries per class (the references train with more than they test with)
    query_per_class: int | None = None
    #: "sgd" or "adam"
    optimizer: str | None = None
    lr: float | None = None
    #: SGD's momentum (Adam does not use it)
    momentum: float | None = None
    weight_decay: float | None = None
    #: "constant" or "cosine" (from lr to 0 over `steps`)
    schedule: str | None = None
    #: evaluate `val_episodes` fixed val episodes every `val_every` steps; keep the best
    val_every: int | None = None
    val_episodes: int | None = None
    val_seed: int = 2
    #: fine-tune the backbone end to end on clips (with train-time augmentation) instead of cached features
    finetune_backbone: bool | None = None
    #: train-time augmentation when fine-tuning: "random" or "centre" crop, horizontal flip, frame jitter
    crop: str | None = None
    flip: bool | None = None
    jitter: int | None = None


@dataclass(frozen=True)
class Protocol:
    name: str
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    way: int = 5
    shot: int = 1
    query_per_class: int = 1
    episodes: int = 10_000
    seed: int = 0
    frames: FramesSpec = field(default_factory=FramesSpec)
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    #: per-method hyper-parameters, e.g. {"staf": {"alpha": 1.0}}
    methods: dict = field(default_factory=dict)
    train: TrainSpec = field(default_factory=TrainSpec)
    #: modules imported before the methods are resolved (they register methods: methods/external.py); the
    #: included files' first, each once. Not content: it says where code comes from, and results' identity
    #: covers that code itself (the head's source)
    imports: tuple[str, ...] = ()
    #: the file it was read from, and which file each field came from (not part of the content)
    source: str = field(default="", compare=False)
    origins: dict = field(default_factory=dict, compare=False, repr=False)

    # fields that name places on one machine: the same protocol elsewhere has the same hash
    LOCAL_FIELDS: typing.ClassVar[tuple[str, ...]] = ("dataset.root", "dataset.split_dir", "backbone.weights")

    def content(self) -> dict:
        """The resolved protocol as plain data, without its machine-local paths."""
        data = dataclasses.asdict(self)
        for key in ("source", "origins", "imports"):
            data.pop(key)
        for dotted in self.LOCAL_FIELDS:
            *parents, last = dotted.split(".")
            node = data
            for p in parents:
                node = node[p]
            node.pop(last)
        return data

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.content()).encode()).hexdigest()

    def where(self, dotted: str) -> str:
        """'file, field x.y' for error messages: the file the value came from (an item `x[i]`: the file that
        listed it, else the one that set the list)."""
        origin = self.origins.get(dotted) or self.origins.get(dotted.partition("[")[0])
        return f"{origin or self.source or 'protocol'}, field '{dotted}'"


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# ---------------------------------------------------------------------------------------------- reading


def load_protocol(path: str | os.PathLike, overrides: list[str] | None = None) -> Protocol:
    """Read a protocol file (following `include:`), apply `key.path=value` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"protocol file {path} does not exist", fix="pass a path to a .yaml file, or run `fsv-bench list` to see the shipped protocols")
    data, origins = _read_with_includes(path, chain=())
    for text in overrides or []:
        _apply_override(data, origins, text)
    if "name" not in data:
        data["name"] = path.stem
        origins["name"] = str(path)
        problem = name_problem(path.stem)
        if problem:
            raise HarnessError(f"the protocol has no name: field, and its file name cannot be one: {problem}", where=str(path),
                               fix=f"add `name: NAME` to the file, NAME being {NAME_RULE}")
    proto = _build(Protocol, data, "", origins, str(path))
    proto = dataclasses.replace(proto, source=str(path), origins=origins)
    _check_values(proto)
    return proto


class YamlRefused(yaml.YAMLError):
    """YAML that parses but that the harness does not read: a duplicate key, a recursive alias, too many values
    once aliases are expanded, too deep a nesting. `line` is 1-based (None: the whole document)."""

    def __init__(self, what: str, fix: str, line: int | None = None):
        super().__init__(what)
        self.what, self.fix, self.line = what, fix, line


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain values only: no tags that build objects), made strict: see the module docstring."""

    def __init__(self, stream):
        super().__init__(stream)
        self._open: dict[str, int] = {}  # anchors of the sections and lists being composed -> their line
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise YamlRefused(
                    f"alias '*{event.anchor}' (line {event.start_mark.line + 1}) stands for the section it is written in "
                    f"(anchor '&{event.anchor}', line {self._open[event.anchor]}): the value would contain itself without end",
                    "replace the alias by the values it should hold", event.start_mark.line + 1)
            return super().compose_node(parent, index)
        if not isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise YamlRefused(f"sections and lists are nested more than {MAX_YAML_DEPTH} deep", "a protocol nests a few levels; remove the extra brackets or indentation", event.start_mark.line + 1)
        if event.anchor is not None:
            self._open[event.anchor] = event.start_mark.line + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if event.anchor is not None:
                self._open.pop(event.anchor, None)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *base` may override its keys; a non-scalar key is refused by the constructor
                key = self.construct_object(key_node)
                try:
                    first = seen.get(key)
                    seen.setdefault(key, key_node.start_mark)
                except TypeError:
                    continue
                if first is not None:  # (an alias used as a key twice is the same node twice: a duplicate too)
                    here = key_node.start_mark
                    lines = (f"line {first.line + 1}, column {first.column + 1} and column {here.column + 1}" if first.line == here.line
                             else f"line {first.line + 1} and line {here.line + 1}")
                    raise YamlRefused(f"key '{key}' is written twice in one section: {lines}",
                                      "keep one of the two (YAML would silently keep the last one)", here.line + 1)
        return super().construct_mapping(node, deep)


def _check_expansion(root) -> None:
    """Refuse a document whose aliases expand to more than MAX_YAML_VALUES values or MAX_YAML_DEPTH levels (an
    "alias bomb": a few lines whose nine aliases of nine aliases stand for a billion values). The node graph is
    walked once, each shared node counted once, without recursion."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if ready or not children:
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
            line = node.start_mark.line + 1
            if size[id(node)] > MAX_YAML_VALUES:
                raise YamlRefused(f"its aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?): the value that starts at line {line} alone holds {size[id(node)]:,}",
                                  "write the values out, or use fewer aliases (*name)", line)
            if depth[id(node)] > MAX_YAML_DEPTH:
                raise YamlRefused(f"its aliases nest sections and lists more than {MAX_YAML_DEPTH} deep (from line {line})",
                                  "write the values out, or use fewer aliases (*name)", line)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)


def parse_yaml(text: str, where: str, line_numbers: bool = True):
    """The plain data of one YAML document, read by StrictLoader; any problem is a HarnessError naming `where`
    (a file, or an option) and, with `line_numbers`, the line."""

    def at(line: int | None, column: int | None = None) -> str:
        if not line_numbers or line is None:
            return where
        return f"{where}, line {line}" + (f", column {column}" if column is not None else "")

    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (StrictLoader is a SafeLoader)
    except YamlRefused as e:
        raise HarnessError(e.what, where=at(e.line), fix=e.fix) from None
    except yaml.reader.ReaderError as e:
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise HarnessError(f"the text holds a control character ({char}, character {e.position + 1}), which YAML does not allow", where=where,
                           fix="remove it: a protocol is plain text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        if isinstance(e, yaml.constructor.ConstructorError) and "could not determine a constructor" in problem:
            raise HarnessError(f"tag {problem.split('tag ', 1)[-1]} is not allowed: a protocol holds plain values", where=at(mark.line + 1 if mark else None),
                               fix="remove the tag (the text beginning with '!'); write numbers, text, true/false, lists and sections") from None
        if isinstance(e, yaml.composer.ComposerError) and "another document" in problem:
            raise HarnessError("the text holds more than one YAML document (a second one starts here, after '---')", where=at(mark.line + 1 if mark else None),
                               fix="a protocol is one document: remove the '---' line, and merge or remove what follows it") from None
        raise HarnessError(f"YAML syntax error: {problem}", where=at(mark.line + 1, mark.column + 1) if mark else where,
                           fix="correct the YAML at that place (indentation, a missing ':' or an unclosed quote or bracket)") from None
    except ValueError as e:  # a whole number of more than 4,300 digits
        raise HarnessError(f"a value cannot be read: {str(e).split(';')[0]}", where=where, fix="write numbers with fewer digits") from None
    except RecursionError:  # not reached: StrictLoader bounds the nesting first
        raise HarnessError("the YAML is nested too deep to read", where=where, fix=f"nest sections and lists at most {MAX_YAML_DEPTH} deep") from None


def _read_yaml(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_PROTOCOL_BYTES:
            raise HarnessError(f"the file is {size:,} bytes, more than the {MAX_PROTOCOL_BYTES:,} a protocol file may have", where=str(path),
                               fix="a protocol is a few dozen lines: check that this is the file you meant")
        with open(path, "rb") as f:
            raw = f.read(MAX_PROTOCOL_BYTES + 1)
        if len(raw) > MAX_PROTOCOL_BYTES:
            raise HarnessError(f"the file holds more than the {MAX_PROTOCOL_BYTES:,} bytes a protocol file may have", where=str(path),
                               fix="a protocol is a few dozen lines: check that this is the file you meant")
        text = raw.decode("utf-8")
    except OSError as e:
        raise HarnessError(f"cannot read protocol file {path}: {e.strerror or e}", fix="check the path and its permissions") from None
    except UnicodeDecodeError as e:
        raise HarnessError(f"protocol file {path} is not UTF-8 text (byte {e.start})", fix="save the file as UTF-8 text") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise HarnessError("the protocol file is empty (or holds only comments)", where=str(path),
                           fix="write its fields, e.g. `way: 5`, or remove the file (and the include: of it)")
    if not isinstance(data, dict):
        raise HarnessError("a protocol must be a mapping of field: value", where=str(path), fix="start the file with fields such as `way: 5`")
    return data


def _read_with_includes(path: Path, chain: tuple[Path, ...], files: list[Path] | None = None) -> tuple[dict, dict]:
    """(data, origins) of `path` with its includes merged under it; `files` collects every file read, whose
    number is bounded (a file that includes another ten times, each of which does the same, ...)."""
    files = [] if files is None else files
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise HarnessError(f"protocol files include each other in a cycle: {cycle}", fix="remove one of the include: lines")
    files.append(path)
    if len(files) > MAX_INCLUDED_FILES:
        raise HarnessError(f"the protocol reads more than {MAX_INCLUDED_FILES} files through include: (the same file included again counts again)",
                           where=f"{chain[-1] if chain else path}, field 'include'", fix="include each file once, and keep the chain of includes short")
    data = _read_yaml(path)
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise HarnessError("'include' must be a file name or a list of file names", where=f"{path}, field 'include'", fix="write e.g. include: base-synthetic.yaml")
    merged: dict = {}
    origins: dict = {}
    imports: dict[str, str] = {}  # module -> the file that listed it first: included files first, each module once
    for inc in includes:
        inc_path = path.parent / inc
        if not inc_path.is_file():
            raise HarnessError(f"included file {inc_path} does not exist", where=f"{path}, field 'include'", fix="include: takes a path relative to the including file")
        sub, sub_origins = _read_with_includes(inc_path, (*chain, path), files)
        for i, module in enumerate(sub.pop("imports", [])):
            imports.setdefault(module, sub_origins[f"imports[{i}]"])
        _merge(merged, sub)
        origins.update({k: v for k, v in sub_origins.items() if k != "imports" and not k.startswith("imports[")})
    for module in _imports_of(data, path):
        imports.setdefault(module, str(path))
    _merge(merged, data)
    origins.update({k: str(path) for k in _dotted_keys(data)})
    if imports:
        merged["imports"] = list(imports)
        origins.update({f"imports[{i}]": origin for i, origin in enumerate(imports.values())})
        origins["imports"] = str(path)
    return merged, origins


def _imports_of(data: dict, path: Path) -> list[str]:
    """The `imports:` list of one file, taken out of `data`: a list of module names, each once."""
    if "imports" not in data:
        return []
    modules = data.pop("imports")
    where = f"{path}, field 'imports'"
    if not isinstance(modules, list):
        raise HarnessError(f"'imports' must be a list of module names, got {modules!r}", where=where, fix="write e.g. imports: [mypkg.heads]")
    for i, module in enumerate(modules):
        if not isinstance(module, str):
            raise HarnessError(f"expected a module name, got {module!r}", where=f"{path}, field 'imports[{i}]'", fix="write a module's dotted name, e.g. mypkg.heads")
        if module in modules[:i]:
            raise HarnessError(f"module '{module}' is listed twice", where=f"{path}, field 'imports[{i}]'", fix="list each module once")
    return modules


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _dotted_keys(data: dict, prefix: str = ""):
    for k, v in data.items():
        key = f"{prefix}{k}"
        yield key
        if isinstance(v, dict):
            yield from _dotted_keys(v, key + ".")


def _apply_override(data: dict, origins: dict, text: str) -> None:
    if "=" not in text:
        raise HarnessError(f"override '{text}' is not of the form field=value", fix="write e.g. --set way=10 or --set dataset.root=/data/hmdb51")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=StrictLoader) if raw.strip() else ""  # noqa: S506 (a SafeLoader)
    except YamlRefused as e:  # a duplicate key, an alias bomb, ...: refused, never taken as text
        raise HarnessError(f"the value of --set {dotted.strip()} is refused: {e.what}", where=f"--set, field '{dotted.strip()}'", fix=e.fix) from None
    except (yaml.YAMLError, ValueError):
        value = raw  # not YAML: the text as it is (a path with ': ' in it, say)
    node = data
    *parents, last = dotted.strip().split(".")
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise HarnessError(f"override '{text}': '{p}' is not a section", fix="override a field inside a section, e.g. frames.count=8")
    node[last] = value
    for key in [k for k in origins if k.startswith(dotted.strip() + "[")]:
        del origins[key]  # the items of a list that --set replaces came from --set too
    origins[dotted.strip()] = "--set"


# ------------------------------------------------------------------------------------------- validation


def _build(cls, data, prefix: str, origins: dict, source: str):
    """Turn nested plain data into the dataclass `cls`, checking names and types on the way."""
    if not isinstance(data, dict):
        name = prefix.rstrip(".")
        example = {"dataset": "dataset: {root: /data/hmdb51}", "dataset.splits": "splits: {test: testlist.txt}", "frames": "frames: {count: 8}", "backbone": "backbone: {name: r3d50, weights: FILE}", "train": "train: {steps: 100}"}.get(name, f"{name}: {{field: value}}")
        raise HarnessError(f"expected a section of fields, got {type(data).__name__} {data!r}", where=_where(origins, source, name), fix=f"write the fields of '{name}' under it, e.g. {example}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("source", "origins")}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{prefix}{near[0]}'?" if near else f"valid fields here: {', '.join(fields)}"
            raise HarnessError(f"unknown field '{dotted}'", where=_where(origins, source, dotted), fix=hint)
        kwargs[key] = _convert(hints[key], value, dotted, origins, source)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise HarnessError(f"missing field '{prefix}{missing[0]}'", where=source, fix=f"add `{missing[0]}:` to the protocol")
    return cls(**kwargs)


def _convert(hint, value, dotted: str, origins: dict, source: str):
    where = _where(origins, source, dotted)
    if type(None) in typing.get_args(hint):  # `X | None`: null leaves the field unset
        if value is None:
            return None
        (hint,) = [h for h in typing.get_args(hint) if h is not type(None)]
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, dotted + ".", origins, source)
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise HarnessError(f"expected true or false, got {value!r}", where=where, fix="write true or false, without quotes")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HarnessError(f"expected a whole number, got {value!r}", where=where, fix="write a whole number without quotes or a decimal point, e.g. 5")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HarnessError(f"expected a number, got {value!r}", where=where, fix="write a number without quotes, e.g. 0.001")
        if not math.isfinite(value):
            raise HarnessError(f"expected a finite number, got {value!r}", where=where, fix="write a finite number (.nan and .inf are not values a protocol can use)")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise HarnessError(f"expected text, got {value!r}", where=where, fix="quote the value if it is meant as text")
        return value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise HarnessError(f"expected a list, got {value!r}", where=where, fix="write e.g. [mypkg.heads]" if item is str else "write e.g. [0.5, 0.5, 0.5]")
        return tuple(_convert(item, v, f"{dotted}[{i}]", origins, source) for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise HarnessError(f"expected a section of name: settings, got {value!r}", where=where, fix="write e.g. methods: {staf: {alpha: 1.0}}")
        return value
    raise TypeError(f"protocol field {dotted} has an unsupported type {hint}")  # a bug in this file, not user input


def _where(origins: dict, source: str, dotted: str) -> str:
    # a nested field not set anywhere reports the file that set its nearest section
    probe = dotted
    while probe and probe not in origins:
        probe = probe.rpartition(".")[0]
    return f"{origins.get(probe, source)}, field '{dotted}'"


def _check_values(p: Protocol) -> None:
    def need(ok: bool, dotted: str, what: str, fix: str) -> None:
        if not ok:
            raise HarnessError(what, where=p.where(dotted), fix=fix)

    # names become folders (results/<name>/, checkpoints/<name>/) and file names (pretrained weights)
    for dotted, value in (("name", p.name), ("dataset.name", p.dataset.name)):
        problem = name_problem(value)
        need(problem is None, dotted, f"{dotted} cannot be used as a folder or file name: {problem}", f"use {NAME_RULE}")
    need(p.way >= 2, "way", f"way must be at least 2, got {p.way}", "a few-shot episode chooses between 2 or more classes; the literature uses 5")
    need(p.shot >= 1, "shot", f"shot must be at least 1, got {p.shot}", "use 1 or 5 as the literature does")
    need(p.query_per_class >= 1, "query_per_class", f"query_per_class must be at least 1, got {p.query_per_class}", "the literature uses 1 at test time")
    need(p.episodes >= 1, "episodes", f"episodes must be at least 1, got {p.episodes}", "the literature uses 10000")
    need(p.episodes <= MAX_EPISODES, "episodes", f"episodes must be at most {MAX_EPISODES:,}, got {p.episodes:,}",
         f"the literature uses 10000; beyond {MAX_EPISODES:,} the interval no longer narrows (README: How sure is a number), and sampling alone would take hours")
    need(p.seed >= 0, "seed", f"seed must be a non-negative whole number, got {p.seed}", "use e.g. seed: 0")
    need(p.dataset.part in PARTS, "dataset.part", f"dataset.part must be one of {', '.join(PARTS)}, got '{p.dataset.part}'", "evaluate on test; train and val are for training and model selection")
    need(p.dataset.bad_videos in ("error", "exclude"), "dataset.bad_videos", f"dataset.bad_videos must be 'error' or 'exclude', got '{p.dataset.bad_videos}'", "use 'error' (the default) to stop at a missing or short video")
    f = p.frames
    need(f.count >= 1, "frames.count", f"frames.count must be at least 1, got {f.count}", "use e.g. 16 (3D ResNet) or 8 (TRX, OTAM)")
    need(f.sampling == "uniform", "frames.sampling", f"frames.sampling must be 'uniform', got '{f.sampling}'", "test-time sampling is evenly spaced frame indices over the whole video")
    need(f.resize >= 1, "frames.resize", f"frames.resize must be positive, got {f.resize}", "the short side in pixels, e.g. 256")
    need(1 <= f.crop <= f.resize, "frames.crop", f"frames.crop must be between 1 and frames.resize ({f.resize}), got {f.crop}", "the centre crop is taken from the resized frame, e.g. resize 256, crop 224")
    need(len(f.mean) == 3, "frames.mean", f"frames.mean must have 3 values (R, G, B), got {len(f.mean)}", "write e.g. [0.0, 0.0, 0.0]")
    need(len(f.std) == 3 and all(s > 0 for s in f.std), "frames.std", f"frames.std must be 3 positive values, got {list(f.std)}", "write e.g. [1.0, 1.0, 1.0]")
    check_train_spec(p.train, p.where)
    for i, module in enumerate(p.imports):
        need(MODULE_NAME.fullmatch(module) is not None, f"imports[{i}]", f"'{module}' is not a module name",
             "write a module's dotted name, as in `import mypkg.heads` (no path, no .py, no :Class)")
        need(module not in p.imports[:i], f"imports[{i}]", f"module '{module}' is listed twice", "list each module once")
    for method, settings in p.methods.items():
        problem = name_problem(method)
        need(problem is None, "methods", f"methods holds a section named {method!r}, which is no method name: {problem}", "name a registered method (`fsv-bench list`)")
        need(isinstance(settings, dict), f"methods.{method}", f"settings of method '{method}' must be a section of name: value", "write e.g. methods: {staf: {alpha: 1.0}}")


def check_train_spec(t: TrainSpec, where: typing.Callable[[str], str]) -> None:
    """The values of a `train:` section that no training can use are HarnessErrors; `where(dotted)` names the
    place a field was written (a protocol file, or a head's `train_defaults`). Unset fields are not checked."""

    def need(name: str, ok, what: str, fix: str) -> None:
        value = getattr(t, name)
        if value is not None and not ok(value):
            raise HarnessError(f"train.{name} {what}, got {value!r}", where=where(f"train.{name}"), fix=fix)

    default = "or leave it out for the method's recipe"
    need("optimizer", lambda v: v in ("sgd", "adam"), "must be 'sgd' or 'adam'", f"write sgd or adam, {default}")
    need("schedule", lambda v: v in ("constant", "cosine"), "must be 'constant' or 'cosine'", f"write constant or cosine, {default}")
    need("crop", lambda v: v in ("random", "centre"), "must be 'random' or 'centre'", "use random (TRX's train-time crop) or centre (STAF's)")
    for name in ("steps", "tasks_per_batch", "query_per_class", "val_every", "val_episodes"):
        need(name, lambda v: v >= 1, "must be at least 1", f"write a whole number of 1 or more, {default}")
    need("val_episodes", lambda v: v <= MAX_EPISODES, f"must be at most {MAX_EPISODES:,}", "the references select on a few hundred to a few thousand val episodes")
    for name in ("steps", "tasks_per_batch"):
        need(name, lambda v: v <= MAX_TRAIN_EPISODES, f"must be at most {MAX_TRAIN_EPISODES:,} (train.steps x train.tasks_per_batch is the number of training episodes)",
             f"the references train on 100,000 to 128,000 episodes; at most {MAX_TRAIN_EPISODES:,} in all")
    if t.steps is not None and t.tasks_per_batch is not None:
        need("tasks_per_batch", lambda v: v * t.steps <= MAX_TRAIN_EPISODES, f"times train.steps ({t.steps:,}) is {t.steps * t.tasks_per_batch:,} training episodes, more than {MAX_TRAIN_EPISODES:,}",
             f"lower train.steps or train.tasks_per_batch; the references train on 100,000 to 128,000 episodes")
    need("jitter", lambda v: v >= 0, "must not be negative", "write 0 for no jitter, or the most frames the ends may move")
    need("lr", lambda v: v > 0, "must be positive", f"write e.g. 0.001, {default}")
    need("momentum", lambda v: 0 <= v < 1, "must be at least 0 and below 1", "write e.g. 0.9, or 0 for plain SGD")
    need("weight_decay", lambda v: v >= 0, "must not be negative", "write 0 for none")


def train_spec(values: dict, source: str) -> TrainSpec:
    """A `train:` section given as plain data (a head's `train_defaults`), checked as a protocol's is: an
    unknown field, a wrong type or an impossible value is a HarnessError naming `source`."""
    spec = _build(TrainSpec, values, "train.", {}, source)
    check_train_spec(spec, lambda dotted: f"{source}, field '{dotted}'")
    return spec


# -------------------------------------------------------------------------------------------- locations


def data_home(explicit: str | os.PathLike | None = None) -> Path:
    """Where datasets, features and checkpoints live: --home, else $FSV_HOME, else ./.fsv."""
    return Path(explicit or os.environ.get("FSV_HOME") or ".fsv").absolute()


def resolve_path(path: str, home: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else home / p


def dataset_root(p: Protocol, home: Path) -> Path:
    return resolve_path(p.dataset.root, home)


def split_dir(p: Protocol, home: Path) -> Path:
    return resolve_path(p.dataset.split_dir, home) if p.dataset.split_dir else dataset_root(p, home)


def frames_key(f: FramesSpec) -> dict:
    """The preprocessing that decides a clip's pixels (part of every feature-cache key)."""
    return dataclasses.asdict(f)


PROTOCOLS_DIR = shipped_dir("protocols")  # the checkout's protocols/, or the installed package's copy


def find_protocol(name_or_path: str) -> Path:
    """A path, or the name of a shipped protocol (protocols/<name>.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_dir("protocols") / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(list_protocols()) or "(none)"
    raise HarnessError(f"no protocol file or shipped protocol named '{name_or_path}'", fix=f"pass a path to a .yaml file, or one of: {known}")


def leaf_fields(data, prefix: str = "") -> dict:
    """{dotted field: value} of nested mappings (lists and scalars are leaves; an empty mapping has none)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for key, value in data.items():
        out.update(leaf_fields(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def protocol_origin(p: Protocol) -> dict:
    """Whether `p` is a shipped protocol as shipped: {"shipped", "modified", "fields"}. `shipped`: a protocol of
    this name ships in protocols/; `modified`: the resolved content (machine-local paths excluded, so pointing
    dataset.root at the data is no modification) differs from the shipped file's; `fields`: {dotted field:
    {"shipped": value, "run": value}} for each differing leaf (null where a side lacks the field)."""
    path = shipped_dir("protocols") / f"{p.name}.yaml"
    if p.name.startswith("base") or not path.is_file():
        return {"shipped": False, "modified": False, "fields": {}}
    shipped, run = leaf_fields(load_protocol(path).content()), leaf_fields(p.content())
    fields = {k: {"shipped": shipped.get(k), "run": run.get(k)} for k in sorted(shipped.keys() | run.keys()) if shipped.get(k, ...) != run.get(k, ...)}
    return {"shipped": True, "modified": bool(fields), "fields": fields}


def list_protocols() -> list[str]:
    return sorted(p.stem for p in shipped_files("protocols") if not p.stem.startswith("base"))


