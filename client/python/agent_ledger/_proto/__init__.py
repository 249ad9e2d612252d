"""Generated from proto/agentledger/v1/ledger.proto by generate.py."""
