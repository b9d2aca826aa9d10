"""`python cli.py …` from a checkout runs the `mapper` command; the command line itself is
engine/cli.py (installed inside the engine package, so no bare ``cli`` module is installed)."""

from engine.cli import main

if __name__ == "__main__":
    main()
