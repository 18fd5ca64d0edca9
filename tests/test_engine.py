"""The engine on its own: batches of jobs in, top-k out; per-image failures stay per image;
out-of-memory splits the batch; compiled buckets give the same answers as eager; warm-up
reports each batch shape it prepared."""

from __future__ import annotations

import asyncio
import re

import pytest
import torch
from kserve.errors import InvalidInput

from devtools.artifacts import make_small_artifact, reference_batch
from devtools.photos import encode, jpeg, photo
from predictor.artifact import load_artifact
from predictor.engine import Engine, EngineConfig, batch_buckets
from predictor.jobs import EncodedImage, Job, PixelImage, PreprocessedImage
from predictor.preprocess import EvalTransform


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    make_small_artifact(directory)
    return load_artifact(directory)


def _engine(artifact, **config) -> Engine:
    engine = Engine(artifact.module, EvalTransform.from_spec(artifact.spec), EngineConfig(device="cpu", **config))
    engine.warmup()
    return engine


def _run(engine: Engine, jobs: list[Job]):
    return asyncio.run(engine(jobs))


def test_every_input_kind_gives_the_reference_answer(small):
    engine = _engine(small, max_batch_size=8)
    reference = reference_batch(photo("chelsea"), small.spec)
    with torch.inference_mode():
        expected = torch.softmax(small.module(reference), -1).topk(3)
    pixels = torch.from_numpy(photo("chelsea")).permute(2, 0, 1).contiguous()
    jobs = [
        Job(EncodedImage(encode(photo("chelsea"), "PNG")), 3),  # lossless: same pixels as the reference
        Job(PixelImage(pixels), 3),
        Job(PreprocessedImage(reference[0]), 3),
    ]
    for prediction in _run(engine, jobs):
        assert prediction.indices == expected.indices[0].tolist()
        torch.testing.assert_close(torch.tensor(prediction.probabilities), expected.values[0], rtol=1e-3, atol=1e-4)
    engine.close()


def test_an_undecodable_image_fails_alone_and_its_batch_mates_are_answered(small):
    engine = _engine(small, max_batch_size=4)
    jobs = [
        Job(EncodedImage(jpeg("coffee")), 2),
        Job(EncodedImage(jpeg("chelsea")[:3000]), 2),
        Job(EncodedImage(jpeg("chelsea")), 2),
    ]
    good, bad, also_good = _run(engine, jobs)
    assert isinstance(bad, InvalidInput) and "could not be decoded" in str(bad)
    assert len(good.indices) == len(also_good.indices) == 2
    engine.close()


def test_each_job_gets_at_least_its_top_k(small):
    engine = _engine(small, max_batch_size=4)
    results = _run(engine, [Job(EncodedImage(jpeg("coffee")), 1), Job(EncodedImage(jpeg("coffee")), 5)])
    assert len(results[1].indices) == 5 and results[0].indices[0] == results[1].indices[0]
    engine.close()


