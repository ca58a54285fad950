"""Backbones: output shapes (METHODS.md §1), loading the published weight-file layouts, and refusing bad files.

Models whose outputs are compared are built from random weights with randomised BatchNorm statistics, so a
buffer left unloaded or a block wired differently would show. Models that only receive a file are built on
the meta device and given uninitialised memory: the load must then fill every tensor.
"""
from __future__ import annotations

import os
import re
import shlex
from collections import Counter

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.video.resnet import BasicBlock as TVBasicBlock
from torchvision.models.video.resnet import BasicStem, Bottleneck as TVBottleneck, Conv3DSimple, VideoResNet

from harness.backbones import create_backbone, list_backbones, load_weights
from harness.errors import HarnessError

HARA = ["r3d18", "r3d34", "r3d50", "r3d101"]
PER_FRAME = ["resnet18", "resnet34", "resnet50"]
TV_VIDEO = ["r3d_18", "mc3_18", "r2plus1d_18"]


def randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.num_batches_tracked.fill_(12345)
    return model.eval()


def uniform(*shape: int) -> torch.Tensor:
    """A seeded input in [0, 1], as the harness feeds frames."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(0))


def empty_backbone(name: str) -> nn.Module:
    """The registered backbone with uninitialised weights (no time spent on initialising what a file replaces)."""
    with torch.device("meta"):
        model = create_backbone(name)
    return model.to_empty(device="cpu").eval()


def loaded(name: str, path) -> nn.Module:
    model = empty_backbone(name)
    load_weights(model, path, name, ignore=model.ignore_weights)
    return model


def hara_checkpoint(model: nn.Module, arch: str, classes: int = 1139) -> dict:
    """A checkpoint as `kenshohara/3D-ResNets-PyTorch` saves it: a DataParallel state dict with its classifier,
    next to the epoch, the arch string and the optimizer's and scheduler's states."""
    g = torch.Generator().manual_seed(1)
    state = dict(model.state_dict())
    state["fc.weight"] = torch.randn(classes, model.out_channels, generator=g) * 0.01
    state["fc.bias"] = torch.zeros(classes)
    toy = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(toy.parameters(), lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-3)
    toy(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50, 100, 150])  # milestones are a Counter
    return {
        "epoch": 200,
        "arch": arch,
        "state_dict": {"module." + k: v for k, v in state.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }


@pytest.fixture(scope="module")
def hara_files(tmp_path_factory):
    """name -> (the model a checkpoint was saved from, the checkpoint file)."""
    root = tmp_path_factory.mktemp("hara")
    files = {}
    for seed, (name, arch) in enumerate([("r3d50", "resnet-50"), ("r3d18", "resnet-18")]):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = randomise_bn(create_backbone(name), seed)
        path = root / f"{name}_KMS_200ep.pth"
        torch.save(hara_checkpoint(model, arch), path)
        files[name] = (model, path)
    return files


# ---- shapes -------------------------------------------------------------------------------------------------


def test_all_families_are_registered():
    assert set(HARA + PER_FRAME + TV_VIDEO) <= set(list_backbones())
    with torch.device("meta"):
        channels = {name: create_backbone(name).out_channels for name in HARA}
    assert channels == {"r3d18": 512, "r3d34": 512, "r3d50": 2048, "r3d101": 2048}


def test_deferred_backbone_modules_register_exactly_what_they_are_declared_for(tmp_path):
    """The torchvision-based backbones are imported on first use; each module registers the names declared
    for it, and a command that needs none of them never imports torchvision (3 s of start-up)."""
    import importlib
    import subprocess
    import sys

    from harness.backbones import registry

    for module in set(registry._DEFERRED.values()):
        importlib.import_module(module)
        declared = {n for n, m in registry._DEFERRED.items() if m == module}
        registered = {n for n, f in registry._BACKBONES.items() if f.__module__ == module}
        assert declared == registered, module
    code = "import sys, harness.quickstart, harness.cli, harness.compare, harness.leaderboard; sys.exit('torchvision' in sys.modules or 'scipy.stats' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))).returncode == 0
    # the version that enters the backbone's code hash is the same read from the file as after an import
    code = "from harness.provenance import torchvision_version as v; a = v(); import torchvision; print(a == torchvision.__version__ == v())"
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr


@pytest.mark.parametrize("name", ["r3d50", "r3d18"])  # r3d34 and r3d101 differ from these only in block counts
def test_r3d_map_at_16x224_follows_methods(name):
    """METHODS.md §1: time 16 -> 16 (stem) -> 8 (max-pool) -> 4 -> 2 -> 1, space 224 -> 112 -> 56 -> 28 -> 14 -> 7.
    Shapes only, on the meta device: no arithmetic is done."""
    with torch.device("meta"):
        m = create_backbone(name)
        x = torch.empty(1, 3, 16, 224, 224)
        sizes = []
        for stage in (lambda x: m.relu(m.bn1(m.conv1(x))), m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4):
            x = stage(x)
            sizes.append(tuple(x.shape[2:]))
    assert sizes == [(16, 112, 112), (8, 56, 56), (8, 56, 56), (4, 28, 28), (2, 14, 14), (1, 7, 7)]
    assert x.shape == (1, 2048 if name == "r3d50" else 512, 1, 7, 7)


def test_r3d50_on_a_small_clip(hara_files):
    model, _ = hara_files["r3d50"]
    with torch.no_grad():
        out = model(uniform(1, 3, 16, 64, 64))
    assert out.shape == (1, 2048, 1, 2, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "name, shape",
    [
        ("r3d_18", (1, 512, 1, 2, 2)),
        ("r2plus1d_18", (1, 512, 1, 2, 2)),
        ("mc3_18", (1, 512, 8, 2, 2)),  # MC3's stages 2-4 are 2D: time is never strided
        ("resnet18", (1, 512, 8, 1, 1)),
        ("resnet34", (1, 512, 8, 1, 1)),
        ("resnet50", (1, 2048, 8, 1, 1)),
    ],
)
def test_other_backbones_shapes(name, shape):
    with torch.device("meta"):
        model = create_backbone(name)
        assert model(torch.empty(1, 3, 8, 32, 32)).shape == shape
        assert model.out_channels == shape[1]
        assert model.ignore_weights == ("fc.",)
        assert not any(k.startswith(("fc.", "avgpool")) for k in model.state_dict())


# ---- the 3D ResNet of Hara et al. -----------------------------------------------------------------------------


def test_r3d_parameter_names_and_strides_are_hara_s():
    names = set(empty_backbone("r3d50").state_dict())
    pattern = re.compile(r"(conv1\.weight|bn1\.\w+|layer[1-4]\.\d+\.(conv[123]\.weight|bn[123]\.\w+|downsample\.0\.weight|downsample\.1\.\w+))")
    assert all(pattern.fullmatch(k) for k in names), sorted(k for k in names if not pattern.fullmatch(k))
    assert {"layer1.0.downsample.0.weight", "layer3.5.bn3.running_var", "layer4.2.conv3.weight"} <= names
    with torch.device("meta"):
        r50, r18 = create_backbone("r3d50"), create_backbone("r3d18")
    assert (r50.layer2[0].conv1.stride, r50.layer2[0].conv2.stride) == ((1, 1, 1), (2, 2, 2))  # stride on the 3x3x3
    assert r18.layer2[0].conv1.stride == (2, 2, 2) and r18.layer1[0].downsample is None  # shortcut B: only where needed
    assert r50.layer2[0].downsample[0].stride == (2, 2, 2) and r50.layer2[0].downsample[0].kernel_size == (1, 1, 1)


@pytest.mark.parametrize("name", ["r3d50", "r3d18"])
def test_r3d_blocks_compute_what_torchvision_s_do(name, hara_files):
    """The four stages against torchvision's video blocks with plain 3x3x3 convs, given the same weights."""
    ours, _ = hara_files[name]
    block, layers = (TVBottleneck, [3, 4, 6, 3]) if name == "r3d50" else (TVBasicBlock, [2, 2, 2, 2])
    with torch.device("meta"):
        theirs = VideoResNet(block, [Conv3DSimple] * 4, layers, BasicStem)
    theirs = theirs.to_empty(device="cpu").eval()

    def their_name(k: str) -> str:  # our conv2 / bn2 -> their conv2.0 / conv2.1
        return re.sub(r"\.(conv|bn)([123])\.", lambda m: f".conv{m[2]}.{0 if m[1] == 'conv' else 1}.", k)

    mapped = {their_name(k): v for k, v in ours.state_dict().items() if k.startswith("layer")}
    result = theirs.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and all(not k.startswith("layer") for k in result.missing_keys)
    x = uniform(1, 64, 4, 8, 8)
    with torch.no_grad():
        a = ours.layer4(ours.layer3(ours.layer2(ours.layer1(x))))
        b = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(x))))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["r3d50", "r3d18"])
