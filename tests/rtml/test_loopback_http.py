"""The loopback JSON server both V2 servers build on: parsing, answers, hang-ups, errors."""

from __future__ import annotations

import http.client
import json

import pytest

from rtml.loopback_http import Answer, LoopbackJsonServer, _parse_head


class Echo(LoopbackJsonServer):
    async def handle(self, method: str, path: str, body: bytes) -> Answer:
        if path == "/hang-up":
            return None
        if path == "/raw":
            return 200, b"not json"
        if path == "/fail":
            raise RuntimeError("boom")
        return 200, {"method": method, "path": path, "body": body.decode()}


def test_parse_head_reads_method_path_and_length() -> None:
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n"
    assert _parse_head(head) == ("POST", "/v2/models/m/infer", 12)
    assert _parse_head(b"GET /v2/health/ready HTTP/1.1\r\n\r\n") == ("GET", "/v2/health/ready", 0)


def test_answers_over_one_kept_alive_connection() -> None:
    with Echo() as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for body in ("a", "bc"):
            connection.request("POST", "/echo", body=body)
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read()) == {"method": "POST", "path": "/echo", "body": body}
        connection.request("GET", "/raw")
        assert connection.getresponse().read() == b"not json"
        connection.close()


def test_a_failing_handler_answers_500_and_none_hangs_up() -> None:
    with Echo() as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.request("GET", "/fail")
        response = connection.getresponse()
        assert response.status == 500 and "boom" in json.loads(response.read())["error"]
        connection.request("GET", "/hang-up")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            connection.getresponse()
        connection.close()