class _RunsOutOfMemoryAbove(torch.nn.Module):
    """Stands in for a GPU that cannot hold more than `limit` images: raises the real torch error."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_splits_the_batch_and_every_image_is_answered(small, caplog):
    module = _RunsOutOfMemoryAbove(small.module, limit=2)
    engine = Engine(module, EvalTransform.from_spec(small.spec), EngineConfig(device="cpu", max_batch_size=8))
    jobs = [Job(EncodedImage(jpeg(name)), 3) for name in ("chelsea", "coffee") * 4]
    alone = _run(engine, jobs[:2])
    module.calls.clear()
    results = _run(engine, jobs)
    assert all(len(r.indices) == 3 for r in results)
    assert [r.indices for r in results] == [alone[0].indices, alone[1].indices] * 4
    # 8 fails, each half of 4 fails, every quarter of 2 runs.
    assert module.calls == [8, 4, 2, 2, 4, 2, 2]
    assert sum("out of memory" in r.message for r in caplog.records) == 1, "logged once"
    _run(engine, jobs)
    assert sum("out of memory" in r.message for r in caplog.records) == 1, "still logged once"
    engine.close()


def test_buckets_are_powers_of_two_up_to_the_max():
    assert batch_buckets(1) == [1]
    assert batch_buckets(8) == [1, 2, 4, 8]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]


class _TinyNet(torch.nn.Module):
    """Small enough for inductor to compile in seconds on 2 cores (the real models take minutes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_compiled_engine_pads_to_buckets_and_agrees_with_eager(small):
    transform = EvalTransform.from_spec(small.spec)
    eager = Engine(_TinyNet().eval(), transform, EngineConfig(device="cpu", max_batch_size=4))
    compiled = Engine(_TinyNet().eval(), transform, EngineConfig(device="cpu", max_batch_size=4, compile=True))
    compiled.warmup()  # compiles every bucket before the first request
    assert compiled.buckets == [1, 2, 4]
    jobs = [Job(EncodedImage(jpeg(name)), 3) for name in ("chelsea", "coffee", "chelsea")]  # 3 pads to 4
    for a, b in zip(_run(eager, jobs), _run(compiled, jobs), strict=False):
        assert a.indices == b.indices
        torch.testing.assert_close(torch.tensor(a.probabilities), torch.tensor(b.probabilities), rtol=1e-3, atol=1e-4)
    eager.close()
    compiled.close()


def test_warm_up_logs_one_line_per_batch_shape_with_its_seconds(small, caplog):
    with caplog.at_level("INFO", logger="predictor.engine"):
        engine = _engine(small, max_batch_size=8)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("engine warm-up:")]
    assert [line.split(" ready in ")[0] for line in lines] == [
        "engine warm-up: batch size 1",
        "engine warm-up: batch size 8",
    ]
    assert all(re.fullmatch(r"engine warm-up: batch size \d+ ready in \d+\.\d\d s", line) for line in lines), lines
    engine.close()


def test_compiled_engine_captures_only_the_chosen_buckets(small, caplog):
    transform = EvalTransform.from_spec(small.spec)
    eager = Engine(_TinyNet().eval(), transform, EngineConfig(device="cpu", max_batch_size=4))
    config = EngineConfig(device="cpu", max_batch_size=4, compile=True, batch_buckets=(1, 4))
    compiled = Engine(_TinyNet().eval(), transform, config)
    with caplog.at_level("INFO", logger="predictor.engine"):
        compiled.warmup()  # one compilation and capture per bucket, each logged with its time
    assert compiled.buckets == [1, 4]
    assert [r.getMessage().split(" ready in ")[0] for r in caplog.records if "warm-up" in r.getMessage()] == [
        "engine warm-up: batch size 1",
        "engine warm-up: batch size 4",
    ]
    jobs = [Job(EncodedImage(jpeg(name)), 3) for name in ("chelsea", "coffee")]  # 2 pads to 4
    for a, b in zip(_run(eager, jobs), _run(compiled, jobs), strict=False):
        assert a.indices == b.indices
    eager.close()
    compiled.close()


@pytest.mark.parametrize(
    ("buckets", "compile_", "rule"),
    [
        ((1, 8), False, "only applies with compile"),
        ((8, 1), True, "increasing integers >= 1"),
        ((0, 8), True, "increasing integers >= 1"),
        ((1, 4, 4, 8), True, "increasing integers >= 1"),
        ((1, 4), True, r"must equal max_batch_size \(8\)"),
    ],
)
def test_bucket_rules_are_stated(buckets, compile_, rule):
    with pytest.raises(ValueError, match=rule):
        EngineConfig(device="cpu", max_batch_size=8, compile=compile_, batch_buckets=buckets)


def test_config_rules_are_stated():
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        EngineConfig(device="tpu")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        EngineConfig(precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            EngineConfig(device="cuda")
    assert EngineConfig(device="cpu").resolved_precision() == "fp32"
