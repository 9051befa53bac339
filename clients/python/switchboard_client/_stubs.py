"""Generates the gateway's stubs for a source checkout (never part of the built package).

A built package carries its stubs (see setup.py). In a source checkout the stubs are not
committed: they are generated from ``proto/switchboard/v1/switchboard.proto``
(and grpc-proto's ``health.proto``) with ``protoc`` and Debian's ``grpc_python_plugin`` into a
cache directory, by default ``<repo>/build/python-stubs``, or the directory named by the
environment variable ``SWITCHBOARD_PY_STUBS``. The directory is then put on ``sys.path``.
Stubs are regenerated when the .proto file is newer than them.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent.parent.parent

PROTO_DIR = Path(os.environ.get("SWITCHBOARD_PROTO_DIR", _REPO_ROOT / "proto"))
PROTO_FILE = Path("switchboard") / "v1" / "switchboard.proto"
HEALTH_DIR = Path(os.environ.get("SWITCHBOARD_HEALTH_PROTO_DIR",
                                 "/usr/share/grpc-proto/grpc/health/v1"))
PLUGIN = os.environ.get("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin")

# The generated files, relative to the stub directory.
_SWITCHBOARD_OUT = [PROTO_FILE.with_name("switchboard_pb2.py"),
                    PROTO_FILE.with_name("switchboard_pb2_grpc.py")]
_HEALTH_OUT = [Path("health_pb2.py"), Path("health_pb2_grpc.py")]


def stub_dir():
    """The directory the stubs live in (not necessarily existing yet)."""
    configured = os.environ.get("SWITCHBOARD_PY_STUBS")
    return Path(configured) if configured else _REPO_ROOT / "build" / "python-stubs"


def _protoc(include, proto, out):
    command = ["protoc", "-I", str(include), f"--python_out={out}", f"--grpc_out={out}",
               f"--plugin=protoc-gen-grpc={PLUGIN}", str(proto)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed ({' '.join(command)}): {done.stderr.strip()}")


def _stale(directory):
    source = PROTO_DIR / PROTO_FILE
    try:
        source_time = source.stat().st_mtime
    except FileNotFoundError:
        source_time = 0.0  # no .proto here: whatever was generated is all there is
    for relative in _SWITCHBOARD_OUT:
        target = directory / relative
        if not target.exists() or target.stat().st_mtime < source_time:
            return True
    if (HEALTH_DIR / "health.proto").exists():
        return any(not (directory / relative).exists() for relative in _HEALTH_OUT)
    return False


def generate(directory=None):
    """Generates the stubs into ``directory`` (default: stub_dir()) and returns it.

    Writes into a private temporary directory first, then moves each file into place with an
    atomic rename, so concurrent processes never import a half-written module.
    """
    directory = Path(directory) if directory else stub_dir()
    if not (PROTO_DIR / PROTO_FILE).exists():
        raise RuntimeError(f"cannot generate stubs: {PROTO_DIR / PROTO_FILE} not found "
                           "(set SWITCHBOARD_PROTO_DIR)")
    directory.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".stubs-", dir=directory))
    try:
        _protoc(PROTO_DIR, PROTO_DIR / PROTO_FILE, scratch)
        outputs = list(_SWITCHBOARD_OUT)
        if (HEALTH_DIR / "health.proto").exists():
            _protoc(HEALTH_DIR, HEALTH_DIR / "health.proto", scratch)
            outputs += _HEALTH_OUT
        for relative in outputs:
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / relative, directory / relative)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def load():
    """Makes the stubs importable and returns (switchboard_pb2, switchboard_pb2_grpc)."""
    directory = stub_dir()
    if _stale(directory):
        generate(directory)
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    from switchboard.v1 import switchboard_pb2, switchboard_pb2_grpc  # noqa: E402
    return switchboard_pb2, switchboard_pb2_grpc


def load_health():
    """Returns (health_pb2, health_pb2_grpc), or (None, None) when grpc-proto is absent."""
    load()
    try:
        import health_pb2  # noqa: E402
        import health_pb2_grpc  # noqa: E402
    except ImportError:
        return None, None
    return health_pb2, health_pb2_grpc
