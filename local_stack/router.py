"""The local stable scoring URL: forwards /score to the deployment that holds the traffic.

`python -m local_stack.router STATE_FILE PORT` serves on 127.0.0.1:PORT, like an
AML online endpoint in front of its deployments. It re-reads the local backend's state file on
every request, so a traffic shift needs no restart. As with AML, the header
`azureml-model-deployment: <name>` sends a request to one deployment regardless of traffic.
"""

from __future__ import annotations

import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEPLOYMENT_HEADER = "azureml-model-deployment"


class Router(BaseHTTPRequestHandler):
    state_file: Path

    def _routes(self) -> tuple[dict[str, int], str]:
        try:
            state = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}, ""
        return {name: d["port"] for name, d in state.get("deployments", {}).items()}, state.get("traffic", "")

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _forward(self) -> None:
        ports, serving = self._routes()
        if self.path == "/":
            self._reply(200, {"router": "ok", "serving": serving or None})
            return
        target = self.headers.get(DEPLOYMENT_HEADER) or serving
        if target not in ports:
            message = f"no deployment named {target!r}" if target else "no deployment holds traffic yet"
            self._reply(404 if target else 503, {"message": message, "deployments": sorted(ports)})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection("127.0.0.1", ports[target], timeout=300)
        try:
            conn.request(
                self.command, self.path, body, {"Content-Type": self.headers.get("Content-Type", "application/json")}
            )
            answer = conn.getresponse()
            if answer.getheader("Content-Type", "").startswith("text/event-stream"):
                self._pass_stream(answer, target)
                return
            data = answer.read()
        except OSError as e:
            self._reply(502, {"message": f"deployment {target} did not answer: {e}"})
            return
        finally:
            conn.close()  # also when the client left mid-stream: the deployment sees it and drops the work
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.send_header(DEPLOYMENT_HEADER, target)
        self.end_headers()
        self.wfile.write(data)

    def _pass_stream(self, answer: http.client.HTTPResponse, target: str) -> None:
        """Server-Sent Events go through piece by piece as the deployment writes them, never buffered whole.
        The router speaks HTTP/1.0, so the end of the stream is the end of the connection."""
        self.send_response(answer.status)
        for name in ("Content-Type", "Cache-Control"):
            if answer.getheader(name):
                self.send_header(name, answer.getheader(name))
        self.send_header(DEPLOYMENT_HEADER, target)
        self.end_headers()
        try:
            while chunk := answer.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; closing our upstream connection tells the deployment

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        sys.stderr.write("router: " + (format % args) + "\n")


def main(state_file: str, port: str) -> None:
    Router.state_file = Path(state_file)
    ThreadingHTTPServer(("127.0.0.1", int(port)), Router).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
