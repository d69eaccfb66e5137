"""The integrations stay out of the way: `import router` loads none of them, and the package
itself loads no framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["langchain_core", "langchain_classic", "llama_index", "haystack", "ray"]


def _loaded(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r} or m.startswith('router.integrations'))))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    return list(json.loads(out.stdout))


def test_import_router_loads_no_integration():
    assert _loaded("import router, router.batch") == []


def test_the_integrations_package_loads_no_framework():
    assert _loaded("import router.integrations") == ["router.integrations"]
