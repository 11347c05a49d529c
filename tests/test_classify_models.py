import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision import models as tvm

from mrisynth.classify.models import build_classifier
from mrisynth.errors import UserError


@pytest.mark.parametrize("name, features", [("tiny", 32), ("resnet18", 512)])
def test_one_channel_in_logits_out_and_fc_gives_features(name, features):
    torch.manual_seed(0)
    model = build_classifier(name, 3).eval()
    x = torch.rand(2, 1, 32, 32)  # (B, 1, H, W) in [0, 1]
    assert model(x).shape == (2, 3)
    assert isinstance(model.fc, nn.Linear)
    model.fc = nn.Identity()
    assert model(x).shape == (2, features)


def test_resnet50_head_size():
    model = build_classifier("resnet50", 4)
    assert model.fc.in_features == 2048 and model.fc.out_features == 4


def test_bad_names_are_user_errors():
    with pytest.raises(UserError, match="unknown classifier model 'vgg'"):
        build_classifier("vgg", 3)
    with pytest.raises(UserError, match="at least 2 classes"):
        build_classifier("tiny", 1)
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_classifier("tiny", 3, weights="imagenet")


def test_imagenet_weights_absent_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(UserError, match="never downloads") as err:
        build_classifier("resnet18", 3, weights="imagenet")
    assert str(expected) in str(err.value)


def test_imagenet_weights_from_torch_cache_load_backbone_and_normalise(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = tvm.resnet18()  # stands in for the real ImageNet file (1000 classes)
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = build_classifier("resnet18", 3, weights="imagenet")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.fc.out_features == 3
    assert model.input_mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    # grey input through a pretrained model equals the RGB model on the replicated, normalised image
    reference.eval(), model.eval()
    x = torch.rand(1, 1, 32, 32)
    model.fc, reference.fc = nn.Identity(), nn.Identity()
    rgb = (x.expand(-1, 3, -1, -1) - model.input_mean) / model.input_std
    torch.testing.assert_close(model(x), reference(rgb))


def test_local_weights_files(tmp_path):
    torch.manual_seed(2)
    source = build_classifier("tiny", 3)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        model = build_classifier("tiny", 3, weights=str(tmp_path / name))
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    # checkpoints of wrapped models (DDP "module." prefix, a "state_dict" entry) load the same
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "wrapped.pth")
    wrapped = build_classifier("tiny", 3, weights=str(tmp_path / "wrapped.pth"))
    assert all(torch.equal(a, b) for a, b in zip(wrapped.state_dict().values(), source.state_dict().values()))
    other_head = build_classifier("tiny", 5, weights=str(tmp_path / "w.pth"))  # head skipped, backbone kept
    assert torch.equal(other_head.stem[0].weight, source.stem[0].weight)
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read weights"):
        build_classifier("tiny", 3, weights=str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match="does not exist"):
        build_classifier("tiny", 3, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="do not fit this model"):
        build_classifier("resnet18", 3, weights=str(tmp_path / "w.pth"))
    # names that fit with shapes that do not: a one-line error, not a traceback
    torch.save({k: torch.cat([v, v]) for k, v in source.state_dict().items() if k.startswith("stem.") and v.ndim},
               tmp_path / "wide.pth")
    with pytest.raises(UserError, match="do not fit this model .*size mismatch"):
        build_classifier("tiny", 3, weights=str(tmp_path / "wide.pth"))
