"""The protoc-generated modules of the gateway's contract.

A built package (``pip install clients/python``) carries them in ``switchboard_client._proto``,
generated from a copy of the .proto when the package was built. A source checkout has no
``_proto``: there ``_stubs`` (not part of the built package) generates them into the build tree.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

_BUILT = (Path(__file__).resolve().parent / "_proto").is_dir()


def _source_stubs() -> Any:
    return importlib.import_module(__package__ + "._stubs")


def _load() -> tuple[ModuleType, ModuleType]:
    if _BUILT:
        base = __package__ + "._proto.switchboard.v1."
        return (importlib.import_module(base + "switchboard_pb2"),
                importlib.import_module(base + "switchboard_pb2_grpc"))
    return _source_stubs().load()  # type: ignore[no-any-return]


def load_health() -> tuple[Any, Any]:
    """(health_pb2, health_pb2_grpc), or (None, None) when grpc-proto was not there."""
    if _BUILT:
        base = __package__ + "._proto.grpc.health.v1."
        try:
            return (importlib.import_module(base + "health_pb2"),
                    importlib.import_module(base + "health_pb2_grpc"))
        except ImportError:
            return None, None
    return _source_stubs().load_health()  # type: ignore[no-any-return]


# Typed as Any: the generated modules carry no annotations.
pb2: Any
pb2_grpc: Any
pb2, pb2_grpc = _load()
