"""Hardening below the HTTP layer: the registry's start-up race, work-amplification
limits (plans, spans, sub-workflow expansion, deep JSON) and media decode limits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_registry_lookups_racing_the_first_load_all_find_the_tool() -> None:
    """Many threads asking a fresh registry for a built-in tool at once all get it
    (the loaded flag used to turn true before the tool modules were imported)."""
    script = textwrap.dedent("""
        import threading
        from orchestrator.registry import default_registry

        barrier = threading.Barrier(32)
        missing = []

        def look() -> None:
            barrier.wait()
            try:
                default_registry.get("text.template")
            except Exception as exc:
                missing.append(repr(exc))

        threads = [threading.Thread(target=look) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(missing), missing[:1])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 "), out.stdout
