"""`python -m graphrec ...`: the same command line as the installed `graphrec` script."""

from graphrec.app.cli import main

if __name__ == "__main__":
    main()
