"""Hostile cases, `hdc serve`: malformed, slow, many and unauthorised clients. Every answer is JSON
with the right status, and the server stays up for the next client."""

import http.client
import json
import socket
import threading
import time

import pytest

import hdc.serve
from hdc.serve import make_server


def start(bundle, max_bytes=4096, **options):
    server = make_server(bundle, "127.0.0.1", 0, max_bytes=max_bytes, log=False, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def stop(server, thread):
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def port(tiny_bundle):
    server, thread = start(tiny_bundle)
    yield server.server_address[1]
    stop(server, thread)


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None, dict(response.getheaders())
    finally:
        connection.close()


def raw(port, data: bytes, timeout=10) -> bytes:
    """Send bytes as they are; the whole answer, until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_busy_port_is_a_one_line_error(tiny_bundle, port):
    from conftest import run_cli

    result = run_cli("serve", tiny_bundle, "--port", str(port))
    assert result.exit_code == 2 and "cannot listen there" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.output


def test_deeply_nested_json_is_a_bad_request(port):
    status, body, _ = request(port, "POST", "/classify", "[" * 2000 + "]" * 2000)  # under max_bytes
    assert status == 400 and "nested too deeply" in body["error"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_a_json_405_with_allow(port, method):
    status, body, headers = request(port, method, "/classify", "{}")
    assert status == 405 and headers["Allow"] == "POST" and "use POST" in body["error"]


def test_get_on_classify_says_to_post(port):
    status, body, headers = request(port, "GET", "/classify")
    assert status == 405 and "use POST" in body["error"] and headers["Content-Type"].startswith("application/json")


def test_head_on_health_has_no_body(port):
    status, body, headers = request(port, "HEAD", "/health")
    assert status == 200 and body is None and int(headers["Content-Length"]) > 0


def test_a_query_string_does_not_hide_an_endpoint(port):
    assert request(port, "GET", "/health?x=1")[0] == 200


def test_an_unknown_path_lists_the_endpoints(port):
    status, body, _ = request(port, "GET", "/nope")
    assert status == 404 and "POST /classify" in body["error"] and "/nope" in body["error"]


def test_a_request_line_that_is_not_http(port):
    answer = raw(port, b"GARBAGE\r\n\r\n")
    assert status_of(answer) == 400 and b"not an HTTP/1.x request line" in answer


def test_a_header_over_the_limit(port):
    answer = raw(port, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert status_of(answer) == 431


def test_too_many_headers(port):
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(200))
    assert status_of(raw(port, b"GET /health HTTP/1.1\r\n" + headers + b"\r\n")) == 431


def test_a_body_without_length(port):
    answer = raw(port, b"POST /classify HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status_of(answer) == 411 and b"Content-Length" in answer


def test_a_body_over_the_limit(port):
    status, body, _ = request(port, "POST", "/classify", json.dumps({"text": "x" * 5000}))
    assert status == 413 and "over the limit" in body["error"]


def test_a_body_that_is_not_utf8(port):
    status, body, _ = request(port, "POST", "/classify", b'{"text": "\xff\xfe"}')
    assert status == 400 and "not valid JSON" in body["error"]


def test_too_many_documents(tiny_bundle):
    server, thread = start(tiny_bundle, max_bytes=1 << 20)
    try:
        status, body, _ = request(server.server_address[1], "POST", "/classify", json.dumps({"texts": ["a"] * 1001}))
    finally:
        stop(server, thread)
    assert status == 413 and "at most 1000 documents" in body["error"]


def test_a_lone_surrogate_is_classified_with_a_warning(port):
    status, body, _ = request(port, "POST", "/classify", '{"text": "Rain \\ud83d today."}')
    assert status == 200 and "lone surrogates" in body["warnings"][0]


def test_control_characters_reach_the_log_escaped(tiny_bundle, capsys):
    server = make_server(tiny_bundle, "127.0.0.1", 0, log=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        raw(server.server_address[1], b"GET /he\x1b[31mlth\r\x07 HTTP/1.1\r\nConnection: close\r\n\r\n")
    finally:
        stop(server, thread)
    log = capsys.readouterr().err
    assert "\\x1b[31m" in log and "\x1b" not in log and "\x07" not in log


def test_keep_alive_serves_several_requests_on_one_connection(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for text in ("Bake the pie.", "The Rovers won."):
            connection.request("POST", "/classify", json.dumps({"text": text}))
            response = connection.getresponse()
            assert response.status == 200 and "label" in json.loads(response.read())
    finally:
        connection.close()


def test_expect_100_continue_is_answered(port):
    body = json.dumps({"text": "Snow closed the roads."}).encode()
    head = b"POST /classify HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert status_of(answer) == 200 and b'"weather"' in answer


def test_http_10_closes_after_the_answer(port):
    answer = raw(port, b"GET /health HTTP/1.0\r\n\r\n")
    assert status_of(answer) == 200 and b"Connection: close" in answer


def test_a_slow_client_is_cut_off_at_the_deadline(tiny_bundle, monkeypatch):
    monkeypatch.setattr(hdc.serve, "REQUEST_SECONDS", 1.0)
    server, thread = start(tiny_bundle)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
            s.sendall(b"G")  # then nothing more: a byte now and then would not keep it open either
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        assert status_of(answer) == 408
        assert request(server.server_address[1], "GET", "/health")[0] == 200  # still serving
    finally:
        stop(server, thread)


def test_connections_over_the_cap_get_503(tiny_bundle, monkeypatch):
    monkeypatch.setattr(hdc.serve, "MAX_CONNECTIONS", 2)
    server, thread = start(tiny_bundle)
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        time.sleep(0.2)  # let the server accept both
        answer = raw(port, b"GET /health HTTP/1.1\r\n\r\n")
        assert status_of(answer) == 503 and b"busy" in answer
    finally:
        for s in idle:
            s.close()
        stop(server, thread)


def test_two_hundred_concurrent_clients_all_get_answers(port):
    results = [None] * 200

    def client(i):
        try:
            results[i] = request(port, "POST", "/classify", json.dumps({"text": f"Rain on day {i}."}))[0]
        except OSError as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [200] * 200


@pytest.fixture(scope="module")
def locked(tiny_bundle):
    server, thread = start(tiny_bundle, token="s3cret")
    yield server.server_address[1]
    stop(server, thread)


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic s3cret", "Bearer"])
def test_a_token_is_required_when_set(locked, header):
    headers = {"Authorization": header} if header else {}
    status, body, answer_headers = request(locked, "POST", "/classify", '{"text": "Rain."}', headers)
    assert status == 401 and answer_headers["WWW-Authenticate"] == "Bearer" and "token" in body["error"]
    assert request(locked, "GET", "/labels", headers=headers)[0] == 401


def test_the_right_token_is_let_in_and_health_says_little(locked):
    status, body, _ = request(locked, "POST", "/classify", '{"text": "Rain."}', {"Authorization": "Bearer s3cret"})
    assert status == 200 and "label" in body
    status, health, _ = request(locked, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and "model" not in health


def test_the_token_comes_from_the_environment(tiny_bundle, monkeypatch):
    monkeypatch.setenv("HDC_SERVE_TOKEN", "from-env")
    server, thread = start(tiny_bundle)
    try:
        port = server.server_address[1]
        assert request(port, "GET", "/labels")[0] == 401
        assert request(port, "GET", "/labels", headers={"Authorization": "Bearer from-env"})[0] == 200
    finally:
        stop(server, thread)
