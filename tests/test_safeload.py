import argparse
import importlib
import os
import pickle
import sys
from collections import OrderedDict

import pytest
import torch

from vqclip.errors import CheckpointError, WeightsNotFoundError
from vqclip.safeload import ForeignObject, load_torch_checkpoint

# A module whose import, and whose objects' unpickling, each leave a marker file behind.
HOSTILE_MODULE = """\
import pathlib

MARKERS = pathlib.Path({markers!r})
(MARKERS / "imported").write_text("module code ran")


def touch(name):
    (MARKERS / name).write_text("function ran")


class Payload:
    def __reduce__(self):
        return (touch, ("reduce",))


class Stateful:
    def __init__(self):
        self.note = "setstate"

    def __setstate__(self, state):
        (MARKERS / state["note"]).write_text("__setstate__ ran")


class MkdirPayload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.mkdir, (self.path,))
"""


@pytest.fixture
def hostile_checkpoint(tmp_path, monkeypatch):
    """A Lightning-like checkpoint whose pickle would run code if unpickled naively.

    The hostile module stays importable (on sys.path) but is not imported when loading
    starts, so any import, call or __setstate__ during loading leaves a marker file.
    """
    markers = tmp_path / "markers"
    markers.mkdir()
    (tmp_path / "hostile_mod_vqclip.py").write_text(HOSTILE_MODULE.format(markers=str(markers)))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    hostile = importlib.import_module("hostile_mod_vqclip")
    state_dict = OrderedDict(w=torch.randn(3, 4), b=torch.arange(5))
    ckpt = {
        "epoch": 7,
        "state_dict": state_dict,
        "callbacks": {hostile.Stateful: {"best_model_path": "x"}},
        "hyper_parameters": argparse.Namespace(lr=1e-4),
        "payload": hostile.Payload(),
        "stateful": hostile.Stateful(),
        "mkdir": hostile.MkdirPayload(str(tmp_path / "made_by_pickle")),
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    del sys.modules["hostile_mod_vqclip"]
    for marker in markers.iterdir():
        marker.unlink()
    return path, state_dict, markers


def test_weights_only_torch_load_refuses_it(hostile_checkpoint):
    path, _, _ = hostile_checkpoint
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_foreign_objects_become_inert_placeholders(hostile_checkpoint):
    path, state_dict, markers = hostile_checkpoint
    out = load_torch_checkpoint(path)

    assert list(markers.iterdir()) == []
    assert "hostile_mod_vqclip" not in sys.modules
    assert not (path.parent / "made_by_pickle").exists()

    assert out["epoch"] == 7
    assert out["state_dict"].keys() == state_dict.keys()
    for key, value in state_dict.items():
        assert torch.equal(out["state_dict"][key], value)

    payload, stateful, mkdir = out["payload"], out["stateful"], out["mkdir"]
    assert isinstance(payload, ForeignObject)
    assert (payload.module, payload.name, payload.args) == (
        "hostile_mod_vqclip",
        "touch",
        ("reduce",),
    )
    assert (stateful.module, stateful.name, stateful.state) == (
        "hostile_mod_vqclip",
        "Stateful",
        {"note": "setstate"},
    )
    assert (mkdir.module, mkdir.name) == (os.mkdir.__module__, "mkdir")
    assert mkdir.args == (str(path.parent / "made_by_pickle"),)
    assert out["hyper_parameters"].state == {"lr": 1e-4}
    (callback_class,) = out["callbacks"]
    assert issubclass(callback_class, ForeignObject) and callback_class.name == "Stateful"


def test_legacy_non_zip_format_is_loaded_safely(tmp_path, hostile_checkpoint):
    _, state_dict, markers = hostile_checkpoint
    # Re-save the same objects in torch's pre-1.6 format (placeholders pickle as themselves
    # would defeat the test, so build the checkpoint again from the real classes).
    hostile = importlib.import_module("hostile_mod_vqclip")
    (markers / "imported").unlink()
    legacy = tmp_path / "legacy.pt"
    torch.save(
        {"state_dict": state_dict, "payload": hostile.Payload()},
        legacy,
        _use_new_zipfile_serialization=False,
    )
    del sys.modules["hostile_mod_vqclip"]
    out = load_torch_checkpoint(legacy)
    assert list(markers.iterdir()) == []
    assert torch.equal(out["state_dict"]["w"], state_dict["w"])
    assert isinstance(out["payload"], ForeignObject)


@pytest.mark.parametrize("foreign", [False, True], ids=["weights-only", "restricted"])
def test_tensor_types_survive_either_path(tmp_path, foreign):
    sd = {
        "w": torch.randn(2, 2).half(),
        "p": torch.nn.Parameter(torch.ones(3)),
        "u": torch.arange(4).to(torch.uint16),  # saved as an untyped storage
    }
    ckpt = {"state_dict": sd, "dtype": torch.bfloat16, "size": torch.Size([1, 2]), "s": {1}}
    if foreign:
        ckpt["hparams"] = argparse.Namespace(lr=1)
    torch.save(ckpt, tmp_path / "a.pt")
    out = load_torch_checkpoint(tmp_path / "a.pt")
    for key, value in sd.items():
        assert out["state_dict"][key].dtype == value.dtype
        assert torch.equal(out["state_dict"][key], value)
    assert isinstance(out["state_dict"]["p"], torch.nn.Parameter)
    assert out["dtype"] is torch.bfloat16 and out["size"] == torch.Size([1, 2])
    assert out["s"] == {1}


def test_missing_corrupt_and_non_dict_files(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"absent\.ckpt"):
        load_torch_checkpoint(tmp_path / "absent.ckpt")

    torch.save({"w": torch.zeros(1000)}, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt"):
        load_torch_checkpoint(tmp_path / "truncated.ckpt")

    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.ckpt"):
        load_torch_checkpoint(tmp_path / "text.ckpt")

    torch.save([torch.zeros(1)], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="list"):
        load_torch_checkpoint(tmp_path / "list.ckpt")


def test_torchscript_archive_is_refused(tmp_path):
    import zipfile

    path = tmp_path / "scripted.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with zipfile.ZipFile(path, "a") as archive:  # what marks a TorchScript archive
        archive.writestr("scripted/constants.pkl", b"")
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_torch_checkpoint(path)


def _binunicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data


def test_pickle_cannot_alter_torch_functions_it_names(tmp_path):
    # Hand-made pickle: name torch's tensor-rebuild function, BUILD slot state onto it (which
    # setattr()s __doc__ on whatever object it gets), drop it, and return {"ok": 1}.
    target = torch._utils._rebuild_tensor_v2
    doc = target.__doc__
    obj = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n"
        + b"N}"
        + _binunicode("__doc__")
        + _binunicode("altered")
        + b"s\x86b0}"
        + _binunicode("ok")
        + b"K\x01s."
    )
    # torch's pre-1.6 format: magic number, protocol, sys info, object, storage keys.
    header = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001})
    )
    path = tmp_path / "crafted.pt"
    path.write_bytes(header + obj + pickle.dumps([], protocol=2))
    assert load_torch_checkpoint(path) == {"ok": 1}
    assert target.__doc__ == doc
