"""One photo's path through the code: which project files run, from ``deid-client firewall``
to the written PNGs, in the order they are first entered (docs/design.md, One photo's path).

    python -m research.photo_path            # the phantom preset, one phantom photo
    python -m research.photo_path --json

A profiler hook records every function call (module bodies run at import time are left
out: they are not the photo's path) in a project file while the CLI puts one photo
through the firewall. A file entered from several other files is reported: one concept
spread over the path (a file its caller uses in a loop, e.g. three edits, is one entry).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("deid_client", "server")


#: The photo's own stretch of the path: from reading it to writing its PNGs and manifest
#: entry (the config is composed and the model loaded before; the contact sheet after).
PHOTO_FROM, PHOTO_TO = "read_image", "contact_sheet"


def trace(argv: list[str]) -> tuple[list[str], dict[str, set[str]], list[str]]:
    """Project files whose functions run under ``deid_client.cli.main(argv)``, in first-entry
    order; the other project files each is entered from; and the files of the photo's own
    stretch (:data:`PHOTO_FROM` to :data:`PHOTO_TO`)."""
    from deid_client.cli import main

    order: list[str] = []
    photo: list[str] = []
    entries: dict[str, set[str]] = defaultdict(set)
    stack: list[str | None] = []
    stretch = {"on": False, "done": False}

    def profile(frame, event, arg):
        if event == "call":
            path = Path(frame.f_code.co_filename)
            name = _project_file(path) if frame.f_code.co_name != "<module>" else None
            if name and frame.f_code.co_name in (PHOTO_FROM, PHOTO_TO) and not stretch["done"]:
                stretch["on"] = frame.f_code.co_name == PHOTO_FROM
                stretch["done"] = frame.f_code.co_name == PHOTO_TO
            caller = next((s for s in reversed(stack) if s is not None), None)
            if name is not None and name != caller:
                if caller is not None:
                    entries[name].add(caller)
                if name not in order:
                    order.append(name)
            if name is not None and stretch["on"] and name not in photo:
                photo.append(name)
            stack.append(name)
        elif event == "return" and stack:
            stack.pop()

    sys.setprofile(profile)
    try:
        code = main(argv)
    finally:
        sys.setprofile(None)
    if code not in (0, 1):
        raise SystemExit(f"deid-client {' '.join(argv)} failed with exit code {code}")
    return order, entries, photo


def _project_file(path: Path) -> str | None:
    try:
        relative = path.resolve().relative_to(ROOT)
    except ValueError:
        return None
    return str(relative) if relative.parts[0] in PACKAGES else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from deid_client.io.images import write_image
    from deid_client.phantom import make_phantom

    with tempfile.TemporaryDirectory(prefix="photo-path-") as tmp:
        folder = Path(tmp) / "site"
        write_image(folder / "images" / "patient.png", make_phantom(7, 64).image)
        main_argv = ["firewall", str(folder), "-o", str(Path(tmp) / "out"), "--secret-file",
                     str(Path(tmp) / "secret")]
        from deid_client.firewall import compose_firewall

        compose_firewall()  # Hydra's first compose imports its own modules: not the photo's path
        order, entries, photo = trace(main_argv)
    python = [f for f in order if f.endswith(".py")]
    result = {"files": len(python), "path": python,
              "entered_from_several": {f: sorted(c) for f, c in entries.items() if len(c) > 1},
              "photo_files": len(photo), "photo_path": photo}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{len(python)} project files on one photo's path (first entry order):")
    for f in python:
        callers = sorted(entries.get(f, ()))
        print(f"  {f}" + (f"   (entered from {', '.join(callers)})" if len(callers) > 1 else ""))
    print(f"{len(photo)} of them from reading the photo to writing its PNGs:")
    for f in photo:
        print(f"  {f}")


if __name__ == "__main__":
    main()
