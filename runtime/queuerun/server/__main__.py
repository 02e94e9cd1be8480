"""``python -m queuerun.server [module:app]``: serve the app's push subscriptions under uvicorn."""

from __future__ import annotations

import sys

from .serve import load_app, serve


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    serve(load_app(args[0] if args else None))


if __name__ == "__main__":
    main()
