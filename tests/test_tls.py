"""KServe's own TLS flags and variables: HTTPS where KServe says, TLS on gRPC, new certificates picked up,
and a half or broken pair refused at start. Every certificate is self-signed, made by the test."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from devtools import launcher, triton_grpc
from devtools.artifacts import make_small_artifact
from devtools.payloads import infer_request, infer_response_predictions, v1_body, v2_body
from devtools.photos import CAT_CLASSES, jpeg
from devtools.tls import self_signed
from predictor.__main__ import main
from predictor.server import PredictorServer
from predictor.tls import TLSConfig

KSERVE_HTTPS_PORT = 8443  # kserve.constants.DEFAULT_HTTPS_PORT: where KServe moves 8080 under TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(default_model_dir, certificate):
    cert, key = certificate
    running = launcher.start(
        default_model_dir, "--ssl_certfile", str(cert), "--ssl_keyfile", str(key), ca_file=str(cert)
    )
    yield running
    running.stop()


def _top3(prediction: dict) -> set[str]:
    return set(prediction["class_names"][:3])


def test_rest_is_https_with_kserves_flags(tls_server, certificate):
    cert, _ = certificate
    with httpx.Client(verify=tls_server.verify(), timeout=30) as client:
        v1 = client.post(tls_server.v1_url, json=v1_body(jpeg("chelsea")))
        v2 = client.post(tls_server.v2_url, json=v2_body(jpeg("chelsea")))
    assert v1.status_code == 200, v1.text
    assert CAT_CLASSES & _top3(v1.json()["predictions"][0])
    assert v2.status_code == 200, v2.text
    assert CAT_CLASSES & set(v2.json()["outputs"][0]["data"][:3])


def test_plain_http_gets_no_answer_on_the_https_port(tls_server):
    plain = f"http://127.0.0.1:{tls_server.http_port}/v2/health/live"
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain, timeout=5)
    tls_server.wait_ready(10)  # and the server is none the worse for it


def test_kserve_clients_over_tls(tls_server, certificate):
    cert, _ = certificate

    async def run() -> tuple:
        rest_v1 = InferenceRESTClient(RESTConfig(protocol="v1", verify=tls_server.verify()))
        rest_v2 = InferenceRESTClient(RESTConfig(protocol="v2", verify=tls_server.verify()))
        secure = InferenceGRPCClient(
            tls_server.grpc_url, creds=grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        )
        try:
            v1 = await rest_v1.infer(tls_server.base_url, v1_body(jpeg("chelsea")), model_name=tls_server.model_name)
            v2 = await rest_v2.infer(
                tls_server.base_url,
                infer_request(tls_server.model_name, jpeg("chelsea")),
                model_name=tls_server.model_name,
            )
            over_grpc = await secure.infer(infer_request(tls_server.model_name, jpeg("chelsea")))
        finally:
            await rest_v1.close()
            await rest_v2.close()
            await secure.close()
        return v1, v2, over_grpc

    v1, v2, over_grpc = asyncio.run(run())
    assert CAT_CLASSES & _top3(v1["predictions"][0])
    names = [infer_response_predictions(r)[0]["class_names"] for r in (v2, over_grpc)]
    assert names[0] == names[1] == v1["predictions"][0]["class_names"]


def test_grpc_is_tls_for_tritonclient_and_refuses_plain_text(tls_server, certificate):
    cert, _ = certificate
    images = np.array([jpeg("chelsea")], dtype=np.object_)
    result = triton_grpc.infer(
        tls_server.grpc_url, tls_server.model_name, [("image", "BYTES", images)], root_certificates=str(cert)
    )
    assert CAT_CLASSES & {n.decode() for n in result["class_names"][0][:3]}
    with pytest.raises(triton_grpc.TritonGrpcError) as plain:
        triton_grpc.infer(tls_server.grpc_url, tls_server.model_name, [("image", "BYTES", images)])
    assert plain.value.status == "StatusCode.UNAVAILABLE", plain.value


def test_grpcurl_with_the_ca_certificate(tls_server, certificate):
    grpcurl = Path(sys.executable).parent / "grpcurl"
    if not grpcurl.exists():
        pytest.skip("grpcurl comes with the dev extra on x86-64 Linux only")
    cert, _ = certificate
    listed = subprocess.run(
        [str(grpcurl), "-cacert", str(cert), tls_server.grpc_url, "list"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "inference.GRPCInferenceService" in listed.stdout.split()


@pytest.mark.slow
def test_a_transformer_reaches_a_tls_predictor_through_grpcs_root_certificates(
    default_model_dir, tls_server, certificate
):
    """--predictor_use_ssl trusts what gRPC trusts: the system roots, or the PEM file named by
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (a cluster's private CA). An untrusted predictor is a 503, not a 500."""
    cert, _ = certificate
    body = v1_body(jpeg("chelsea"), bare=True)
    trusting = launcher.start_transformer(
        default_model_dir,
        tls_server,
        "--predictor_use_ssl",
        "true",
        env={"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(cert)},
    )
    try:
        r = trusting.post_v1(body)
        assert r.status_code == 200, r.text
        assert CAT_CLASSES & _top3(r.json()["predictions"][0])
    finally:
        trusting.stop()
    untrusting = launcher.start_transformer(default_model_dir, tls_server, "--predictor_use_ssl", "true")
    try:
        r = untrusting.post_v1(body)
        assert r.status_code == 503, r.text
        assert "CERTIFICATE_VERIFY_FAILED" in r.json()["error"]
        assert untrusting.process.poll() is None
    finally:
        untrusting.stop()


def test_kserve_variables_serve_https_on_the_port_kserve_picks(small_artifact, certificate):
    """KSERVE_TLS_CERT_FILE / KSERVE_TLS_KEY_FILE, and --http_port left at KServe's 8080: HTTPS on 8443."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", KSERVE_HTTPS_PORT))
        except OSError:
            pytest.skip(f"port {KSERVE_HTTPS_PORT} is taken on this machine")
    cert, key = certificate
    running = launcher.start(
        small_artifact,
        "--http_port",
        "8080",  # KServe's default: what makes it pick 8443 (a later flag wins over the launcher's port)
        env={"KSERVE_TLS_CERT_FILE": str(cert), "KSERVE_TLS_KEY_FILE": str(key)},
        http_port=KSERVE_HTTPS_PORT,
        ca_file=str(cert),
    )
    try:
        r = httpx.get(f"https://127.0.0.1:{KSERVE_HTTPS_PORT}/v2/health/ready", verify=running.verify(), timeout=10)
        assert r.json() == {"ready": True}
        assert "Uvicorn running on https://127.0.0.1:8443" in running.log()
        assert "(TLS)" in running.log()
    finally:
        assert running.stop() == 0


def test_kserves_port_rule_applies_to_the_predictor_server(certificate):
    cert, key = certificate
    tls = TLSConfig(ssl_certfile=str(cert), ssl_keyfile=str(key))
    assert PredictorServer(tls=tls, http_port=8080).http_port == KSERVE_HTTPS_PORT
    assert PredictorServer(tls=tls, http_port=9000).http_port == 9000
    assert PredictorServer(http_port=8080).http_port == 8080


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("small")
    make_small_artifact(directory)
    return directory


def test_a_rotated_certificate_is_served_to_new_connections(small_artifact, tmp_path):
    """cert-manager renews a certificate in place: REST and gRPC take the new one without a restart."""
    cert, key = self_signed(tmp_path)
    first_ca = cert.read_bytes()
    running = launcher.start(small_artifact, "--ssl_certfile", str(cert), "--ssl_keyfile", str(key), ca_file=str(cert))
    try:
        assert _grpc_ready(running, first_ca)
        self_signed(tmp_path)  # a new key and certificate, written over the old files
        second_ca = cert.read_bytes()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (_rest_ready(running, cert) and _grpc_ready(running, second_ca)):
            time.sleep(0.5)
        assert _rest_ready(running, cert), running.log()[-2000:]
        assert _grpc_ready(running, second_ca), running.log()[-2000:]
        assert not _grpc_ready(running, first_ca)
    finally:
        assert running.stop() == 0


def _rest_ready(running: launcher.RunningServer, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{running.base_url}/v2/health/ready", verify=context, timeout=5).status_code == 200
    return False


def _grpc_ready(running: launcher.RunningServer, ca: bytes) -> bool:
    """A new connection that trusts only `ca` gets an answer."""
    with grpc.secure_channel(running.grpc_url, grpc.ssl_channel_credentials(root_certificates=ca)) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            return stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        except grpc.RpcError:
            return False


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--ssl_certfile", "{cert}"], "--ssl_certfile is set but --ssl_keyfile is not"),
        (["--ssl_certfile", "{key}", "--ssl_keyfile", "{key}"], "cannot serve TLS with certificate"),
        (["--ssl_certfile", "{cert}", "--ssl_keyfile", "{missing}"], "No such file"),
    ],
    ids=["certificate without key", "key given as certificate", "missing key"],
)
def test_a_half_or_broken_pair_is_refused_at_start(small_artifact, certificate, tmp_path, caplog, flags, fragment):
    cert, key = certificate
    names = {"cert": str(cert), "key": str(key), "missing": str(tmp_path / "missing.key")}
    argv = ["--model_dir", str(small_artifact), "--configure_logging", "false", *[f.format(**names) for f in flags]]
    with caplog.at_level(logging.ERROR, logger="predictor"):
        assert main(argv) == 2
    assert any("cannot start" in r.message and fragment in r.message for r in caplog.records), caplog.text


def test_a_key_variable_without_a_certificate_is_refused_at_start(small_artifact, certificate):
    """KServe reads KSERVE_TLS_* when the process starts, so this one is a real process."""
    _, key = certificate
    server = launcher.launch(small_artifact, env={"KSERVE_TLS_KEY_FILE": str(key)})
    assert server.wait_exit(120) == 2, server.log()[-2000:]
    assert "cannot start: --ssl_keyfile is set but --ssl_certfile is not" in server.log(), server.log()[-2000:]
    assert "Traceback" not in server.log()
