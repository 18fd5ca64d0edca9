"""`python -m predictor.combiner`: average the members' class probabilities, behind an InferenceGraph
Ensemble node.

KServe's graph router combines nothing: an Ensemble node answers `{"<step name>": <that step's
response>, ...}` (routeStep, kserve/kserve cmd/router/main.go). A Sequence step after it with
`data: $response` posts that object here, and this answers one classification in the members'
own protocol (v1 `predictions`, or v2 JSON `outputs`): per image, every class any member listed,
its probability averaged over the members, a class a member did not list counting 0 there. The
average is exact when the members answer every class (`"top_k": <num_classes>` in the request the
graph fans out); with a shorter top-k a class outside one member's list is under-counted.

Members must agree on the class names of an index, answer for the same number of images, and
carry no error body (a `Soft` step's failure is passed on as one): anything else is a 400 that
names the member and what is wrong.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

import kserve
import orjson
from kserve.errors import InvalidInput

from . import role
from .codec import OUTPUT_INDICES, OUTPUT_NAMES, OUTPUT_PROBABILITIES
from .flags import FlagConfig, flag

V1, V2 = "v1", "v2"


@dataclass(frozen=True)
class Ranking:
    """One image's answer from one member: class index -> (name, probability)."""

    classes: dict[int, tuple[str, float]]


