"""The artifact mirror, run inside the lab's mirror container with the image's own python3 (stdlib only).

Serves a static release tree over HTTPS; `GET /` answers with `install.sh`, like the real install URL.
Usage: python3 mirror_server.py ROOT CERT KEY [PORT]
"""

import http.server
import os
import ssl
import sys


def main() -> None:
    root, cert, key = sys.argv[1:4]
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 443

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=root, **kwargs)

        def translate_path(self, path):
            if path.split("?", 1)[0] in ("/", ""):
                return os.path.join(root, "install.sh")
            return super().translate_path(path)

        def log_message(self, format, *args):
            sys.stderr.write("mirror: " + (format % args) + "\n")

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
