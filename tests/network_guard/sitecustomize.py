"""No test may reach beyond 127.0.0.1.

Imported in the pytest process by tests/conftest.py, and at start-up of every
Python subprocess a test starts (conftest puts this folder first on
PYTHONPATH, and Python imports ``sitecustomize`` by itself). Connections to
any other address fail with ConnectionRefusedError, which code under test
handles like a machine without network.
"""

import ipaddress
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
BLOCKED = "the test suite allows network connections to 127.0.0.1 only"


def _allowed(sock, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # Unix sockets and the like stay on this machine
    host = address[0] if isinstance(address, tuple) else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _connect(self, address):
    if not _allowed(self, address):
        raise ConnectionRefusedError(f"{BLOCKED}; refused {address!r}")
    return _real_connect(self, address)


def _connect_ex(self, address):
    if not _allowed(self, address):
        raise ConnectionRefusedError(f"{BLOCKED}; refused {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _connect
socket.socket.connect_ex = _connect_ex
