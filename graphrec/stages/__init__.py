"""Layer 5, stages: one module per pipeline step over a workspace.

The steps are `encode`, `train`, `rank`, `evaluate`, `report`, `recommend`, `export` and `update`,
each reading the stages before it and switching its own folder in.
"""
