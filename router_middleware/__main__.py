"""``python -m router_middleware``: the ``llm-router`` command."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
