"""Layer 5, stages: one module per pipeline step over a workspace (`encode`, `train`, `rank`, `evaluate`, `report`,
`recommend`, `export`, `update`), each reading the stages before it and switching its own folder in.
"""
