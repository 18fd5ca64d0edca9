"""`python -m predictor.combiner` as a real process: what an Ensemble node posts to it, averaged; every
malformed or inconsistent member answer a 400 that names the member and the problem."""

from __future__ import annotations

import httpx
import pytest

from devtools import launcher

URL_PATH = "/v1/models/combiner:predict"


@pytest.fixture(scope="module")
def combiner():
    running = launcher.start(None, "--top_k", "3", model_name="combiner", module="predictor.combiner")
    yield running
    running.stop()


def _post(combiner, body) -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(combiner.base_url + URL_PATH, json=None if content else body, content=content, timeout=30)


def _v1(*images: dict[int, tuple[str, float]]) -> dict:
    return {
        "predictions": [
            {
                "class_names": [name for name, _ in image.values()],
                "class_indices": list(image),
                "probabilities": [p for _, p in image.values()],
            }
            for image in images
        ]
    }


SMALL = _v1({281: ("tabby", 0.5), 282: ("tiger cat", 0.3), 285: ("Egyptian cat", 0.2)})
LARGE = _v1({282: ("tiger cat", 0.6), 281: ("tabby", 0.3), 287: ("lynx", 0.1)})


def test_v1_members_are_averaged_class_by_class(combiner):
    r = _post(combiner, {"small": SMALL, "large": LARGE})
    assert r.status_code == 200, r.text
    (image,) = r.json()["predictions"]
    assert image["class_indices"] == [282, 281, 285]  # 0.45, 0.40, 0.10; lynx 0.05 falls off top_k 3
    assert image["class_names"] == ["tiger cat", "tabby", "Egyptian cat"]
    assert image["probabilities"] == pytest.approx([0.45, 0.40, 0.10])


def test_v2_members_answer_in_v2(combiner):
    def v2(rows: list[tuple[int, str, float]]) -> dict:
        return {
            "model_name": "m",
            "outputs": [
                {"name": "class_names", "datatype": "BYTES", "shape": [1, len(rows)], "data": [n for _, n, _ in rows]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, len(rows)], "data": [p for *_, p in rows]},
                {"name": "class_indices", "datatype": "INT64", "shape": [1, len(rows)], "data": [i for i, *_ in rows]},
            ],
        }

    r = _post(combiner, {"a": v2([(1, "one", 0.9), (2, "two", 0.1)]), "b": v2([(2, "two", 0.7), (1, "one", 0.3)])})
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["class_indices"]["data"] == [1, 2] and outputs["class_indices"]["shape"] == [1, 2]
    assert outputs["probabilities"]["data"] == pytest.approx([0.6, 0.4])


@pytest.mark.parametrize(
    "body, message",
    [
        ({"small": SMALL}, "1 member(s) ('small'), fewer than min_members=2"),
        ({"small": SMALL, "large": {"error": "queue full"}}, "member 'large' answered an error: queue full"),
        (
            {"small": SMALL, "large": _v1({281: ("not a tabby", 0.9)})},
            "members disagree on class 281: 'tabby' and 'not a tabby'",
        ),
        ({"small": SMALL, "large": _v1({281: ("tabby", 1.5)})}, "probability 1.5 of class 281 is not a number in 0..1"),
        ({"small": SMALL, "large": {"outputs": []}}, "lacks the outputs"),
        ({"small": SMALL, "large": {"model_name": "x"}}, 'has neither "predictions" (v1) nor "outputs" (v2)'),
        ([SMALL, LARGE], "an Ensemble node's output"),
        (b"{not json", "Unrecognized request format"),  # KServe refuses it before the combiner sees it
    ],
)
def test_what_no_average_can_be_made_of_is_a_400_naming_it(combiner, body, message):
    r = _post(combiner, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert "Traceback" not in r.text
    assert _post(combiner, {"small": SMALL, "large": LARGE}).status_code == 200


def test_members_answering_for_different_numbers_of_images_are_refused(combiner):
    two = _v1({1: ("a", 0.5)}, {1: ("a", 0.5)})
    r = _post(combiner, {"small": SMALL, "large": two})
    assert r.status_code == 400 and "members answered for different numbers of images" in r.json()["error"]
