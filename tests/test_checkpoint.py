"""Checkpoint loading: official key layout, strict load, variant detection, safety, one-line errors."""
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from rmpsam_edge.checkpoint import count_parameters, detect_variant, load_checkpoint, load_vocabulary, read_state_dict
from rmpsam_edge.errors import UserError
from rmpsam_edge.modeling import build_model

from _model_helpers import model_shapes, official_keys, seeded_state_dict, write_mmengine_checkpoint


def test_r50_keys_and_shapes_match_official_list():
    ref = official_keys()
    ours = {k: list(v.shape) for k, v in build_model("r50").state_dict().items()}
    theirs = {e["key"]: e["shape"] for e in ref["keys"]}
    assert set(ours) == set(theirs)
    assert all(ours[k] == theirs[k] for k in ours), [k for k in ours if ours[k] != theirs[k]][:5]
    assert len(ours) == ref["info"]["num_state_dict_keys"] == 568


def test_classifier_buffers_are_not_persistent():
    m = build_model("r18", class_embed=torch.nn.functional.normalize(torch.randn(5, 2, 768), dim=-1))
    assert m.panoptic_head.fc_cls.shape == (768, 6, 2)
    assert not any("fc_cls" in k for k in m.state_dict())
    assert torch.all(m.panoptic_head.fc_cls[:, -1] == 0)  # zero background class, last


@pytest.mark.parametrize("variant,expected", [("r18", 20.83e6), ("r50", 47.25e6)])
def test_parameter_counts(variant, expected):
    n = count_parameters(build_model(variant))
    assert abs(n - expected) < 0.005e6, n
    if variant == "r50":
        assert n == official_keys()["info"]["params_trainable"]


@pytest.fixture(scope="module")
def r18_ckpt(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ck") / "r18.pth")
    return write_mmengine_checkpoint(path, seeded_state_dict(model_shapes("r18")))


def test_strict_load_of_official_format_checkpoint(r18_ckpt):
    model, info = load_checkpoint(r18_ckpt)
    assert info["variant"] == "r18" and info["parameters"] == 20827445 and len(info["sha256"]) == 64
    sd = torch.load(r18_ckpt, weights_only=True)["state_dict"]
    for k in ("backbone.layer3.1.conv2.weight", "neck.deconv.deform_conv2.dcn.weight", "panoptic_head.prompt_iou.bias"):
        assert torch.equal(model.state_dict()[k], sd[k])


def test_variant_detection_from_shapes():
    assert detect_variant(seeded_state_dict(model_shapes("r18"))) == "r18"
    r50 = {e["key"]: torch.zeros(e["shape"]) for e in official_keys()["keys"][:40]}
    assert detect_variant(r50) == "r50"
    with pytest.raises(UserError, match="ConvNeXt"):
        detect_variant({"backbone.stem.0.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="not an RMP-SAM checkpoint"):
        detect_variant({"encoder.conv.weight": torch.zeros(1)})


def test_module_prefix_conv_cls_rename_and_fp16(tmp_path):
    sd = seeded_state_dict(model_shapes("r18"))
    renamed = {}
    for k, v in sd.items():
        k2 = k.replace("panoptic_head.panoptic_cls.", "panoptic_head.conv_cls.")
        renamed["module." + k2] = v.half() if v.is_floating_point() else v
    path = str(tmp_path / "odd.pth")
    torch.save(renamed, path)  # bare dict, DDP prefix, mmdet's conv_cls rename, FP16
    model, _ = load_checkpoint(path)
    w = model.panoptic_head.panoptic_cls[0].weight
    assert w.dtype == torch.float32
    assert torch.allclose(w, sd["panoptic_head.panoptic_cls.0.weight"].half().float())


def test_foreign_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    sd = seeded_state_dict(model_shapes("r18"))
    del sd["panoptic_head.prompt_iou.weight"]
    sd["panoptic_head.extra_branch.weight"] = torch.zeros(3)
    path = write_mmengine_checkpoint(str(tmp_path / "foreign.pth"), sd)
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "1 missing keys (panoptic_head.prompt_iou.weight)" in msg
    assert "1 unexpected keys (panoptic_head.extra_branch.weight)" in msg
    assert "\n" not in msg


def test_wrong_shape_is_reported(tmp_path):
    sd = seeded_state_dict(model_shapes("r18"))
    sd["panoptic_head.kernels.weight"] = torch.zeros(50, 256)
    with pytest.raises(UserError, match="wrong shape.*kernels"):
        load_checkpoint(write_mmengine_checkpoint(str(tmp_path / "s.pth"), sd))


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.pth"))
    bad = tmp_path / "text.pth"
    bad.write_text("hello, I am not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        load_checkpoint(str(bad))
    empty = tmp_path / "list.pth"
    torch.save([1, 2, 3], str(empty))
    with pytest.raises(UserError, match="no state_dict"):
        load_checkpoint(str(empty))


def test_mmengine_objects_in_meta_are_inert(tmp_path):
    """A checkpoint whose meta holds classes weights_only refuses (as mmengine's MessageHub) still loads."""
    mod = types.ModuleType("fake_mmengine_logging")

    class MessageHub(object):
        def __init__(self):
            self.log = {"loss": 1.0}
    MessageHub.__module__ = "fake_mmengine_logging"
    MessageHub.__qualname__ = "MessageHub"
    mod.MessageHub = MessageHub
    sys.modules["fake_mmengine_logging"] = mod
    try:
        sd = seeded_state_dict(model_shapes("r18"))
        path = str(tmp_path / "mm.pth")
        torch.save({"state_dict": sd, "message_hub": MessageHub(), "meta": {"np": np.float64(1.5)}}, path)
    finally:
        del sys.modules["fake_mmengine_logging"]
    sd2, meta = read_state_dict(path)
    assert set(sd2) == set(sd)


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    script = ("import os, torch\n"
              "class Evil:\n"
              "    def __reduce__(self):\n"
              "        return (os.system, ('touch %s',))\n"
              "torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(1)}, 'x': Evil()}, %r)\n"
              % (marker, str(path)))
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(UserError):
        load_checkpoint(str(path))  # not an RMP-SAM checkpoint, but nothing was executed on the way
    assert not marker.exists()


def test_vocabulary_formats_and_errors(tmp_path):
    emb = torch.nn.functional.normalize(torch.randn(133, 2, 768), dim=-1)
    p = str(tmp_path / "CocoPanopticOVDataset.pth")
    torch.save(emb, p)
    arr, names, num_things = load_vocabulary(p)
    assert arr.shape == (133, 2, 768) and arr.dtype == np.float32
    assert names[0] == "person" and names[80] == "banner" and num_things == 80
    np.save(str(tmp_path / "v.npy"), np.ones((3, 768), np.float32))
    (tmp_path / "v.json").write_text('{"class_names": ["a", "b", "c"], "num_things": 2}')
    arr, names, nt = load_vocabulary(str(tmp_path / "v.npy"))
    assert arr.shape == (3, 1, 768) and names == ["a", "b", "c"] and nt == 2
    torch.save(torch.zeros(4, 512), str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match=r"shape \(4, 512\).*768"):
        load_vocabulary(str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match="not found"):
        load_vocabulary(str(tmp_path / "none.pth"))
