#!/usr/bin/env python
"""Make the README's TUI pictures: docs/tui_main.png (the catalog and the details pane,
160x45) and docs/tui_lineage.png (the lineage DAG, 80 columns), from the tests' deterministic
catalog (tests/helpers/tui_zoo.py).

    python docs/tui_screenshots.py          # needs cairosvg (pip install cairosvg)

Textual draws an SVG; cairosvg turns it into a PNG. The SVG asks for Fira Code, which is
seldom installed: the first monospace font fontconfig knows is used instead.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHOTS = {  # file: (terminal size, keys pressed after start)
    "tui_main.png": ((160, 45), ()),
    "tui_lineage.png": ((80, 38), ("down", "down", "down", "down", "l", "tab")),
}


async def svg_of(root: Path, work: Path, size: tuple[int, int], keys: tuple[str, ...]) -> str:
    from tests.helpers.tui_async import settle
    from tests.helpers.tui_zoo import make_app

    app = make_app(root, work)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        for key in keys:
            await pilot.press(key)
            await settle(app, pilot)
        return app.export_screenshot(title="weightzoo")


def monospace_font() -> str:
    try:
        out = subprocess.run(["fc-match", "-f", "%{family}", "monospace"], capture_output=True, text=True, check=True)
        return out.stdout.split(",")[0] or "monospace"
    except (OSError, subprocess.CalledProcessError):
        return "monospace"


def main() -> None:
    import cairosvg

    from tests.helpers.tui_zoo import build_tui_zoo

    font = monospace_font()
    with tempfile.TemporaryDirectory() as tmp:
        root = build_tui_zoo(Path(tmp))
        for name, (size, keys) in SHOTS.items():
            work = Path(tmp) / Path(name).stem
            work.mkdir()
            svg = asyncio.run(svg_of(root, work, size, keys)).replace("Fira Code", font)
            cairosvg.svg2png(bytestring=svg.encode(), write_to=str(ROOT / "docs" / name), output_width=size[0] * 12)
            print(f"docs/{name}: {size[0]}x{size[1]}, keys {' '.join(keys) or '-'}")


if __name__ == "__main__":
    main()
