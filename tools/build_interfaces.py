"""Build the ROS 2 interface packages the environment lacks from `interfaces/` into the venv.

The ROS 2 wheels on the package index have no vision_msgs, tf2_msgs or autoware_perception_msgs. Our `.msg`
files match upstream field for field, so the type hashes (RIHS01) equal those of a system install and our nodes
talk to everyone else's. A package that already imports (system ROS 2, or built before) is left alone, which
makes a second run a no-op.

Snags handled (measured, see shared/notes/ros2-from-pypi.md): the wheels' CMake files name their build
image's Python and numpy include dirs; AMENT_PREFIX_PATH must name the venv at configure time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INTERFACES = REPO / "interfaces"
# The message each package must provide once built; importing it proves the typesupport loads.
PROBES = {"vision_msgs": "Detection3DArray", "tf2_msgs": "TFMessage", "autoware_perception_msgs": "PredictedObjects"}
# the wheels' build image's interpreter, one per Python version (cp310-cp310, cp311-cp311, ...)
WHEEL_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
WHEEL_NUMPY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_?core/include")


def importable(package: str) -> bool:
    """True if `package.msg` imports in a fresh interpreter (this one may have stale import caches)."""
    code = f"from {package}.msg import {PROBES[package]}"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def numpy_include() -> str:
    import numpy

    return numpy.get_include()


def fix_wheel_cmake_paths(prefix: Path) -> int:
    """Point the wheels' CMake exports at this interpreter's Python and numpy headers."""
    replacements = {WHEEL_PYTHON_INCLUDE: sysconfig.get_paths()["include"], WHEEL_NUMPY_INCLUDE: numpy_include()}
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        new = text
        for old, repl in replacements.items():
            new = old.sub(lambda _, repl=repl: repl, new)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    return changed


def build(package: str, prefix: Path, jobs: int) -> None:
    source = INTERFACES / package
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(filter(None, [str(prefix), env.get("AMENT_PREFIX_PATH")]))
    env["CMAKE_PREFIX_PATH"] = str(prefix)
    cmake = shutil.which("cmake") or str(Path(sys.executable).parent / "cmake")
    with tempfile.TemporaryDirectory(prefix=f"build_{package}_") as build_dir:
        configure = [
            cmake, "-S", str(source), "-B", build_dir,
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            f"-DCMAKE_PREFIX_PATH={prefix}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DBUILD_TESTING=OFF",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        steps = [configure, [cmake, "--build", build_dir, "-j", str(jobs)], [cmake, "--install", build_dir]]
        for step in steps:
            result = subprocess.run(step, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
                raise SystemExit(f"building {package} failed at: {' '.join(step[:3])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix), help="install prefix (the venv)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    missing = [p for p in PROBES if not importable(p)]
    if not missing:
        print(f"interfaces: {', '.join(PROBES)} present; nothing to build")
        return
    fixed = fix_wheel_cmake_paths(args.prefix)
    if fixed:
        print(f"interfaces: pointed {fixed} wheel CMake files at this Python's headers")
    for package in missing:
        print(f"interfaces: building {package} from {INTERFACES / package} ...", flush=True)
        build(package, args.prefix, args.jobs)
        if not importable(package):
            raise SystemExit(f"{package} built but `from {package}.msg import {PROBES[package]}` still fails")
        print(f"interfaces: {package} installed into {args.prefix}")


if __name__ == "__main__":
    main()
