"""A pickle reader that runs nothing from the file: only the classes these network formats need.

An official ProGAN pickle names `tfutil.Network` (TF) or `network.Network` (Theano) objects whose
`__setstate__` would `exec` the source code stored in the file (`build_module_src`). Here those
classes are replaced by inert stubs that only keep their state dict, NumPy arrays are rebuilt by
NumPy's own reconstructors, and every other class is refused with a one-line error naming it.
"""

from __future__ import annotations

import copyreg
import io
import pickle

import numpy as np

from progan.errors import UserError


class StateStub:
    """Stands in for a pickled object: keeps its `__setstate__` state, runs nothing."""

    module = ""
    name = ""

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.module}.{self.name} state>"


class TFNetwork(StateStub):
    module, name = "tfutil", "Network"


class TheanoNetwork(StateStub):
    module, name = "network", "Network"


class GanZooConfig(StateStub):
    """`models.utils.config.BaseConfig` of pytorch_GAN_zoo: a plain attribute bag."""

    module, name = "models.utils.config", "BaseConfig"

    def __setstate__(self, state: object) -> None:
        self.state = state if isinstance(state, dict) else {}


STUBS = {(cls.module, cls.name): cls for cls in (TFNetwork, TheanoNetwork, GanZooConfig)}


def _reconstructor(cls: type, base: type, state: object) -> object:
    """copyreg._reconstructor (protocol 0/1 pickles of plain objects), for the stubs only."""
    if not (isinstance(cls, type) and issubclass(cls, StateStub)) or base is not object or state is not None:
        raise pickle.UnpicklingError(f"refused to rebuild {cls!r} from {base!r}")
    return copyreg._reconstructor(cls, base, state)


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """_codecs.encode, which Python 3 protocol-2 pickles use for bytes."""
    return str(text).encode(str(encoding))


# NumPy moved numpy.core to numpy._core (2.0); pickles name either.
_core = np._core if hasattr(np, "_core") else np.core  # type: ignore[attr-defined]
_multiarray = _core.multiarray

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    # Protocol 5 (Python >= 3.8 re-saves) rebuilds arrays from a buffer.
    ("numpy.core.numeric", "_frombuffer"): _core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): dict,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("_codecs", "encode"): _encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) in STUBS:
            return STUBS[(module, name)]
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refused class {module}.{name}")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("refused a persistent id (a torch.save file is read by torch.load)")


def load_pickle(data: bytes, source: str) -> object:
    """Unpickle `data` (the bytes of file `source`) with only the allowed classes; UserError otherwise."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        msg = str(e)
        if msg.startswith("refused"):
            raise UserError(
                f"{source}: {msg}; only official ProGAN network pickles are read, and nothing in a "
                "file is run. Pass an official .pkl or a GAN zoo .pth"
            ) from None
        raise UserError(f"{source} is damaged or truncated ({msg}); download it again") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as e:
        raise UserError(
            f"{source} is damaged or truncated ({type(e).__name__}: {e}); download it again"
        ) from None
    return obj