def test_published_checkpoint_layout_loads_and_gives_the_same_outputs(name, hara_files):
    source, path = hara_files[name]
    checkpoint = torch.load(path, weights_only=True, mmap=True)  # optimizer, scheduler, epoch, arch: all plain data
    assert checkpoint["epoch"] == 200 and isinstance(checkpoint["scheduler"]["milestones"], Counter)
    assert checkpoint["state_dict"]["module.fc.weight"].shape == (1139, source.out_channels)
    model = loaded(name, path)
    clip = uniform(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(clip), source(clip))
    assert model.layer1[0].bn1.num_batches_tracked.item() == 12345


def test_the_classifier_must_be_ignored_explicitly(hara_files):
    _, path = hara_files["r3d18"]
    with pytest.raises(HarnessError, match=r"unexpected 2 keys \(e\.g\. fc\.bias, fc\.weight\)"):
        load_weights(empty_backbone("r3d18"), path, "r3d18")


# ---- torchvision layouts ------------------------------------------------------------------------------------


def test_resnet50_per_frame_equals_torchvision_on_each_frame(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = randomise_bn(torchvision.models.resnet50(weights=None), 3)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(theirs.state_dict(), path)  # torchvision's layout: a plain state dict, fc included
    model = loaded("resnet50", path)
    trunk = nn.Sequential(*list(theirs.children())[:-2]).eval()  # up to layer4, before avgpool and fc
    clip = uniform(2, 3, 3, 64, 64)  # [B, 3, T, H, W]
    with torch.no_grad():
        out = model(clip)
        assert out.shape == (2, 2048, 3, 2, 2)
        for b in range(2):
            for t in range(3):
                reference = trunk(clip[b : b + 1, :, t])[0]  # one frame at a time: another batch size, so
                error = (out[b, :, t] - reference).abs().max()  # another summation order; compare to the scale
                assert error <= 1e-5 * reference.abs().max(), (b, t, error)


def layout_file(state: dict[str, torch.Tensor], path):
    """A weight file with the keys, shapes and dtypes of `state`, every tensor a broadcast one (a few KB):
    enough where only the loading matters, not the values."""
    torch.save({k: torch.ones((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}, path)
    return path


@pytest.mark.parametrize("name", TV_VIDEO)
def test_torchvision_video_weight_layouts_load(name, tmp_path):
    with torch.device("meta"):
        theirs = getattr(torchvision.models.video, name)(weights=None)
    assert theirs.state_dict()["fc.weight"].shape == (400, 512)  # their files hold the Kinetics-400 classifier
    model = loaded(name, layout_file(theirs.state_dict(), tmp_path / f"{name}.pth"))
    assert all(bool((t == 1).all()) for t in model.state_dict().values())  # every tensor came from the file


def test_torchvision_video_features_match_their_model(tmp_path):
    """MC3-18: the cheapest of the three; all share the forward, and their parts are checked by the layouts."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = randomise_bn(torchvision.models.video.mc3_18(weights=None), 4)
    path = tmp_path / "mc3_18-a90a0ba3.pth"
    torch.save(theirs.state_dict(), path)  # their own weight files: plain state dicts with the 400-way fc
    model = loaded("mc3_18", path)
    clip = uniform(1, 3, 8, 32, 32)
    with torch.no_grad():
        ours = model(clip)
        reference = theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(theirs.stem(clip)))))
    assert ours.shape == (1, 512, 8, 2, 2)
    assert torch.equal(ours, reference)


# ---- files that must be refused -----------------------------------------------------------------------------


def test_weights_of_another_depth_are_refused_with_the_keys_named(hara_files):
    with pytest.raises(HarnessError) as e:
        loaded("r3d50", hara_files["r3d18"][1])
    text = str(e.value)
    assert "does not fit backbone 'r3d50'" in text and "missing 198 keys (e.g. layer1.0.bn3.bias" in text
    assert "of another shape (e.g. layer1.0.conv1.weight: file (64, 64, 3, 3, 3), model (64, 64, 1, 1, 1))" in text
    with pytest.raises(HarnessError, match=r"unexpected \d+ keys .*layer1\.0\.bn3"):
        loaded("r3d18", hara_files["r3d50"][1])


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        loaded("r3d50", tmp_path / "r3d50_KMS_200ep.pth")


class RunsCode:
    """Unpickling this calls os.system: what a malicious weight file does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("nested", [False, True])
def test_a_file_that_carries_code_is_refused_without_running_it(tmp_path, nested):
    marker = tmp_path / "pwned"
    payload = RunsCode(f"echo pwned > {shlex.quote(str(marker))}")
    path = tmp_path / "r3d50_KMS_200ep.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "epoch": 200, "optimizer": payload} if nested else payload, path)
    with pytest.raises(HarnessError, match="cannot be loaded safely"):
        loaded("r3d50", path)
    assert not marker.exists()
