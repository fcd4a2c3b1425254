"""``python -m tests.cli.without_opencv ARGS``: the ``espdetect`` CLI with OpenCV made unimportable,
as in the container image, which leaves it out."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class _NoOpenCV(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name == "cv2" or name.startswith("cv2."):
            raise ModuleNotFoundError(
                f"No module named {name!r} (blocked: the image has no OpenCV)", name=name
            )
        return None


def main() -> int:
    sys.meta_path.insert(0, _NoOpenCV())
    from espdetect.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
