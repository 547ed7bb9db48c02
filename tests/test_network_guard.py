"""The suite-wide guard: nothing reaches beyond 127.0.0.1, here or in subprocesses."""

import socket
import subprocess
import sys

import pytest


def test_connections_beyond_loopback_are_refused_in_process():
    with pytest.raises(ConnectionRefusedError, match="127.0.0.1 only"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never routed


def test_loopback_is_allowed():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=5):
        pass
    server.close()


def test_subprocesses_get_the_guard_too():
    code = ("import socket\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
            "except ConnectionRefusedError as e:\n    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60).stdout
    assert out.startswith("refused") and "127.0.0.1 only" in out
