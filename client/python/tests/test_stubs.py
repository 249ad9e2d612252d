"""The checked-in gRPC stubs are what generate.py makes from proto/ now."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import generate  # noqa: E402


def test_the_stubs_do_not_drift_from_the_proto(tmp_path):
    generate.generate(tmp_path)
    checked_in = HERE.parent / "agent_ledger" / "_proto"
    for name in ("ledger_pb2.py", "ledger_pb2.pyi", "ledger_pb2_grpc.py", "__init__.py"):
        assert (tmp_path / name).read_text() == (checked_in / name).read_text(), (
            f"{name} is out of date: run `python client/python/generate.py`"
        )
