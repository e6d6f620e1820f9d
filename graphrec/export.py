"""The former import path of the export stage and of the pseudonym rule.

It is kept for code written against it: `from graphrec.export import export, pseudonymize_id` still
works; both live in graphrec.stages.export now.
"""

from graphrec.stages.export import export, pseudonymize_id

__all__ = ["export", "pseudonymize_id"]
