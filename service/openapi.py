"""Write the app's OpenAPI document to ``openapi.yaml``; ``--check`` fails when the file has drifted.

``python -m service.openapi [--check] [--output PATH]``. No bundle is needed:
the document depends on the code only, never on settings or the loaded model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from service.main import create_app
from service.settings import Settings

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"


def document() -> dict[str, Any]:
    """The OpenAPI document the app serves at /openapi.json."""
    # Defaults without reading the environment: the document depends on the code only.
    return create_app(Settings.model_construct()).openapi()


def render(spec: dict[str, Any]) -> str:
    """The document as YAML, keys in the app's order."""
    text: str = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.openapi", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the app's document")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_PATH, help=f"file to write or check (default {DEFAULT_PATH})"
    )
    args = parser.parse_args(argv)
    spec = document()
    if args.check:
        current = yaml.safe_load(args.output.read_text()) if args.output.is_file() else None
        if current != spec:
            print(f"{args.output} is out of date; run `python -m service.openapi`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(render(spec))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
