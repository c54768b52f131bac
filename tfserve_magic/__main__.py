"""``python -m tfserve_magic``: the same CLI as the ``tfserve`` console script."""

from tfserve_magic.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
