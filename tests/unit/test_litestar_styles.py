"""Every service's app builds without a Litestar deprecation warning, so a handler written in a style that stops
working in Litestar 3 (an inferred dependency, path or query parameter, `Parameter(query=)`, a `data` without a
body marker) fails the suite the day it is written (docs/decisions/0016-explicit-litestar-parameters.md)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Every service with an app module, so a new service is checked without editing this list.
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "app.py").is_file())

# Run in a fresh interpreter: a `Parameter(...)` in a module-level alias warns when its module is imported, which
# another test in this process may already have done; and the error filters stay out of the other tests.
# Litestar warns with LitestarDeprecationWarning, and with a plain DeprecationWarning from its own modules (the
# `Parameter(query=...)` family): both are errors here.
BUILD_EVERY_APP = r"""
import importlib, sys, warnings
from litestar.exceptions import LitestarDeprecationWarning
from libs.events.settings import load_settings

warnings.simplefilter("error", LitestarDeprecationWarning)
warnings.filterwarnings("error", category=DeprecationWarning, module=r"litestar(\.|$)")
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(f"services.{name}.app").create_app(load_settings({}, service=name))
    except DeprecationWarning as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_services_are_found():
    assert {"gateway", "planner", "executor", "scheduler", "notifier", "relay"} <= set(SERVICES)


def test_every_app_builds_without_litestar_deprecations():
    done = subprocess.run([sys.executable, "-c", BUILD_EVERY_APP, *SERVICES], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"Litestar deprecations (the first of each app):\n{done.stdout}{done.stderr[-3000:]}"
