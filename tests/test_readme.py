"""The README's Python examples run as written, so that they cannot go stale."""
import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading):
    """The first ```python block of the README section whose heading is `heading` (any level)."""
    section, block, fence = None, None, None
    for line in README.read_text(encoding="utf-8").splitlines():
        if fence is not None:  # inside a fenced block, where '#' starts a comment, not a heading
            if line.startswith("```"):
                if block is not None:
                    return "".join(block)
                fence = None
            elif block is not None:
                block.append(line + "\n")
        elif line.startswith("```"):
            fence = line
            if section == heading and line.strip() == "```python":
                block = []
        elif re.match(r"#+ ", line):
            section = line.split(" ", 1)[1].strip()
    assert heading in _headings(), f"README.md has no section {heading!r}"
    raise AssertionError(f"README.md's section {heading!r} has no python code block")


def _headings():
    text = re.sub(r"^```.*?^```", "", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {m.group(1).strip() for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def run_block(heading, capsys):
    """Execute the block as a script would; returns its globals and what it printed."""
    namespace = {"__name__": "__readme__"}
    exec(compile(python_block(heading), f"README.md ({heading})", "exec"), namespace)
    return namespace, capsys.readouterr().out


def test_python_block_is_found():
    # the extraction itself: a section's first block, and a clear failure for a missing section
    assert python_block("Training with fastconv.nn").startswith("import numpy as np\n")
    with pytest.raises(AssertionError, match="no section"):
        python_block("No such section")


def test_training_example_trains(capsys):
    ns, out = run_block("Training with fastconv.nn", capsys)
    losses = [float(v) for v in re.findall(r"^epoch \d+: last batch loss ([\d.]+)$", out, re.M)]
    assert len(losses) == 3, out
    # The loop really learns (chance is 10 %, an untrained model's loss is about log(10) = 2.3):
    # explicit backward and the optimizer step are wired as the text says.
    assert losses[-1] < 1.0, out
    assert ns["accuracy"] > 0.8, out
    assert f"test accuracy {ns['accuracy']:.2%}" in out
    # every parameter received a gradient from model.backward
    assert all(p.grad is not None and np.any(p.grad != 0) for p in ns["model"].parameters())


def test_use_example_runs(capsys):
    ns, _ = run_block("Use", capsys)
    assert ns["y"].shape == (64, 16, 32, 32)
    assert ns["gx"].shape == ns["x"].shape and ns["gw"].shape == ns["w"].shape
    assert ns["u"].shape == (64, 8, 64, 64)


def test_bfloat16_example(capsys):
    pytest.importorskip("ml_dtypes")
    ns, _ = run_block("bfloat16", capsys)
    y, y2, yb = ns["y"], ns["y2"], ns["yb"]
    assert y.dtype == np.float32 and np.array_equal(y, y2)
    assert yb.dtype.name == "bfloat16" and yb.shape == y.shape
    exact = ns["fastconv"].conv2d(ns["x"], ns["w"], ns["b"], padding=1)
    assert not np.array_equal(y, exact)  # rounded inputs: not the float32 result
    np.testing.assert_allclose(y, exact, rtol=2**-6)  # but within bfloat16's rounding of it
    np.testing.assert_allclose(yb.astype(np.float32), y, rtol=2**-7)
    assert ns["layer"].precision == "bf16"
