"""Methods from outside methods/: installed plug-ins (entry points), `--method package.module:Class`, a protocol's
`imports:`; a user's own `methods/` or `harness/` folder never stands in for the harness's; an external method's
source is part of its results' identity.

The plug-ins are "installed" without pip: a folder on PYTHONPATH holding the packages and their `.dist-info`
(METADATA and entry_points.txt), which is all importlib.metadata reads.
"""
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.protocol import load_protocol
from methods import external, registry

REPO = Path(__file__).resolve().parents[1]

COSINE = '''\
import torch

from methods import Head, class_means


class Cosine(Head):
    """Cosine similarity to the class means."""

    view = "vector"

    def __init__(self, scale: float = 10.0):
        super().__init__()
        self.scale = scale

    def forward(self, support, support_labels, query, way):  # [E, S, C], [E, S], [E, Q, C]
        prototypes = class_means(support, support_labels, way)  # [E, way, C]
        return self.scale * torch.nn.functional.cosine_similarity(query[:, :, None], prototypes[:, None], dim=-1)  # [E, Q, way]
'''

SELF_REGISTERED = '''\
from methods import Head, class_means, register


@register("toy-registered")
class Nearest(Head):
    view = "vector"

    def forward(self, support, support_labels, query, way):
        return -(query[:, :, None] - class_means(support, support_labels, way)[:, None]).square().sum(-1)
'''

DOT = '''\
from methods import Head, class_means


class Dot(Head):
    view = "vector"

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, support, support_labels, query, way):
        return query @ class_means(support, support_labels, way).transpose(1, 2) / self.temperature  # [E, Q, way]
'''

PROTOCOL_IMPORTED = '''\
from methods import Head, class_means, register


@register("cwd-imported")
class Negated(Head):
    view = "vector"

    def forward(self, support, support_labels, query, way):
        return -(query[:, :, None] - class_means(support, support_labels, way)[:, None]).abs().sum(-1)
'''


