"""The GPU pipeline, on a real GPU: nvJPEG decode, bf16, CUDA graphs per bucket, real CUDA
out-of-memory. Skipped where there is no CUDA device; on a machine with one, `make gpu-check` runs
it with the GPU benchmarks (docs/BENCHMARKS.md, "GPU")."""

from __future__ import annotations

import asyncio

import pytest
import torch

from devtools import launcher
from devtools.payloads import b64
from devtools.photos import CAT_CLASSES, COFFEE_CLASSES, encode, jpeg, photo
from predictor.artifact import load_artifact
from predictor.engine import Engine, EngineConfig
from predictor.imaging import decode_cpu, decode_jpegs_gpu
from predictor.jobs import EncodedImage, Job, PixelImage
from predictor.preprocess import EvalTransform

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def lite0(default_model_dir):
    return load_artifact(default_model_dir)


def _run(engine: Engine, jobs: list[Job]):
    return asyncio.run(engine(jobs))


def test_nvjpeg_decodes_on_the_device_and_matches_the_cpu_decoder():
    data = [jpeg("chelsea"), jpeg("coffee")]
    decoded = decode_jpegs_gpu(data, torch.device("cuda"))
    for gpu, raw in zip(decoded, data, strict=False):
        assert gpu.is_cuda and gpu.dtype == torch.uint8
        # nvJPEG and libjpeg-turbo may differ by a rounding step per pixel, never more on average.
        assert (gpu.cpu().float() - decode_cpu(raw).float()).abs().mean() < 2.0


def test_a_bad_jpeg_in_a_gpu_batch_fails_alone():
    decoded = decode_jpegs_gpu([jpeg("chelsea"), jpeg("coffee")[:2000], jpeg("coffee")], torch.device("cuda"))
    assert decoded[0].is_cuda and decoded[2].is_cuda
    assert isinstance(decoded[1], Exception)


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_gpu_answers_match_the_cpu_in_each_precision(lite0, precision):
    jobs = [
        Job(EncodedImage(jpeg("chelsea")), 5),
        Job(EncodedImage(encode(photo("coffee"), "PNG")), 5),
        Job(PixelImage(torch.from_numpy(photo("chelsea")).permute(2, 0, 1).contiguous()), 5),
    ]
    cpu = Engine(lite0.module, EvalTransform.from_spec(lite0.spec), EngineConfig(device="cpu", max_batch_size=4))
    gpu = Engine(
        load_artifact(lite0.directory).module,
        EvalTransform.from_spec(lite0.spec),
        EngineConfig(device="cuda", precision=precision, max_batch_size=4),
    )
    gpu.warmup()
    for c, g in zip(_run(cpu, jobs), _run(gpu, jobs), strict=False):
        assert c.indices[0] == g.indices[0]
        assert abs(c.probabilities[0] - g.probabilities[0]) < 0.05
    cpu.close()
    gpu.close()


def test_compiled_cuda_graph_buckets_agree_with_eager(lite0):
    eager = Engine(lite0.module, EvalTransform.from_spec(lite0.spec), EngineConfig(device="cuda", max_batch_size=8))
    compiled = Engine(
        load_artifact(lite0.directory).module,
        EvalTransform.from_spec(lite0.spec),
        EngineConfig(device="cuda", max_batch_size=8, compile=True),
    )
    compiled.warmup()
    jobs = [Job(EncodedImage(jpeg(n)), 3) for n in ("chelsea", "coffee", "chelsea", "coffee", "chelsea")]  # pads to 8
    for a, b in zip(_run(eager, jobs), _run(compiled, jobs), strict=False):
        assert a.indices == b.indices
    eager.close()
    compiled.close()


class _HungryNet(torch.nn.Module):
    """Asks the allocator for more than the card holds once the batch exceeds `limit`: a real CUDA OOM."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            total = torch.cuda.get_device_properties(x.device).total_memory
            torch.empty(2 * total, dtype=torch.uint8, device=x.device)
        return self.inner(x)


def test_a_real_cuda_out_of_memory_splits_the_batch_and_recovers(lite0):
    module = _HungryNet(lite0.module, limit=2)
    engine = Engine(
        module, EvalTransform.from_spec(lite0.spec), EngineConfig(device="cuda", precision="fp32", max_batch_size=8)
    )
    jobs = [Job(EncodedImage(jpeg(n)), 3) for n in ("chelsea", "coffee") * 4]
    results = _run(engine, jobs)
    assert all(not isinstance(r, Exception) for r in results)
    assert results[0].indices == results[2].indices
    engine.close()


def test_the_server_serves_on_the_gpu(default_model_dir):
    running = launcher.start(default_model_dir, "--device", "cuda", "--max_batch_size", "32")
    try:
        import httpx

        r = httpx.post(
            f"{running.base_url}/v1/models/{running.model_name}:predict",
            json={"instances": [{"b64": b64(jpeg("chelsea"))}, {"b64": b64(jpeg("coffee"))}]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        first, second = r.json()["predictions"]
        assert CAT_CLASSES & set(first["class_names"][:3]) and COFFEE_CLASSES & set(second["class_names"][:3])
        assert "device=cuda" in running.log() or "cuda" in running.log()
        assert "predictor_device_memory_bytes" in running.metrics()
    finally:
        assert running.stop() == 0
