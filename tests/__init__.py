"""Test suites. Imported before any conftest, so settings here precede every other import."""

import os

# Tests start processes (Popen: fork, then exec) while gRPC's threads run in this process. With
# gRPC's fork handlers on, such a child died of SIGSEGV in libpython before its exec, twice in
# the fault suite ("postgres exited during startup (exit status -11)"; dmesg: segfault at the
# very restart times). Nothing here needs gRPC to survive a fork; set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
