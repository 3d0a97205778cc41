"""Measuring a checkpoint the way the field does (`tinybev eval`, `tinybev eval-worlds`).

suite.py      evaluate(): every task's metrics on a split (devkit detection/tracking + training/metrics/)
inference.py  a checkpoint's predictions over a split, frames read as the node reads them
report.py     metrics.json / metrics.md and the summary row of tables
figures.py    per-sample figures and a scene GIF
command.py    `tinybev eval`
worlds.py     `tinybev eval-worlds`: a checkpoint on fresh synthetic worlds no run saw
"""
