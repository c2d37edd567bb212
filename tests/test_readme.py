"""The README's "Train step" code blocks run as written (in order, one namespace)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _train_step_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Train step\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_train_step_blocks_run(capsys):
    blocks = _train_step_blocks()
    assert len(blocks) == 2
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert out.count("loss ") == 15  # one line per step of the first block
    assert "(32, 5)" in out
    assert sorted(namespace["layers"]) == ["dense_1", "dense_2", "dense_3", "dense_4", "dense_5",
                                           "output"]
    norms = namespace["out"].grad_norm
    assert (norms[0, 1:4] == 0).all() and (norms[3] > 0).all()  # depth 1 lacks layers 2-4
