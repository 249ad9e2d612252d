"""Generates agent_ledger/_proto from the repository's proto/ (run from
anywhere; needs grpcio-tools). The generated files are checked in;
tests/test_stubs.py fails when they drift from the .proto.

    python client/python/generate.py [OUT_DIR]
"""

import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto" / "proto"
PROTO = "agentledger/v1/ledger.proto"


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                PROTO,
            ],
            check=True,
        )
        gen = pathlib.Path(tmp) / "agentledger" / "v1"
        for name in ("ledger_pb2.py", "ledger_pb2.pyi", "ledger_pb2_grpc.py"):
            text = (gen / name).read_text()
            # The package's own import path, not protoc's.
            text = text.replace(
                "from agentledger.v1 import ledger_pb2 as", "from . import ledger_pb2 as"
            )
            (out / name).write_text(text)
    init = out / "__init__.py"
    init.write_text('"""Generated from proto/agentledger/v1/ledger.proto by generate.py."""\n')


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "agent_ledger" / "_proto")
