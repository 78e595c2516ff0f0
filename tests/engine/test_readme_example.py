"""The README's Python example, saved as a script and run with `python script.py`, as a newcomer would.

The code is read from README.md (so the two stay in sync) and run unchanged, except that the model it names is
registered first on the fixtures' tiny weights and its video is a fixture video. The script has no
``if __name__ == "__main__":`` guard: the decoder's child process must not run it again.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine_helpers import tiny_paths
from fixture_sets import fixture_path, read_listing

ROOT = Path(__file__).resolve().parents[2]


def _readme_python_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README should have exactly one Python example"
    return blocks[0]


@pytest.mark.slow  # a fresh interpreter and decoder server import torch: ~10 s on an idle machine
def test_readme_python_example_runs_as_a_script(tmp_path: Path) -> None:
    code = _readme_python_example()
    model = re.search(r'get_model\("([^"]+)"\)', code)
    assert model is not None and '"video.mp4"' in code, "the example's model/video are no longer where expected"
    video = fixture_path("preprocess", read_listing("preprocess", "preprocess.json")["videos"][0]["file"])
    r2, clip = tiny_paths()
    prelude = ("from models.zoo import register_local_model\n"
               f"register_local_model({model[1]!r}, {r2!r}, clip_path={clip!r}, clip='tiny', clip_pretrained=None, "
               "overwrite=True)\n")
    script = tmp_path / "example.py"
    script.write_text(prelude + code.replace('"video.mp4"', repr(str(video))), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    queries = ast.literal_eval(re.search(r"\.ground\(features, (\[.*?\])", code)[1])  # type: ignore[index]
    assert len(lines) == len(queries)
    for line, query in zip(lines, queries, strict=True):
        assert line.startswith(query + " ")
        moments = ast.literal_eval(line[len(query) + 1:])
        assert 1 <= len(moments) <= 3
        for start, end, score in moments:
            assert 0 <= start < end and 0 <= score <= 1
        assert [m[2] for m in moments] == sorted((m[2] for m in moments), reverse=True)
