"""The one error type for bad input, raised anywhere, turned into a one-line message by graphrec.app.cli."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: names the file, the row (1-based line in the file) or column, and what is wrong."""

    def __init__(
        self,
        message: str,
        file: object = None,
        row: int | str | None = None,
        column: str | None = None,
    ):
        self.message = message
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
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
        return " ".join(
            text.splitlines()
        )  # the CLI promises exactly one line on stderr
