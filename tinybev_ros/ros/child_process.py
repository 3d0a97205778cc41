"""Child processes that die with their parent, so a killed `tinybev run` leaves no node or recorder behind.

A SIGINT from the terminal reaches the whole foreground process group, and `tinybev run` stops its children in
order on any exit it sees. A SIGKILL of the parent is never seen: the kernel's parent-death signal (Linux
`prctl(PR_SET_PDEATHSIG)`) sends the child SIGTERM when its parent dies, and rclpy nodes shut down cleanly on
SIGTERM. The signal is armed by this module run as a tiny launcher that then execs the real command (it survives
exec), rather than by a `preexec_fn`, which is unsafe in a process that runs threads (rclpy does). The launcher
also gives the child SIGINT's default action back: a shell starts background commands (`tinybev run ... &`) with
SIGINT ignored, exec keeps it ignored, and SIGINT is how `tinybev run` asks a child to stop cleanly. (A Ctrl-C
in such a shell then stops the children; `tinybev run` sees them exit and stops in turn.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def spawn(command: list[str]) -> subprocess.Popen:
    """`subprocess.Popen(command)` whose process receives SIGTERM when this process dies, however it dies."""
    if not sys.platform.startswith("linux"):
        return subprocess.Popen(command)
    process = subprocess.Popen([sys.executable, "-m", __name__, str(os.getpid()), *command])
    process.args = command  # what it runs (for messages), not the launcher in front of it
    return process


def main() -> None:
    parent, command = int(sys.argv[1]), sys.argv[2:]
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
