"""Run `python -m graphrec ...`: the same command line as the installed `graphrec` script.

It calls :func:`graphrec.app.cli.main`, as the `graphrec` console script does.
"""

from graphrec.app.cli import main

if __name__ == "__main__":
    main()
