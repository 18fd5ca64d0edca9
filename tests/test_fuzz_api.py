"""Schemathesis against the running server's own OpenAPI document.

What every operation promises, whatever a client sends that the document allows or
nearly allows (schemathesis' positive and negative modes, with the real model name
and with made-up ones):

- never a 5xx: a client cannot make the server report its own failure;
- a 4xx is JSON with an "error" message;
- no body carries a stack trace, a source path or a file location.

Afterwards the server still classifies a reference photo correctly.

Bounded: a fixed number of examples per operation, derandomized, no example database;
the whole file takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from devtools.payloads import b64, v1_body, v2_binary_body, v2_body
from devtools.photos import CAT_CLASSES, blank_png, jpeg

# Every operation KServe's app publishes. A new one (a KServe upgrade) fails
# test_the_openapi_document_lists_every_operation until it is added here and so fuzzed.
OPERATIONS: list[tuple[str, str]] = [
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_name}"),
    ("POST", "/v1/models/{model_name}:predict"),
    ("POST", "/v1/models/{model_name}:explain"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models"),
    ("GET", "/v2/models/{model_name}"),
    ("GET", "/v2/models/{model_name}/ready"),
    ("GET", "/v2/models/{model_name}/config"),
    ("GET", "/v2/models/{model_name}/stats"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"),
    ("POST", "/v2/models/{model_name}/infer"),
    ("POST", "/v2/repository/models/{model_name}/load"),
    ("POST", "/v2/repository/models/{model_name}/unload"),
]
# Any model_version is answered 501 by KServe: one known bug, reproduced in
# test_a_model_version_is_a_client_error_not_a_501; the fuzzing below leaves the parameter out.
VERSIONED = ("GET", "/v2/models/{model_name}/versions/{model_version}/ready")

EXAMPLES_PER_OPERATION = 30
API_FUZZ = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure's case is printed as sent
    suppress_health_check=list(HealthCheck),
)

# Internals that must never reach a client: Python tracebacks and frames, installed-package and source paths
# (torchvision's C++ errors carry "/__w/vision/.../decode_png.cpp:62").
LEAKS = re.compile(r'Traceback|File "|site-packages|\.py\b|\.cpp\b|\.h:\d+|/__w/|/work/|/home/|/usr/lib|/opt/')


def assert_no_internals(text: str, echoed: list[str] = ()) -> None:
    for value in echoed:  # a 404 may repeat the client's own model name: that is not a leak
        text = text.replace(value, "")
    match = LEAKS.search(text)
    assert match is None, f"internal detail {match.group(0)!r} in body: {text[:500]}"


def assert_well_behaved(status: int, content_type: str, text: str, *, echoed: list[str] = (), what: str = "") -> None:
    assert status < 500, f"{what}: {status} {text[:500]}"
    if 400 <= status < 500:
        assert content_type.startswith("application/json"), f"{what}: {status} with {content_type!r}: {text[:300]}"
        body = json.loads(text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], f"{what}: {text[:300]}"
    assert_no_internals(text, echoed)


@pytest.fixture(scope="module")
def api_schema(server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json", timeout=30)


def test_the_openapi_document_lists_every_operation(server, api_schema) -> None:
    r = httpx.get(f"{server.base_url}/openapi.json", timeout=30)
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
    published = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert published == set(OPERATIONS)


def _without_model_version(case: schemathesis.Case) -> schemathesis.Case:
    if case.query and "model_version" in case.query:
        case.query = {k: v for k, v in case.query.items() if k != "model_version"}
    return case


@pytest.mark.parametrize("method, path", [op for op in OPERATIONS if op != VERSIONED], ids=lambda x: str(x))
def test_no_operation_answers_5xx_or_leaks_internals(server, api_schema, method: str, path: str) -> None:
    operation = api_schema[path][method]
    pins = [None]
    if "{model_name}" in path:
        # The real model name too, or almost every case would stop at a 404 before reaching the model.
        pins.append({"model_name": server.model_name})
    strategy = st.one_of(
        [
            operation.as_strategy(generation_mode=mode, path_parameters=pin).map(_without_model_version)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for pin in pins
        ]
    )
    sent: list[int] = []

    @API_FUZZ
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.base_url, timeout=60)
        sent.append(response.status_code)
        echoed = [str(v) for v in (case.path_parameters or {}).values()]
        content_type = response.headers.get("content-type") or [""]  # schemathesis: name -> list of values
        assert_well_behaved(
            response.status_code,
            content_type[0],
            response.text,
            echoed=echoed,
            what=f"{method} {case.formatted_path} query={case.query} body={str(case.body)[:300]}",
        )

    check()
    assert sent, "no request was generated"
    assert server.process.poll() is None, "the server died"


# The OpenAPI document gives v1 :predict no body schema, so schemathesis sends it none; these bodies fill that gap.
_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=st.characters(codec="ascii"), max_size=10),
    ),
    lambda c: st.one_of(
        st.lists(c, max_size=4),
        st.dictionaries(st.text(alphabet=st.characters(codec="ascii"), max_size=6), c, max_size=3),
    ),
    max_leaves=16,
)
_v1_body = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "instances": st.one_of(
                st.lists(
                    st.one_of(_json, st.builds(lambda s: {"b64": s}, _json), st.just({"b64": b64(jpeg("chelsea"))})),
                    max_size=3,
                ),
                _json,
            )
        },
        optional={"top_k": st.one_of(st.integers(-5, 2000), st.text(alphabet="0123456789x -", max_size=4), _json)},
    ),
)


@API_FUZZ
@given(body=_v1_body)
def test_v1_predict_with_arbitrary_json_bodies_never_answers_5xx(server, body: Any) -> None:
    r = httpx.post(server.v1_url, json=body, timeout=60)
    assert_well_behaved(r.status_code, r.headers.get("content-type", ""), r.text, what=f"v1 body={str(body)[:300]}")


# ----------------------------------------------------------------------------- known bugs, reproduced exactly


@pytest.mark.parametrize("request_", ["metadata", "ready", "versioned ready", "infer"])
def test_a_model_version_is_a_client_error_not_a_501(server, request_: str) -> None:
    base, name = server.base_url, server.model_name
    r = {
        "metadata": lambda: httpx.get(f"{base}/v2/models/{name}", params={"model_version": "1"}, timeout=30),
        "ready": lambda: httpx.get(f"{base}/v2/models/{name}/ready", params={"model_version": "1"}, timeout=30),
        "versioned ready": lambda: httpx.get(f"{base}/v2/models/{name}/versions/1/ready", timeout=30),
        "infer": lambda: httpx.post(
            f"{base}/v2/models/{name}/infer",
            params={"model_version": "1"},
            timeout=30,
            json=v2_body(jpeg("chelsea")),
        ),
    }[request_]()
    assert_well_behaved(r.status_code, r.headers.get("content-type", ""), r.text)


def test_a_unicode_numeral_top_k_gets_400(server) -> None:
    r = server.post_v1(v1_body(jpeg("chelsea"), bare=True) | {"top_k": "²"})
    assert r.status_code == 400, r.text


def test_binary_request_with_string_output_parameters_gets_400(server) -> None:
    body, headers = v2_binary_body(
        {
            "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, 3]}],
            "outputs": [{"name": "probabilities", "parameters": "classification"}],
        }
    )
    r = server.post_v2(body, headers)
    assert r.status_code == 400, r.text


def test_an_extreme_aspect_ratio_image_gets_400(server) -> None:
    r = server.post_v1(v1_body(blank_png(1_000_000, 1), bare=True), timeout_s=120)
    assert r.status_code == 400, r.text


def test_an_undecodable_png_error_names_no_source_file(server) -> None:
    # Its header passes check_image (40 MP = max_image_pixels); libpng refuses widths over 1,000,000.
    r = server.post_v1(v1_body(blank_png(40_000_000, 1), bare=True), timeout_s=120)
    assert r.status_code == 400, r.text
    assert_no_internals(r.text)


# ----------------------------------------------------------------------------- and afterwards


def test_the_server_still_classifies_a_reference_photo_after_the_fuzzing(server) -> None:
    assert server.process.poll() is None, "the server died"
    start = time.monotonic()
    r = server.post_v1(v1_body(jpeg("chelsea"), bare=True), timeout_s=120)
    assert r.status_code == 200, r.text
    assert CAT_CLASSES & set(r.json()["predictions"][0]["class_names"][:3])
    assert time.monotonic() - start < 30
