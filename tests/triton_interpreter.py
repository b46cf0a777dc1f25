"""Run a test script with Triton's CPU interpreter, in a subprocess: TRITON_INTERPRET must be set before triton is
imported, and this test process has imported it already."""

from __future__ import annotations

import json
import os
import subprocess
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def run_interpreted(script: str) -> dict:
    """Run ``script`` (which may import the test modules: ``{tests_dir}`` is filled in) under TRITON_INTERPRET=1
    with no GPU visible; it prints ``RESULT`` + a JSON dict as its last such line, which is returned."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", script.format(tests_dir=TESTS_DIR)], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT"):])
