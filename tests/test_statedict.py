import pytest
import torch
from torch import nn

from vqclip.errors import CheckpointError
from vqclip.statedict import load_strict


def test_load_strict_lists_missing_unexpected_and_shapes():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sd = dict(model.state_dict())
    del sd["1.bias"]
    sd["0.weight"] = torch.zeros(5, 3)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_strict(model, sd, source="demo.ckpt")
    msg = str(err.value)
    assert "demo.ckpt" in msg
    assert "1.bias" in msg and "extra.weight" in msg
    assert "0.weight: checkpoint (5, 3) vs model (4, 3)" in msg


def test_load_strict_loads_matching_weights():
    src, dst = nn.Linear(3, 4), nn.Linear(3, 4)
    load_strict(dst, src.state_dict(), source="x")
    assert torch.equal(dst.weight, src.weight)
