"""`tinybev_node`'s entry point (the console script and `tinybev run` start the node through it).

A Ctrl-C that lands while the node is still importing its libraries (torch alone takes seconds) ends the process
quietly with 130, as one that lands later does, instead of printing an import traceback.
"""

from __future__ import annotations

import sys


def main(args: list[str] | None = None) -> None:
    try:
        from tinybev_ros.ros.perception_node import main as run_node
    except KeyboardInterrupt:
        sys.exit(130)
    run_node(args)


if __name__ == "__main__":
    main()
