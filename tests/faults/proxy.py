"""A TCP proxy on loopback that passes bytes to a server and injects one fault: latency, a reset, a cut upload.

Used between the service and a real PACS (``pacs_faults.py``), because
``tc netem`` needs a kernel module that is not always there. The proxy sees
only bytes: a reset is a real TCP RST (``SO_LINGER`` 0) in the middle of a
transfer, a delay holds the server's answer back, and an early answer is
sent while the client is still uploading.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """What the proxy does to a connection; the default passes everything."""

    delay_s: float = 0.0  # hold the server's first answer bytes back this long
    cut_answer_after: int | None = None  # reset both sides once this many answer bytes have passed
    cut_upload_after: int | None = None  # reset both sides once this many request bytes have passed
    early_answer: bytes | None = None  # with cut_upload_after: send this to the client instead, then close
    first_connections: int | None = None  # apply to this many connections from now on, then pass (None: all)


def _reset(*sockets: socket.socket) -> None:
    """Close with a TCP RST rather than a FIN: what a crashing peer or a middlebox does.

    The other pump of the connection may be blocked reading the same socket, which
    keeps it open past ``close()``; shutting down the reading side wakes it first.
    """
    for sock in sockets:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)
            sock.close()
        except OSError:
            pass


class FaultProxy:
    """Listens on 127.0.0.1 (``port``) and forwards each connection to ``upstream``; set :attr:`fault` per scenario."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._fault = Fault()
        self._lock = threading.Lock()
        self.connections = 0  # since the last set_fault
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def set_fault(self, fault: Fault) -> None:
        with self._lock:
            self._fault, self.connections = fault, 0

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index, fault = self.connections, self._fault
                self.connections += 1
            if fault.first_connections is not None and index >= fault.first_connections:
                fault = Fault()
            threading.Thread(target=self._serve, args=(client, fault), daemon=True).start()

    def _serve(self, client: socket.socket, fault: Fault) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        threading.Thread(target=self._upload, args=(client, server, fault), daemon=True).start()
        self._download(server, client, fault)

    def _upload(self, client: socket.socket, server: socket.socket, fault: Fault) -> None:
        passed = 0
        try:
            while chunk := client.recv(65536):
                if fault.cut_upload_after is not None and passed + len(chunk) > fault.cut_upload_after:
                    server.sendall(chunk[: fault.cut_upload_after - passed])
                    if fault.early_answer is not None:
                        client.sendall(fault.early_answer)
                        client.shutdown(socket.SHUT_RDWR)
                        client.close()
                        _reset(server)
                    else:
                        _reset(client, server)
                    return
                server.sendall(chunk)
                passed += len(chunk)
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _download(self, server: socket.socket, client: socket.socket, fault: Fault) -> None:
        passed = 0
        try:
            while chunk := server.recv(65536):
                if passed == 0 and fault.delay_s:
                    time.sleep(fault.delay_s)
                if fault.cut_answer_after is not None and passed + len(chunk) > fault.cut_answer_after:
                    client.sendall(chunk[: fault.cut_answer_after - passed])
                    _reset(client, server)
                    return
                client.sendall(chunk)
                passed += len(chunk)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            for sock in (client, server):
                try:
                    sock.close()
                except OSError:
                    pass
