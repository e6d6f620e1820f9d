"""Layer 6, pipeline: the stages run together.

The Python API (`api`: graphrec.Recommender) and the quickstart (`quickstart`).
"""
