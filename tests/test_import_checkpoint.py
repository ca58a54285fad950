"""import-checkpoint: a checkpoint laid out like the reference code's converts into one the harness runs."""
import pytest
import torch

import methods
from harness.backbones import sha256_file
from harness.checkpoints import load_checkpoint
from harness.errors import HarnessError
from harness.import_reference import import_checkpoint
from harness.pipeline import Settings, head_for
from harness.protocol import load_protocol

FEATURE_SHAPE = (32, 8, 2, 2)  # small maps: C=32, T=8, 2x2 positions


def episode(seed=0, way=5, shot=1, query=1):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(way * (shot + query), *FEATURE_SHAPE, generator=g)
    labels = torch.arange(way).repeat_interleave(shot).unsqueeze(0)
    return maps, labels


def reference_layout(head_state: dict, backbone_keys: dict) -> dict:
    """As the reference code saves it: DataParallel's `module.` prefix, backbone beside the head."""
    state = {f"module.{k}": v for k, v in {**head_state, **backbone_keys}.items()}
    return {"model_state_dict": state, "optimizer_state_dict": {"state": {}, "param_groups": []}, "iteration": 1234}


@pytest.mark.parametrize("reference, backbone_keys, expected_backbone", [
    ("trx", {"resnet.0.weight": torch.randn(4, 3, 1, 1), "resnet.4.0.conv1.weight": torch.randn(4, 4, 1, 1)}, {"conv1.weight", "layer1.0.conv1.weight"}),
    ("staf", {"base.conv1.weight": torch.randn(4, 3, 1, 1, 1), "base.layer1.0.bn1.weight": torch.randn(4)}, {"conv1.weight", "layer1.0.bn1.weight"}),
])
def test_reference_checkpoint_round_trips(reference, backbone_keys, expected_backbone, tmp_path, write_protocol):
    torch.manual_seed(0)
    original = methods.create(reference, context={"feature_shape": FEATURE_SHAPE, "num_train_classes": 7}).eval()
    for param in original.parameters():  # random weights, not the initial ones
        param.data.normal_()
    if reference == "staf":
        original.cam.conv1.bn.running_mean.normal_()
    source = tmp_path / "reference.pth"
    torch.save(reference_layout(original.state_dict(), backbone_keys), source)

    p = load_protocol(write_protocol())
    head_path, backbone_path = import_checkpoint(reference, source, p, tmp_path / "imported.pt")
    assert set(torch.load(backbone_path, weights_only=True)) == expected_backbone
    assert load_checkpoint(head_path)["imported_from"]["reference"] == reference

    settings = Settings(home=tmp_path, results=tmp_path, show_progress=False)
    imported, sha = head_for(p, reference, settings, FEATURE_SHAPE, sha256_file(backbone_path), checkpoint=head_path)
    imported.eval()
    maps, labels = episode()
    view = methods.feature_view(maps, original.view)
    with torch.no_grad():
        want = original(original.embed(view[:5]).unsqueeze(0), labels, original.embed(view[5:]).unsqueeze(0), 5)
        got = imported(imported.embed(view[:5]).unsqueeze(0), labels, imported.embed(view[5:]).unsqueeze(0), 5)
    assert torch.equal(want, got) and sha == sha256_file(head_path)


def test_a_file_that_is_not_a_reference_checkpoint_is_named(tmp_path, write_protocol):
    source = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"something.weight": torch.zeros(2)}}, source)
    with pytest.raises(HarnessError, match="other.pth"):
        import_checkpoint("trx", source, load_protocol(write_protocol()), tmp_path / "out.pt")
