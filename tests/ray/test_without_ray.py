"""Without Ray installed (the core install), backend ray is one clear error naming the extra."""

from __future__ import annotations

import subprocess
import sys

# Ray made unimportable the way a missing package is (find_spec answers None).
_BLOCK_RAY = "import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None; "


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_RAY + code], capture_output=True, text=True, timeout=120
    )


def test_importing_the_backend_says_what_to_install() -> None:
    done = _run("import espdetect.ray")
    assert done.returncode != 0
    assert "ConfigurationError" in done.stderr and "pip install 'espdetect[ray]'" in done.stderr


def test_serve_with_backend_ray_exits_with_one_line() -> None:
    done = _run(
        "from espdetect.cli import main; "
        "sys.exit(main(['serve', '--backend', 'ray', '--camera', 'http://127.0.0.1:9/s', '--port', '0']))"
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'espdetect[ray]'" in done.stderr
    assert "Traceback" not in done.stderr
