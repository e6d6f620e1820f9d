"""The one error type for bad input.

It is raised anywhere and turned into a one-line message by graphrec.app.cli.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad user input; it names the file, the row (1-based line) or column, and what is wrong.

    The message reads ``FILE: line ROW: column 'COLUMN': MESSAGE``, each place part present only
    when given, on one line.

    Args:
        message: What is wrong.
        file: The file (or folder) at fault, any object with a string form such as a path.
            (default: :obj:`None`: no file named)
        row: The row: an int is the 1-based line in the file (shown as ``line N``); a str is shown
            as it is. (default: :obj:`None`: no row named)
        column: The column at fault. (default: :obj:`None`: no column named)

    Example::

        raise InputError("must be a number", file="ratings.csv", row=12, column="rating")
        # str(): "ratings.csv: line 12: column 'rating': must be a number"
    """

    def __init__(
        self,
        message: str,
        file: object = None,
        row: int | str | None = None,
        column: str | None = None,
    ):
        """Keep the message and its place (`file` as text); the exception's text is `__str__`'s."""
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        """The one-line message: the place parts given, joined by ": ", then the message.

        Returns:
            The text with every line break of the message turned into a space: the CLI promises
            exactly one line on stderr.
        """
        row = (
            None
            if self.row is None
            else (f"line {self.row}" if isinstance(self.row, int) else self.row)
        )
        where = [
            p
            for p in (
                self.file,
                row,
                None if self.column is None else f"column '{self.column}'",
            )
            if p
        ]
        text = (": ".join(where) + ": " if where else "") + self.message
        # the CLI promises exactly one line on stderr
        return " ".join(text.splitlines())
