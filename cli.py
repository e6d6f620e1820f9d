"""`python cli.py ...` from a checkout: the same command line as the installed `graphrec` script.

The command line lives in graphrec/cli.py (installed as graphrec.cli); this file only forwards to it.
"""
from graphrec.cli import main

if __name__ == "__main__":
    main()
