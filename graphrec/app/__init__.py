"""Layer 7, app: the entry points.

The command line (`cli`) and the multi-process training launcher (`distributed`).
"""
