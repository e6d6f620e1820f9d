"""Layer 7, app: the entry points: the command line (`cli`) and the multi-process training launcher
(`distributed`).
"""
