"""``python -m orchestrator``: the command line (see :mod:`orchestrator.cli`)."""

from orchestrator.cli import main

if __name__ == "__main__":
    main()
