"""The build hook that generates the gRPC modules from ``dwray.proto`` (grpcio-tools' protoc).

``dwray_pb2.py`` and ``dwray_pb2_grpc.py`` are build products, never committed:
``pyproject.toml`` names :class:`BuildPyWithProto` as setuptools' ``build_py``
(``[tool.setuptools.cmdclass]``) and lists ``grpcio-tools`` in
``[build-system] requires``, so every build generates them from the ``.proto``
next to this file:

- ``pip install .`` (a wheel): into the build directory, so they ship in the wheel;
- ``pip install -e .`` (editable, PEP 660): into the source tree, where the
  editable install finds them (and ``.gitignore`` keeps them out of git).

``python dwray/proto/build.py`` regenerates them in the source tree by hand
(after editing the ``.proto`` in an editable checkout).

setuptools loads this file by its path, without importing ``dwray`` (whose
dependencies the isolated build environment does not have): it may import only
the standard library, setuptools and, when it runs, ``grpc_tools``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from setuptools.command.build_py import build_py

__all__ = ["PROTO", "BuildPyWithProto", "generate"]

#: the definitions, relative to the project root (the folder holding ``dwray/``)
PROTO = "dwray/proto/dwray.proto"
GENERATED = ("dwray/proto/dwray_pb2.py", "dwray/proto/dwray_pb2_grpc.py")


def generate(root: Path, out: Path) -> list[Path]:
    """Run protoc on ``root/PROTO``, writing the modules under ``out`` (``out/dwray/proto/...``).

    The include path is ``root``, so the generated service module imports
    ``from dwray.proto import dwray_pb2``, the package's absolute name.
    Raises ``RuntimeError`` with protoc's exit code when it fails (its messages
    are on stderr).
    """
    from importlib.resources import files

    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    well_known = str(files("grpc_tools") / "_proto")  # google/protobuf/*.proto
    code = protoc.main(["grpc_tools.protoc", f"-I{root}", f"-I{well_known}", f"--python_out={out}",
                        f"--grpc_python_out={out}", str(root / PROTO)])
    if code != 0:
        raise RuntimeError(f"protoc failed on {root / PROTO} (exit code {code}; its messages are above)")
    return [out / name for name in GENERATED]


class BuildPyWithProto(build_py):
    """setuptools' ``build_py``, plus the gRPC modules generated from ``dwray/proto/dwray.proto``."""

    def run(self) -> None:
        super().run()
        root = Path.cwd()  # setuptools runs every command from the project root
        self._generated = generate(root, root if self.editable_mode else Path(self.build_lib))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [str(Path(self.build_lib) / name) for name in GENERATED]
        return outputs


if __name__ == "__main__":
    project = Path(__file__).resolve().parents[2]
    for path in generate(project, project):
        print(path, file=sys.stderr)
