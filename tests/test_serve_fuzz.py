"""Property-based fuzzing of the API against its own OpenAPI spec (schemathesis): requests that
fit the spec and requests that break it, to every operation, and never a 5xx. The app has no
workers, so accepted jobs only queue; the event streams, which never end for a queued job, are
tested in test_serve_api.
"""

import atexit
import collections
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from extras import require

require("fastapi", "web")
require("uvicorn", "web")

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from vqclip.serve.app import create_app  # noqa: E402
from vqclip.serve.service import ServeSettings  # noqa: E402

# The schema is read when the module is collected (even when its test is deselected), so the
# app exists from then on; its folder goes when the process ends.
DATA = Path(tempfile.mkdtemp(prefix="vqclip-fuzz-"))
atexit.register(shutil.rmtree, DATA, ignore_errors=True)
# Downloads allowed: the app has no workers (nothing downloads), and valid jobs get a 201.
app = create_app(
    ServeSettings(data=DATA / "data", workers=0, max_upload_bytes=2**20, allow_downloads=True)
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex="events$")


SEEN: collections.Counter = collections.Counter()  # (method, path, status) -> responses


@pytest.fixture(scope="module", autouse=True)
def summary():
    """After the run: the fuzzer reached both sides of job submission, and a count by status
    (printed with -s) for the notes."""
    yield
    statuses = {
        status for (method, path, status) in SEEN if (method, path) == ("POST", "/api/jobs")
    }
    by_status = collections.Counter()
    for (_, _, status), n in SEEN.items():
        by_status[status] += n
    print(
        json.dumps({"requests": sum(SEEN.values()), "by_status": dict(sorted(by_status.items()))})
    )
    if SEEN:
        assert {201, 422} <= statuses, statuses


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case):
    response = case.call()
    SEEN[(case.method, case.path, response.status_code)] += 1
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:  # every error is an RFC 9457 problem, whatever the route
        kind = response.headers["content-type"]  # schemathesis keeps every value in a list
        assert (kind[0] if isinstance(kind, list) else kind) == "application/problem+json"
        problem = response.json()
        assert problem["status"] == response.status_code and problem["title"] and problem["type"]
        assert problem["detail"], "an error says what was wrong"
