"""The stdlib HTTP server the connector fakes run on, quiet about clients that hang up.

Timeout tests stall on purpose; the client gives up and closes the socket, and the fake's
late reply then fails with a broken pipe. socketserver would print that traceback to the
terminal after the test has finished, where it reads like a failure.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer


class QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)
