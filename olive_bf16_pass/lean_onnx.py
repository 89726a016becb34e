"""``onnx``'s protobuf classes and C++ checker, without paying for ``import onnx`` until more is used.

``import onnx`` runs ``onnx/__init__.py``, which imports ml_dtypes, and ml_dtypes 0.7.0 registers
its numpy loops at import: 0.38-0.42 s on our 2-core machines (0.6.0: 4 ms), most of a conversion's
start and more than everything else a command imports. A conversion needs the protobuf classes
(``onnx_ml_pb2``) and the C++ extension (checker, shape inference), neither of which imports
ml_dtypes. They are loaded here under their own names, so a later ``import onnx`` (ours or anyone's)
reuses the very same modules: the same classes, one descriptor-pool entry. Anything else falls
through to the real package, imported on first use: ``from olive_bf16_pass import lean_onnx as onnx``
reads like ``import onnx`` and is the real thing wherever it is touched beyond the classes.

When onnx is already imported (Olive, a notebook), or its layout is not the one expected, this is
just ``import onnx``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

_PROTO = "onnx.onnx_ml_pb2"
_EXTENSION = "onnx.onnx_cpp2py_export"
_MAXIMUM_PROTOBUF = 2**31  # onnx.checker's limit for a model checked from memory


def _full() -> ModuleType:
    import onnx

    _bind(onnx)
    return onnx


def _bind(package: ModuleType) -> None:
    """Bind the modules loaded here onto the onnx package, as a plain import binds them (one found
    already in sys.modules is not)."""
    for name in (_PROTO, _EXTENSION):
        if name in sys.modules and not hasattr(package, name.rpartition(".")[2]):
            setattr(package, name.rpartition(".")[2], sys.modules[name])


def _load(name: str, path: str, loader=None) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _lean_parts() -> tuple[ModuleType, ModuleType] | None:
    """onnx_ml_pb2 and the C++ extension, loaded without onnx/__init__.py; None to import onnx whole."""
    if "onnx" in sys.modules or os.environ.get("OLIVE_BF16_FULL_ONNX"):
        return None
    try:
        spec = importlib.util.find_spec("onnx")
        folder = next(iter(spec.submodule_search_locations or []))
        proto = sys.modules.get(_PROTO) or _load(_PROTO, os.path.join(folder, "onnx_ml_pb2.py"))
        extension = sys.modules.get(_EXTENSION)
        if extension is None:
            prefix = _EXTENSION.rpartition(".")[2] + "."
            suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
            (file,) = [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(suffixes)]
            path = os.path.join(folder, file)
            extension = _load(_EXTENSION, path, importlib.machinery.ExtensionFileLoader(_EXTENSION, path))
        if not any(isinstance(f, _BindOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _BindOnImport())
        return proto, extension
    except Exception:  # noqa: BLE001 - another layout: the whole package will do
        return None


class _BindOnImport(importlib.abc.MetaPathFinder):
    """Whoever imports onnx later gets a package with the modules loaded here bound as attributes,
    as a plain import binds them (a module found already in sys.modules is not)."""

    def find_spec(self, name, path=None, target=None):
        if name != "onnx":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Binding(spec.loader)
        return spec


class _Binding(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self._loader
        _bind(module)

    def __getattr__(self, name: str):  # get_source, get_code, ... as the real loader has them
        return getattr(self._loader, name)


class _Checker:
    """``onnx.checker.check_model`` for a model in memory, as onnx's Python wrapper calls the C++ one."""

    def __init__(self, extension: ModuleType):
        self._c = extension.checker
        self.ValidationError = self._c.ValidationError

    def check_model(self, model, full_check: bool = False, skip_opset_compatibility_check: bool = False,
                    check_custom_domain: bool = False) -> None:
        if isinstance(model, (str, os.PathLike)):
            return _full().checker.check_model(model, full_check, skip_opset_compatibility_check, check_custom_domain)
        data = model if isinstance(model, bytes) else model.SerializeToString()
        if len(data) > _MAXIMUM_PROTOBUF:
            raise ValueError("This protobuf of onnx model is too large (>2GiB). Call check_model with model path instead.")
        self._c.check_model(data, full_check, skip_opset_compatibility_check, check_custom_domain)

    def __getattr__(self, name: str):
        return getattr(_full().checker, name)


class _ShapeInference:
    def __init__(self, extension: ModuleType):
        self.InferenceError = extension.shape_inference.InferenceError

    def __getattr__(self, name: str):
        return getattr(_full().shape_inference, name)


_parts = _lean_parts()
if _parts is None:
    _onnx = _full()
    ModelProto, GraphProto, NodeProto, TensorProto = _onnx.ModelProto, _onnx.GraphProto, _onnx.NodeProto, _onnx.TensorProto
    checker, shape_inference = _onnx.checker, _onnx.shape_inference
else:
    _proto, _extension = _parts
    ModelProto, GraphProto, NodeProto, TensorProto = _proto.ModelProto, _proto.GraphProto, _proto.NodeProto, _proto.TensorProto
    checker, shape_inference = _Checker(_extension), _ShapeInference(_extension)
    for _name in ("AttributeProto", "FunctionProto", "ValueInfoProto", "SparseTensorProto", "StringStringEntryProto",
                  "OperatorSetIdProto", "TypeProto", "TensorShapeProto"):
        globals()[_name] = getattr(_proto, _name)


def __getattr__(name: str):
    """Everything else is the real onnx's (imported now, once)."""
    if name.startswith("__") and name != "__version__":  # __path__, __wrapped__...: what tools probe modules for
        raise AttributeError(name)
    return getattr(_full(), name)
