"""Stage export_digits: scikit-learn's bundled digits -> data/raw/digits as an ImageFolder (real, offline)."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from transferlab.config.errors import reported_as_one_line
from transferlab.config.paths import EMBEDDED_DIGITS_ROOT
from transferlab.data.digits import export_digits


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    with reported_as_one_line():
        root = Path(EMBEDDED_DIGITS_ROOT)
        if root.exists():
            shutil.rmtree(root)
        print(f"exported {export_digits(root)} digit images to {root}")


if __name__ == "__main__":
    main()
