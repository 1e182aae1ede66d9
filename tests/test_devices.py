"""Compute dtypes: bf16 only where the hardware runs it fast."""

import pytest
import torch

from vqclip import devices
from vqclip.errors import ConfigError


@pytest.mark.parametrize("fast", [True, False])
def test_cpu_bf16_follows_the_hardware(monkeypatch, fast):
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast)
    cpu = torch.device("cpu")
    assert devices.resolve_precision("auto", cpu) == (torch.bfloat16 if fast else torch.float32)
    # An explicit choice is kept whatever the hardware.
    assert devices.resolve_precision("bf16", cpu) == torch.bfloat16
    assert devices.resolve_precision("fp32", cpu) == torch.float32


def test_fp16_on_cpu_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="fp16"):
        devices.resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="choose auto"):
        devices.resolve_precision("half", torch.device("cpu"))


def test_constants_are_made_once_per_device_and_value():
    constant = devices.constant
    a = constant(((1, 2), (3, 4)), "cpu")
    assert a.dtype == torch.float32 and a.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert constant([[1, 2], [3, 4]], torch.device("cpu")) is a  # lists and tuples alike
    assert constant(((1, 2), (3, 5)), "cpu") is not a
    assert constant(((1, 2), (3, 4)), "cpu", torch.float64).dtype == torch.float64


def test_cpu_description_names_the_model_and_its_fastest_matrix_feature():
    amx = "model name\t: Intel Xeon 8480\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n"
    cpu = devices.cpu_description(amx)
    assert cpu["model"] == "Intel Xeon 8480" and cpu["best"] == "amx_bf16"
    epyc = devices.cpu_description("model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n")
    assert (epyc["best"], epyc["features"]) == ("avx2", ["avx2"])
    assert devices.cpu_description("flags\t: fpu\n")["best"] == "none"
