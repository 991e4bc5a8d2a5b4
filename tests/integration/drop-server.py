#!/usr/bin/env python3
"""A static file server for the download tests, on 127.0.0.1.

Serves DOCROOT with Range support. While CONTROL (a file holding a number)
is above zero, a GET of a path containing PATTERN sends its headers for the
whole (remaining) body, then only half of that body, and drops the
connection; each such drop decrements the number. Every request is logged to
LOG as "PATH RANGE-HEADER BYTES-SENT". Prints the port, then serves until
killed.

With TRICKLE (a file holding a path pattern, read at each request; empty for
none) and DELAY, a GET of a path containing that pattern gets its headers for
the whole body, then the body one byte every DELAY seconds: fast enough for
a stall timeout never to fire, far too slow to finish (slow retrieval).

With SERVER_CLOCK_OFFSET in the environment (seconds, may be negative), the
Date header of every answer is that far from this machine's clock.
"""
import http.server
import os
import socketserver
import sys
import time

docroot, pattern, control, log = sys.argv[1:5]
trickle = sys.argv[5] if len(sys.argv) > 5 else None
delay = float(sys.argv[6]) if len(sys.argv) > 6 else 0.3
clock_offset = float(os.environ.get("SERVER_CLOCK_OFFSET", "0"))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def date_time_string(self, timestamp=None):
        return super().date_time_string((time.time() if timestamp is None else timestamp) + clock_offset)

    def do_GET(self):
        path = os.path.normpath(self.path.split("?")[0]).lstrip("/")
        full = os.path.join(docroot, path)
        if ".." in path.split("/") or not os.path.isfile(full):
            self.send_error(404)
            return
        data = open(full, "rb").read()
        rng = self.headers.get("Range", "")
        start = 0
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_error(416)
                return
        body = data[start:]
        drops = int(open(control).read().strip() or 0)
        drop = pattern in path and drops > 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if drop:
            with open(control, "w") as f:
                f.write(str(drops - 1))
            body = body[: len(body) // 2]
        slow = trickle and open(trickle).read().strip()
        try:
            if slow and slow in path:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(delay)
            else:
                self.wfile.write(body)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        with open(log, "a") as f:
            f.write("%s %s %d\n" % (path, rng or "-", len(body)))
        self.close_connection = True


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
