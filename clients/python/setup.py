"""Builds switchboard_client with its gRPC stubs.

build_py copies the gateway's .proto (and grpc-proto's health.proto, when installed) into the
built package as ``switchboard_client/_proto/...`` and runs ``python3 -m grpc_tools.protoc``
(Debian's python3-grpc-tools) on that copy, so the wheel carries the contract it was built
from and its generated modules, and nothing is generated at import time. The .proto comes from
SWITCHBOARD_PROTO_DIR, else the repository's proto/ (a build from the source tree), else the
copy an sdist carries in proto/ (sdist puts it there).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
CONTRACT = Path("switchboard") / "v1" / "switchboard.proto"
HEALTH = Path("grpc") / "health" / "v1" / "health.proto"
HEALTH_DIR = Path(os.environ.get("SWITCHBOARD_HEALTH_PROTO_DIR", "/usr/share/grpc-proto"))
PACKAGE_PROTO = Path("switchboard_client") / "_proto"
# Only a source checkout generates stubs at import time; the built package never does.
SOURCE_ONLY_MODULES = {"_stubs"}


def proto_root():
    """The directory holding switchboard/v1/switchboard.proto."""
    candidates = []
    if os.environ.get("SWITCHBOARD_PROTO_DIR"):
        candidates.append(Path(os.environ["SWITCHBOARD_PROTO_DIR"]))
    candidates += [HERE.parent.parent / "proto", HERE / "proto"]
    for candidate in candidates:
        if (candidate / CONTRACT).is_file():
            return candidate
    raise SystemExit(f"switchboard-client: {CONTRACT} not found in any of "
                     f"{', '.join(map(str, candidates))} (set SWITCHBOARD_PROTO_DIR)")


def generate(build_lib):
    """Copies the .proto files into build_lib's package and generates their modules there."""
    build_lib = Path(build_lib)
    shutil.rmtree(build_lib / PACKAGE_PROTO, ignore_errors=True)
    sources = [(proto_root() / CONTRACT, CONTRACT)]
    if (HEALTH_DIR / HEALTH).is_file():
        sources.append((HEALTH_DIR / HEALTH, HEALTH))
    for source, relative in sources:
        copy = build_lib / PACKAGE_PROTO / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        # Generated with the package as the include root, so that the generated modules import
        # one another as switchboard_client._proto.... and add no top-level package.
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{build_lib}",
                   f"--python_out={build_lib}", f"--grpc_python_out={build_lib}",
                   str(PACKAGE_PROTO / relative)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"switchboard-client: {' '.join(command)} failed "
                             f"(is python3-grpc-tools installed?): {done.stderr.strip()}")
        directory = copy.parent
        while directory != build_lib / "switchboard_client":
            (directory / "__init__.py").touch()
            directory = directory.parent


class BuildPyWithStubs(build_py):
    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "switchboard_client"
                                           and m[1] in SOURCE_ONLY_MODULES)]

    def run(self):
        super().run()
        generate(self.build_lib)


class SdistWithProto(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        copy = Path(base_dir) / "proto" / CONTRACT
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(proto_root() / CONTRACT, copy)


setup(packages=["switchboard_client"], package_data={"switchboard_client": ["py.typed"]},
      cmdclass={"build_py": BuildPyWithStubs, "sdist": SdistWithProto})
