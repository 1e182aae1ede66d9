"""Load PyTorch checkpoints without running code stored in them.

A pickle can name any importable function and have the loader call it. Published taming
checkpoints are PyTorch Lightning pickles holding, besides tensors, callbacks, optimizer
state and hyper-parameter objects (ModelCheckpoint, argparse.Namespace, omegaconf
DictConfig), which torch's `weights_only=True` loader refuses. We first try that loader; if
it refuses a global, we unpickle again with an allowlist of tensor-rebuilding functions and
plain containers, and every other global becomes an inert `ForeignObject` stand-in: its
module is never imported and nothing it names is ever called.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import os
import pickle
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from vqclip.errors import CheckpointError, WeightsNotFoundError


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a checkpoint may name: tensor/storage rebuilding, dtypes, plain containers."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "bytes"): bytes,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        # protocol-2 pickles (torch's default) store bytes as _codecs.encode(str, "latin1")
        ("_codecs", "encode"): _codecs.encode,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    for name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
    ):
        if hasattr(torch._utils, name):
            allowed["torch._utils", name] = getattr(torch._utils, name)
    for value in vars(torch).values():
        if isinstance(value, torch.dtype):
            module, _, name = str(value).rpartition(".")  # "torch.float32"
            allowed[module, name] = value
    return allowed


class ForeignObject:
    """Stand-in for an object of a class (or a call of a function) a checkpoint names.

    Records what the pickle asked for and never runs any of it: `module` and `name` of the
    global, the positional `args` and `kwargs` it was to be called with, the `state` it was to
    receive, and any list `items` or dict `entries` appended to it.
    """

    module: str = ""
    name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> ForeignObject:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        obj.items, obj.entries = [], []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded the arguments; pickle's NEWOBJ never calls __init__

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries.append((key, value))

    def __repr__(self) -> str:
        return f"<ForeignObject {self.module}.{self.name}>"


def _foreign_class(module: str, name: str) -> type[ForeignObject]:
    qualname = f"ForeignObject[{module}.{name}]"
    attrs = {"module": module, "name": name, "__module__": __name__, "__qualname__": qualname}
    return type(name, (ForeignObject,), attrs)


class _UntypedStorageTag:
    """All torch's storage loader asks of `torch.UntypedStorage`: its elements are bytes."""

    dtype = torch.uint8


def _fresh_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return call


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = _allowed_globals()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._foreign: dict[tuple[str, str], type[ForeignObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Never pickle's own find_class: it imports `module`, which can run code.
        # Protocol-2 pickles (torch's default) use Python 2 names, e.g. __builtin__.set.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[module, name]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if name == "UntypedStorage" and module in ("torch", "torch.storage"):
            return _UntypedStorageTag()
        found = self._allowed.get((module, name))
        if found is None:
            key = (module, name)
            if key not in self._foreign:
                self._foreign[key] = _foreign_class(module, name)
            return self._foreign[key]
        # A pickle can set attributes (even __defaults__) on any object it names; hand it a
        # throwaway wrapper so it cannot change torch's own functions for later loads.
        return _fresh_wrapper(found) if isinstance(found, types.FunctionType) else found


def _restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load takes a "pickle module": anything with `Unpickler` and `load`. torch subclasses
# our Unpickler to add its own storage handling (persistent_load), which calls nothing foreign.
_restricted_pickle = types.ModuleType("vqclip_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]


def _zip_records(path: Path) -> list[str] | None:
    """Record names of a zip-format checkpoint (torch >= 1.6), None for the legacy format."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile:
        return None


def load_torch_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a torch.save / PyTorch Lightning file onto the CPU without executing its pickle.

    Returns the top-level dict. Objects of classes outside the allowlist come back as
    `ForeignObject` instances (tensors and plain containers come back as themselves).
    Zip-format files are memory-mapped, so optimizer states that are never used are never
    read. Raises WeightsNotFoundError if `path` does not exist, CheckpointError if it is
    unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint {path} does not exist")
    records = _zip_records(path)
    # torch.load hands TorchScript archives to torch.jit.load; never go there.
    if records is not None and any(r.endswith("/constants.pkl") for r in records):
        raise CheckpointError(f"{path} is a TorchScript archive, not a checkpoint")
    load_args: dict[str, Any] = {"map_location": "cpu", "mmap": records is not None}
    try:
        try:
            obj = torch.load(path, weights_only=True, **load_args)
        except pickle.UnpicklingError:
            obj = torch.load(
                path, weights_only=False, pickle_module=_restricted_pickle, **load_args
            )
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (corrupt or truncated?): {e}"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict")
    return obj