@dataclass(frozen=True)
class CombinerConfig(FlagConfig):
    top_k: int = flag(5, "Classes in the combined answer, most probable first")
    min_members: int = flag(2, "Members an answer must combine; fewer is a 400 (a graph misconfigured or a step lost)")

    def __post_init__(self) -> None:
        for name in ("top_k", "min_members"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def combine(body: Any, top_k: int, min_members: int = 2) -> dict[str, Any]:
    """The Ensemble node's output in, the averaged classification out (in the members' protocol)."""
    if isinstance(body, (bytes, bytearray)):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InvalidInput(f"the body must be JSON, an Ensemble node's output: {e}") from e
    if not isinstance(body, dict) or not body:
        raise InvalidInput('the body must be an Ensemble node\'s output: {"<step name>": <response>, ...}')
    if len(body) < min_members:
        raise InvalidInput(
            f"{len(body)} member(s) ({', '.join(map(repr, body))}), fewer than min_members={min_members}"
        )
    protocols, members = set(), {}
    for name, response in body.items():
        protocol, rankings = _member(name, response)
        protocols.add(protocol)
        members[name] = rankings
    if len(protocols) > 1:
        raise InvalidInput("members answered in different protocols (v1 and v2); make every member's step the same")
    counts = {name: len(r) for name, r in members.items()}
    if len(set(counts.values())) > 1:
        raise InvalidInput(f"members answered for different numbers of images: {counts}")
    images = [
        _average([m[i] for m in members.values()], list(members), top_k) for i in range(next(iter(counts.values())))
    ]
    return _v1(images) if protocols == {V1} else _v2(images)


def _member(name: str, response: Any) -> tuple[str, list[Ranking]]:
    where = f"member {name!r}"
    if not isinstance(response, dict):
        raise InvalidInput(f"{where} must be a response object, got {type(response).__name__}")
    if "error" in response:
        raise InvalidInput(f"{where} answered an error: {str(response['error'])[:200]}")
    if "predictions" in response:
        return V1, _v1_rankings(response["predictions"], where)
    if "outputs" in response:
        return V2, _v2_rankings(response["outputs"], where)
    raise InvalidInput(f'{where} has neither "predictions" (v1) nor "outputs" (v2); keys {sorted(response)[:5]}')


def _v1_rankings(predictions: Any, where: str) -> list[Ranking]:
    if not isinstance(predictions, list):
        raise InvalidInput(f'{where}: "predictions" must be a list')
    rankings = []
    for i, p in enumerate(predictions):
        if not isinstance(p, dict):
            raise InvalidInput(f"{where} image {i} must be an object with class_indices, class_names, probabilities")
        rankings.append(
            _ranking(p.get(OUTPUT_INDICES), p.get(OUTPUT_NAMES), p.get(OUTPUT_PROBABILITIES), f"{where} image {i}")
        )
    return rankings


def _v2_rankings(outputs: Any, where: str) -> list[Ranking]:
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInput(f'{where}: "outputs" must be a list of objects')
    by_name = {o.get("name"): o for o in outputs}
    missing = [n for n in (OUTPUT_INDICES, OUTPUT_NAMES, OUTPUT_PROBABILITIES) if n not in by_name]
    if missing:
        raise InvalidInput(f"{where} lacks the outputs {missing}: ask every member for all three")
    shape = by_name[OUTPUT_PROBABILITIES].get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise InvalidInput(f"{where}: output 'probabilities' must have a shape [images, k], got {shape!r}")
    n, k = shape
    data = {name: by_name[name].get("data") for name in (OUTPUT_INDICES, OUTPUT_NAMES, OUTPUT_PROBABILITIES)}
    for name, values in data.items():
        if not isinstance(values, list) or len(values) != n * k:
            raise InvalidInput(f"{where}: output {name!r} must carry {n} x {k} values (JSON, not binary)")
    rows = {name: [values[i * k : (i + 1) * k] for i in range(n)] for name, values in data.items()}
    return [
        _ranking(rows[OUTPUT_INDICES][i], rows[OUTPUT_NAMES][i], rows[OUTPUT_PROBABILITIES][i], f"{where} image {i}")
        for i in range(n)
    ]


def _ranking(indices: Any, names: Any, probabilities: Any, where: str) -> Ranking:
    if not all(isinstance(v, list) for v in (indices, names, probabilities)) or not (
        len(indices) == len(names) == len(probabilities)
    ):
        raise InvalidInput(f"{where}: class_indices, class_names and probabilities must be lists of one length")
    classes = {}
    for index, name, p in zip(indices, names, probabilities, strict=True):
        if isinstance(index, bool) or not isinstance(index, int) or index < 0 or not isinstance(name, str):
            raise InvalidInput(f"{where}: class {index!r} ({name!r}) is not an index >= 0 with a name")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
            raise InvalidInput(f"{where}: probability {p!r} of class {index} is not a number in 0..1")
        classes[index] = (name, float(p))
    return Ranking(classes)


def _average(rankings: list[Ranking], members: list[str], top_k: int) -> list[tuple[int, str, float]]:
    names: dict[int, str] = {}
    totals: dict[int, float] = {}
    for member, ranking in zip(members, rankings, strict=True):
        for index, (name, p) in ranking.classes.items():
            if names.setdefault(index, name) != name:
                raise InvalidInput(
                    f"members disagree on class {index}: {names[index]!r} and {name!r} (member {member!r}); "
                    "an ensemble averages models of one label set"
                )
            totals[index] = totals.get(index, 0.0) + p
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return [(index, names[index], total / len(rankings)) for index, total in ranked]


def _v1(images: list[list[tuple[int, str, float]]]) -> dict[str, Any]:
    return {
        "predictions": [
            {
                OUTPUT_NAMES: [n for _, n, _ in image],
                OUTPUT_INDICES: [i for i, _, _ in image],
                OUTPUT_PROBABILITIES: [p for _, _, p in image],
            }
            for image in images
        ]
    }


def _v2(images: list[list[tuple[int, str, float]]]) -> dict[str, Any]:
    k = max((len(image) for image in images), default=0)
    if any(len(image) != k for image in images):
        raise InvalidInput("members listed fewer classes for some images than others; ask for the same top_k")
    columns = {
        OUTPUT_NAMES: ("BYTES", [n for image in images for _, n, _ in image]),
        OUTPUT_PROBABILITIES: ("FP32", [p for image in images for _, _, p in image]),
        OUTPUT_INDICES: ("INT64", [i for image in images for i, _, _ in image]),
    }
    return {
        "model_name": "combiner",
        "outputs": [
            {"name": name, "datatype": datatype, "shape": [len(images), k], "data": data}
            for name, (datatype, data) in columns.items()
        ],
    }


class ProbabilityAverager(kserve.Model):
    def __init__(self, name: str, config: CombinerConfig) -> None:
        super().__init__(name)
        self.config = config
        self.ready = True

    def load(self) -> bool:
        return self.ready

    def validate(self, payload: Any) -> Any:
        return payload

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return combine(payload, self.config.top_k, self.config.min_members)


def build_parser() -> argparse.ArgumentParser:
    parser = role.parser("python -m predictor.combiner", __doc__.split("\n\n")[0])
    parser.set_defaults(model_name="combiner")
    CombinerConfig.add_flags(parser, "combining")
    return parser


def _prepare(args: argparse.Namespace) -> role.ModelFactory:
    config = CombinerConfig.from_args(args)
    if args.workers != 1:
        raise ValueError("the combiner runs one process (it is cheap): drop --workers")

    def build(name: str, **_: Any) -> kserve.Model:
        from .transformer.metrics import unregister_predictor_metrics

        unregister_predictor_metrics()
        return ProbabilityAverager(name, config)

    return build


def main(argv: list[str] | None = None) -> int:
    return role.main(argv, build_parser(), module="predictor.combiner", prepare=_prepare)


if __name__ == "__main__":
    sys.exit(main())
