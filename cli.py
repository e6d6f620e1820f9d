"""`python cli.py ...` from a checkout: the same command line as the installed `graphrec` script.

The command line lives in graphrec/app/cli.py (installed as graphrec.app.cli); this file only forwards to it.
"""

from graphrec.app.cli import main

if __name__ == "__main__":
    main()
