"""Layer 6, pipeline: the stages run together: the Python API (`api`: graphrec.Recommender) and the quickstart."""
