"""``python -m advlab`` is the ``advlab`` command line."""

from advlab.cli import main

if __name__ == "__main__":
    main()
