"""The HTTP floor: a WSGI app that does only what any JSON service must, read the body and parse it.

`python -m bench http --floor` serves this under the same gunicorn settings as the service, so the HTTP
benchmark can say how much of a request's CPU is HTTP and parsing, and how much is pacecds.
"""

import orjson

EMPTY = b'{"cards":[]}'


def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":  # anything else is the benchmark's readiness probe
        orjson.loads(environ["wsgi.input"].read())
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(EMPTY)))])
    return [EMPTY]
