"""``vaultctl`` starts without the web framework: every command (and each extract worker's parent) pays its import.

FastAPI and Starlette take about a fifth of a second to import here; only
``vaultctl serve`` needs them, and it imports the app when it runs. The
command line's own modules name what they share with the API (the development
token issuer, for one) from modules that do not import it.
"""

from __future__ import annotations

import subprocess
import sys


def test_the_command_line_imports_no_web_framework() -> None:
    code = "import sys\nimport api.cli.main\nprint('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())

    assert "api" in loaded  # the import ran
    assert not loaded & {"fastapi", "starlette"}
