"""Fetch the pinned uPlot release from npm into monitor/dashboard/static/uplot/.

The live charts use uPlot (MIT, a ~50 KB canvas time-series library). The dashboard serves
it itself (`/klwatch/static/…`): a team's page must make no outside request, and CI has no
node. So its dist files are committed, and this script is how they got there:

    python tools/vendor_uplot.py            # needs npm; checks npm's sha512 integrity

It writes the files and SHA256SUMS; tests/test_live_api.py checks the files against it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "1.6.32"
# `npm view uplot@1.6.32 dist.integrity`
INTEGRITY = (
    "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/"
    "ep3tOkyTxpiQIw=="
)
FILES = ("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE")
DEST = Path(__file__).resolve().parents[1] / "monitor" / "dashboard" / "static" / "uplot"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["npm", "pack", f"uplot@{VERSION}", "--json"],
            cwd=tmp, check=True, capture_output=True, text=True,
        )  # fmt: skip
        tgz = Path(tmp) / json.loads(out.stdout)[0]["filename"]
        digest = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != INTEGRITY:
            print(f"uplot@{VERSION}: integrity mismatch (got sha512-{digest})", file=sys.stderr)
            return 1
        DEST.mkdir(parents=True, exist_ok=True)
        sums = []
        with tarfile.open(tgz) as tar:
            for name in FILES:
                member = tar.extractfile(f"package/{name}")
                assert member is not None, name
                data = member.read()
                target = DEST / Path(name).name
                target.write_bytes(data)
                sums.append(f"{hashlib.sha256(data).hexdigest()}  {target.name}")
        (DEST / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        (DEST / "VERSION").write_text(f"uplot {VERSION} (npm, {INTEGRITY})\n")
    print(f"uplot {VERSION} → {DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
