"""The committed authsvc/api/v1 is exactly what tools/gen_proto.py makes from proto/."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "authsvc" / "api" / "v1"
FIX = "run python tools/gen_proto.py"

pytest.importorskip(
    "grpc_tools", reason="grpcio-tools (the test extra) is not installed, so protoc cannot run here"
)


def _gen_proto():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api_v1")
    _gen_proto().generate(out)
    return out


def _sources(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}


def test_generated_api_has_the_same_files_as_committed(generated: Path):
    made, committed = _sources(generated), _sources(COMMITTED)
    assert made, "protoc generated nothing"
    assert made == committed, f"missing {sorted(made - committed)}, stale {sorted(committed - made)}; {FIX}"


def test_generated_api_equals_the_committed_code(generated: Path):
    stale = []
    for name in sorted(_sources(generated)):
        new, old = (generated / name).read_text(), (COMMITTED / name).read_text()
        if new != old:
            diff = difflib.unified_diff(
                old.splitlines(), new.splitlines(), f"committed/{name}", name, lineterm=""
            )
            stale.append("\n".join(list(diff)[:20]))
    assert not stale, f"authsvc/api/v1 is out of date with proto/; {FIX}\n" + "\n\n".join(stale)


def test_generated_modules_import_from_authsvc_api(generated: Path):
    for path in generated.glob("*_pb2*.py"):
        text = path.read_text()
        assert "from authsvc.v1 import" not in text, f"{path.name} imports the proto package path; {FIX}"
