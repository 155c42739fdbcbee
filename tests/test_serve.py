"""hdc serve on 127.0.0.1: classify, a batch, bad JSON, an oversized body, health, labels."""

import http.client
import json
import threading

import pytest

from hdc.serve import make_server


@pytest.fixture(scope="module")
def server(tiny_bundle):
    server = make_server(tiny_bundle, "127.0.0.1", 0, max_bytes=4096)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def request(port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def test_health_and_labels(server):
    status, body = request(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["labels"] == 3
    status, body = request(server, "GET", "/labels")
    assert status == 200 and body == {"labels": ["cooking", "sport", "weather"], "multilabel": False}


def test_classify_one_and_a_batch(server):
    status, body = request(server, "POST", "/classify", json.dumps({"text": "Stir the soup slowly and add salt."}))
    assert status == 200 and body["label"] == "cooking" and len(body["top"]) == 3
    status, body = request(
        server, "POST", "/classify", json.dumps({"texts": ["The Rovers won the final.", "Snow closed the roads."]})
    )
    assert status == 200 and [r["label"] for r in body["results"]] == ["sport", "weather"]
    status, body = request(
        server, "POST", "/classify", json.dumps({"documents": [{"id": "a7", "text": "Bake the pie."}]})
    )
    assert status == 200 and body["results"][0]["id"] == "a7"


@pytest.mark.parametrize(
    "body, status, message",
    [
        ("{not json", 400, "not valid JSON"),
        (json.dumps({"txt": "x"}), 400, "expected"),
        (json.dumps({"texts": [1, 2]}), 400, "list of strings"),
        (json.dumps({"text": "x" * 5000}), 413, "over the limit"),
    ],
)
def test_bad_requests(server, body, status, message):
    got, reply = request(server, "POST", "/classify", body)
    assert got == status and message in reply["error"]


def test_unknown_paths_and_empty_text(server):
    assert request(server, "GET", "/nope")[0] == 404
    assert request(server, "POST", "/health", "{}")[0] == 405
    status, body = request(server, "POST", "/classify", json.dumps({"text": "   "}))
    assert status == 200 and "empty" in body["error"]
    # the server is still up after all of that
    assert request(server, "GET", "/health")[0] == 200