def _distribution(site: Path, name: str, version: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[fsv_bench.methods]\n{entry_points}")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Two installed distributions: toy-heads (a Head class, and a module that registers its method) and
    broken-heads, whose import fails."""
    site = tmp_path_factory.mktemp("site")
    (site / "toy_heads").mkdir()
    (site / "toy_heads/__init__.py").write_text("")
    (site / "toy_heads/cosine.py").write_text(COSINE)
    (site / "toy_heads/registered.py").write_text(SELF_REGISTERED)
    _distribution(site, "toy-heads", "0.1", "toy-cosine = toy_heads.cosine:Cosine\ntoy-registered = toy_heads.registered\n")
    (site / "broken_heads").mkdir()
    (site / "broken_heads/__init__.py").write_text("import torch\n\nraise RuntimeError('needs a library this machine lacks')\n")
    _distribution(site, "broken-heads", "0.2", "toy-broken = broken_heads:Head\n")
    return site


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's folder: a head module, a module a protocol imports, a wrapper script that runs the harness, and
    folders of its own named `methods` (a package) and `harness` (notes), as a real project may have."""
    work = tmp_path_factory.mktemp("project")
    (work / "cwd_heads.py").write_text(DOT)
    (work / "cwd_imported.py").write_text(PROTOCOL_IMPORTED)
    (work / "methods").mkdir()
    (work / "methods/__init__.py").write_text('"""The user\'s own methods: nothing the harness knows."""\nOURS = True\n')
    (work / "harness").mkdir()
    (work / "harness/notes.txt").write_text("the user's test harness notes\n")
    (work / "run_bench.py").write_text("import sys\n\nfrom harness.cli import main\n\nsys.exit(main())\n")
    return work


def _bench(args: list[str], site: Path, cwd: Path, script: Path = REPO / "bench.py") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------- entry points


@pytest.mark.slow
def test_list_shows_installed_plugins_and_names_a_broken_one_without_failing(site, tmp_path):
    done = _bench(["list"], site, tmp_path)
    assert done.returncode == 0, done.stderr
    methods_line = next(line for line in done.stdout.splitlines() if line.startswith("methods:"))
    names = methods_line.split(":", 1)[1]
    assert "toy-cosine" in names and "toy-registered" in names and "protonet" in names
    assert "toy-broken (cannot be loaded" in names
    broken = next(line for line in done.stdout.splitlines() if line.strip().startswith("toy-broken:"))
    assert "'broken-heads 0.2'" in broken and "'toy-broken = broken_heads:Head'" in broken
    assert "RuntimeError: needs a library this machine lacks" in broken and "broken_heads/__init__.py, line 3" in broken
    assert "Traceback" not in done.stdout + done.stderr


@pytest.fixture
def installed(site, monkeypatch):
    """The plug-ins of `site` seen by this process; the registry, sys.path and the modules it loads restored afterwards."""
    monkeypatch.syspath_prepend(str(site))
    found = tuple(sorted((ep for d in importlib.metadata.distributions(path=[str(site)]) for ep in d.entry_points), key=lambda ep: ep.name))
    monkeypatch.setattr(external, "_entry_points", found)
    monkeypatch.setattr(external, "_outcomes", {})
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    before = set(sys.modules)
    yield site
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("toy_heads", "broken_heads", "cwd_heads", "cwd_imported", "bad_heads"):
            del sys.modules[name]


def test_entry_points_load_lazily_once_and_a_broken_one_only_when_asked_for(installed, write_protocol, tmp_path, capsys, monkeypatch):
    loaded = []
    real = external._register_entry_point
    monkeypatch.setattr(external, "_register_entry_point", lambda ep: loaded.append(ep.name) or real(ep))
    assert registry.registered("toy-cosine")
    assert loaded == ["toy-cosine"], "asking for one method loads its entry point only"
    assert registry.get("toy-cosine").method_name == "toy-cosine"
    head = registry.create("toy-cosine", scale=3.0)
    assert head.settings == {"scale": 3.0}

    protocol = str(write_protocol())
    assert main(["run", "--protocol", protocol, "--method", "toy-broken", "--home", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "method 'toy-broken' cannot be loaded" in err and "distribution 'broken-heads 0.2'" in err and "entry point 'toy-broken = broken_heads:Head'" in err
    assert "RuntimeError: needs a library this machine lacks" in err and "pip uninstall broken-heads" in err and "Traceback" not in err

    assert loaded == ["toy-cosine", "toy-broken"]
    assert "toy-registered" in registry.list_methods() and "toy-broken" not in registry.list_methods()
    assert [name for name, _ in external.load_all()] == ["toy-broken"]
    assert sorted(loaded) == ["toy-broken", "toy-cosine", "toy-registered"], "each entry point is loaded once per process"


def test_an_entry_point_must_carry_the_name_its_class_registers(installed, tmp_path):
    (installed / "bad_heads.py").write_text(SELF_REGISTERED.replace("toy-registered", "bad-own-name"))
    ep = importlib.metadata.EntryPoint(name="bad-entry", value="bad_heads:Nearest", group=external.GROUP)
    external._entry_points = (*external._entry_points, ep)
    with pytest.raises(HarnessError) as e:
        registry.get("bad-entry")
    assert "registers itself as 'bad-own-name', not 'bad-entry'" in e.value.what and "bad-entry = bad_heads:Nearest" in e.value.where


# ----------------------------------------------------------------------------------------------- module:Class


def test_module_class_names_and_errors(installed, project, monkeypatch):
    monkeypatch.chdir(project)  # importable from the current directory, as `python -m` allows
    assert external.method_name("cwd_heads:Dot") == "cwd_heads-Dot"
    assert external.method_name("cwd_heads:Dot") == "cwd_heads-Dot"  # the same class, the same name
    assert external.method_name("toy_heads.registered:Nearest") == "toy-registered"  # its own @register name
    assert str(project) == sys.path[-1], "the current directory is searched last, hiding nothing installed"
    for spec, expected in [
        ("cwd_heads:", "neither a method name nor package.module:Class"),
        ("no_such_module:Head", "no module named 'no_such_module' (searched sys.path and the current directory"),
        ("cwd_heads:Missing", "has no 'Missing'"),
        ("cwd_heads:class_means", "not a Head class"),
        ("toy_heads.cosine:torch", "not a Head class"),
        ("broken_heads:Head", "importing 'broken_heads' failed: RuntimeError: needs a library this machine lacks"),
    ]:
        with pytest.raises(HarnessError) as e:
            external.method_name(spec)
        assert expected in e.value.what and e.value.where == "--method" and e.value.fix, spec


def test_a_derived_name_finds_its_class_again(installed, project, write_protocol, monkeypatch):
    monkeypatch.chdir(project)
    assert registry.registered("cwd_heads-Dot")  # as a protocol's methods: or a later command names it
    assert registry.get("cwd_heads-Dot").__name__ == "Dot" and registry.get("cwd_heads-Dot").__module__ == "cwd_heads"
    assert not registry.registered("cwd_heads-class_means") and not registry.registered("no_such-Thing")
    p = load_protocol(write_protocol(), ["methods.cwd_heads-Dot.temperature=3"])
    assert p.methods == {"cwd_heads-Dot": {"temperature": 3}}, "a derived name holds no '.', which --set reads as a separator"


def test_train_and_calibrate_resolve_module_class_too(installed, project, write_protocol, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project)
    protocol = str(write_protocol())
    assert main(["train", "--protocol", protocol, "--method", "cwd_heads:Dot", "--home", str(tmp_path), "--quiet"]) == 2
    assert "method 'cwd_heads-Dot' has nothing to train" in capsys.readouterr().err  # found, and a head without parameters
    calibrate = ["calibrate", "--protocol", protocol, "--pools", "1", "--home", str(tmp_path), "--quiet"]
    assert main([*calibrate, "--method", "cwd_heads:Dot", "--method", "toy-cosine"]) == 2
    assert "--pools 1: the spread across pools needs at least 2" in capsys.readouterr().err  # the methods passed
    assert main([*calibrate, "--method", "nosuch"]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- imports:


def test_protocol_imports_are_checked_merged_and_not_part_of_the_hash(write_protocol, tmp_path):
    plain = load_protocol(write_protocol())
    base = write_protocol(name="base", extra="imports: [pkg.a, pkg.b]\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"include: {base.name}\nname: child\nimports: [pkg.c, pkg.a]\n")
    p = load_protocol(child)
    assert p.imports == ("pkg.a", "pkg.b", "pkg.c")  # the included file's first, each module once
    assert p.where("imports[0]").startswith(str(base.resolve())) and p.where("imports[2]").startswith(str(child.resolve()))
    assert "imports" not in p.content()
    assert load_protocol(write_protocol(name="tiny-5w1s", extra="imports: [pkg.a]\n")).sha256 == plain.sha256
    assert load_protocol(child, ["imports=[pkg.z]"]).imports == ("pkg.z",)

    for extra, where, what in [
        ("imports: pkg.a\n", "field 'imports'", "must be a list of module names"),
        ("imports: [pkg.a, 3]\n", "field 'imports[1]'", "expected a module name, got 3"),
        ("imports: [pkg.a, pkg.a]\n", "field 'imports[1]'", "listed twice"),
        ("imports: [pkg/heads.py]\n", "field 'imports[0]'", "is not a module name"),
        ("imports: ['pkg:Head']\n", "field 'imports[0]'", "is not a module name"),
        ("imprts: [pkg.a]\n", "field 'imprts'", "did you mean 'imports'"),
    ]:
        with pytest.raises(HarnessError) as e:
            load_protocol(write_protocol(name="bad", extra=extra))
        assert where in e.value.where and str(tmp_path) in e.value.where and what in e.value.message, extra
    with pytest.raises(HarnessError) as e:
        load_protocol(child, ["imports=pkg.z"])
    assert "expected a list" in e.value.what and "--set" in e.value.where


def test_a_protocol_import_that_fails_names_the_file_and_field(installed, write_protocol, tmp_path, capsys):
    protocol = write_protocol(extra="imports: [toy_heads.cosine, broken_heads]\n")
    assert main(["run", "--protocol", str(protocol), "--method", "protonet", "--home", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{protocol}, field 'imports[1]'" in err and "importing 'broken_heads' failed: RuntimeError" in err and "Traceback" not in err


# --------------------------------------------------------------------- a tiny run: every way, and identity


@pytest.mark.slow
def test_every_way_runs_beside_a_users_methods_and_harness_folders_and_source_is_identity(installed, project, protocol, home, tmp_path, monkeypatch, capsys):
    site = installed
    source = Path(protocol.source)
    source.write_text(source.read_text() + "imports: [cwd_imported]\nmethods: {cwd_heads-Dot: {temperature: 2.0}}\n")
    results = tmp_path / "results"
    ways = ["toy-cosine", "toy-registered", "cwd_heads:Dot", "cwd-imported"]
    command = ["run", "--protocol", str(source), *[a for m in ways for a in ("--method", m)], "--home", str(home), "--results", str(results), "--episodes", "20", "--quiet"]
    first = _bench(command, site, project, script=project / "run_bench.py")  # the user's wrapper, in the user's folder
    assert first.returncode == 0, first.stderr[-3000:]
    folders = {m: results / "tiny-5w1s" / m for m in ("toy-cosine", "toy-registered", "cwd_heads-Dot", "cwd-imported")}
    summaries = {m: json.loads((f / "summary.json").read_text()) for m, f in folders.items()}
    assert summaries["cwd_heads-Dot"]["method_config"] == {"temperature": 2.0}
    assert "toy_heads.cosine" in summaries["toy-cosine"]["code"]["head_modules"] and "cwd_heads" in summaries["cwd_heads-Dot"]["code"]["head_modules"]
    assert all(s["n_episodes"] == 20 and 0 <= s["accuracy"] <= 100 for s in summaries.values())

    cosine = site / "toy_heads/cosine.py"
    original = cosine.read_text()
    cosine.write_text(original.replace("self.scale = scale", "self.scale = scale * 1.0  # edited"))
    try:
        again = _bench(["run", "--protocol", str(source), "--method", "toy-cosine", "--method", "cwd_heads-Dot", "--home", str(home),
                        "--results", str(results), "--episodes", "20", "--quiet"], site, project)
    finally:
        cosine.write_text(original)
    assert again.returncode == 0, again.stderr[-3000:]
    edited = json.loads((folders["toy-cosine"] / "summary.json").read_text())
    assert edited["code"]["head_sha256"] != summaries["toy-cosine"]["code"]["head_sha256"], "an edited plug-in must be scored afresh"
    assert len(list((folders["toy-cosine"] / "runs").iterdir())) == 2
    unchanged = json.loads((folders["cwd_heads-Dot"] / "summary.json").read_text())
    assert unchanged["run_fingerprint"] == summaries["cwd_heads-Dot"]["run_fingerprint"], "an unchanged external method is served from disk"
    assert len(list((folders["cwd_heads-Dot"] / "runs").iterdir())) == 1

    # compare takes the module:Class text for its results' name
    monkeypatch.chdir(project)
    assert main(["compare", "cwd_heads:Dot", "toy-cosine", "--protocol", "tiny-5w1s", "--results", str(results), "--resamples", "100"]) == 0
    assert "cwd_heads-Dot" in capsys.readouterr().out
