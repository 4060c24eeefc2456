"""Generate Python stubs for protos/concord/v1 into concord/proto/v1 (`--check`: fail if stale).

protoc derives Python module paths from proto file paths (`concord/v1/x.proto` ->
`concord.v1.x_pb2`); Concord keeps generated code fenced in `concord.proto`, so the
generated imports are rewritten to `concord.proto.v1`. Proto package names (what the
wire, reflection and grpcurl see) stay `concord.v1`.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
OUT_DIR = ROOT / "concord" / "proto" / "v1"
IMPORT_RE = re.compile(r"^from concord\.v1 import", re.MULTILINE)


def generate(dest: Path) -> None:
    """Run protoc on every proto under protos/concord/v1 and write rewritten stubs to dest."""
    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "concord/v1").glob("*.proto")
    )
    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        dest.mkdir(parents=True, exist_ok=True)
        for path in sorted((Path(tmp) / "concord" / "v1").iterdir()):
            text = IMPORT_RE.sub("from concord.proto.v1 import", path.read_text())
            (dest / path.name).write_text(text)
    (dest / "__init__.py").write_text(
        '"""Generated from protos/concord/v1 by tools/gen_protos.py; do not edit."""\n'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if concord/proto/v1 is stale")
    args = parser.parse_args()
    if not args.check:
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        generate(OUT_DIR)
        print(f"generated stubs in {OUT_DIR.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "v1"
        generate(fresh)
        names = sorted(p.name for p in fresh.iterdir())
        existing = (
            sorted(p.name for p in OUT_DIR.glob("*") if p.is_file()) if OUT_DIR.exists() else []
        )
        _, mismatch, errors = filecmp.cmpfiles(fresh, OUT_DIR, names, shallow=False)
        if mismatch or errors or names != existing:
            print(
                "concord/proto/v1 is stale: run `make protos` and commit the result "
                f"(differs: {mismatch + errors}; expected files {names}, found {existing})",
                file=sys.stderr,
            )
            return 1
    print("proto stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
