"""``python -m mpqueue``: the same command line as the ``mpqueue`` script."""

from .cli import main

if __name__ == "__main__":
    main()
