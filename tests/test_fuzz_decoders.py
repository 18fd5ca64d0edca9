"""Property tests of the request decoders, in-process (no server).

The contract every decoder keeps: whatever a client sends, the only exception that
escapes is KServe's `InvalidInput` (a 400 / INVALID_ARGUMENT with a message). Any
other exception type reaches KServe's generic handler as a 500, so it is a bug.
And the positive half: a well-formed request decodes to exactly the images it carries.

Inputs are limited to what the wire can deliver: orjson turns integers beyond 64 bits
into floats and refuses Infinity, and gRPC carries int64/uint64, so a Python int of
2**1000 can never reach a decoder and is not generated.

Deterministic for CI: derandomized, no example database.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from PIL import Image

from devtools.payloads import b64, bytes_element
from devtools.photos import encode
from predictor import codec, v2_binary
from predictor.imaging import check_image, header_size
from predictor.limits import RequestLimits

MODEL = codec.ModelShape(crop_size=8, num_classes=10, default_top_k=5)
# Small limits so that generated shapes cross them often and arrays stay small.
LIMITS = RequestLimits(max_images_per_request=4, max_image_pixels=64 * 64, max_tensor_elements=4 * 3 * 16 * 16)

FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def only_invalid_input(call: Callable[[], Any]) -> Any:
    """Run a decoder: return its result or None on InvalidInput; any other exception fails the test."""
    try:
        return call()
    except InvalidInput as e:
        # A 400 must say something: an empty reason is as unhelpful as a 500.
        assert str(e.reason).strip(), "InvalidInput without a message"
        return None


# ----------------------------------------------------------------------------- strategies


def _encode(fmt: str, width: int, height: int, mode: str = "RGB") -> bytes:
    """A one-colour image; JPEGs at Pillow's default quality."""
    color = {"L": 90, "RGB": (120, 30, 200), "RGBA": (120, 30, 200, 255)}[mode]
    pixels = np.full((height, width, len(mode)) if mode != "L" else (height, width), color, dtype=np.uint8)
    return encode(pixels, fmt, **({"quality": 75} if fmt == "JPEG" else {}))


# Real, small images of every accepted format (and two refused ones), the seeds that mutations start from.
GOOD_IMAGES: list[bytes] = [
    _encode("JPEG", 7, 5),
    _encode("PNG", 5, 7),
    _encode("PNG", 4, 4, "RGBA"),
    _encode("WEBP", 6, 6),
    _encode("JPEG", 3, 9, "L"),
]
REFUSED_IMAGES: list[bytes] = [_encode("GIF", 4, 4), _encode("TIFF", 4, 4), _encode("BMP", 4, 4)]
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"II*\x00", b"8BPS", b"BM"]


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """A real image with its header or body damaged: truncated, bytes overwritten, dims patched."""
    data = bytearray(draw(st.sampled_from(GOOD_IMAGES + REFUSED_IMAGES)))
    how = draw(st.sampled_from(["truncate", "flip", "patch_png_dims", "insert", "append"]))
    if how == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif how == "patch_png_dims" and len(data) >= 24:
        # PNG width/height straight from IHDR: 0, huge, or products past any limit.
        w, h = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
        data[16:24] = struct.pack(">II", w, h)
    elif how == "insert":
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=32))
    else:
        data += draw(st.binary(max_size=64))
    return bytes(data)


image_bytes = st.one_of(
    st.binary(max_size=256),
    st.builds(lambda m, rest: m + rest, st.sampled_from(MAGICS), st.binary(max_size=128)),
    mutated_image(),
    st.sampled_from(GOOD_IMAGES + REFUSED_IMAGES),
)

# Strings a client might put where an integer belongs: Unicode digits (Nd) and other numerals (No: "²", "①", "½").
# Seeded with the tricky ones, since a uniform draw over Unicode rarely lands on them.
digit_strings = st.one_of(
    st.sampled_from(["²", "³", "①", "٣", "½", "5", "05", " 5", "+5", "1_0"]),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=3),
)
wire_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
wire_floats = st.floats(allow_nan=True, allow_infinity=False)  # JSON has no Infinity; "NaN" arrives as a string
json_scalars = st.one_of(st.none(), st.booleans(), wire_ints, wire_floats, st.text(max_size=12), digit_strings)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=24,
)
integer_like = st.one_of(
    st.integers(-3, 1200), wire_ints, digit_strings, st.text(max_size=4), wire_floats, st.booleans(), st.none()
)


@st.composite
def v1_bodies(draw: st.DrawFn) -> Any:
    """Mostly v1-shaped bodies with something wrong somewhere, sometimes anything at all."""
    instance = st.one_of(
        st.builds(lambda d: {"b64": b64(d)}, image_bytes),
        st.builds(lambda d: {"image": {"b64": b64(d)}}, image_bytes),
        st.builds(lambda s: {"b64": s}, st.one_of(st.text(max_size=16), json_scalars)),
        # [3, S, S]-ish nested lists, right or wrong in shape, with strings, NaN-strings, None...
        st.builds(
            lambda c, h, w, v: [[[v] * w] * h] * c,
            st.integers(0, 4),
            st.integers(0, 9),
            st.integers(0, 9),
            st.one_of(wire_floats, wire_ints, st.sampled_from(["NaN", "inf", "1.5", "x"]), st.none()),
        ),
        json_values,
    )
    body: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        # Mostly a valid instance list with at most one bad instance, so that decoding gets past it to top_k.
        instances = draw(
            st.lists(st.builds(lambda d: {"b64": b64(d)}, st.sampled_from(GOOD_IMAGES)), min_size=1, max_size=3)
        )
        if draw(st.booleans()):
            instances.insert(draw(st.integers(0, len(instances))), draw(instance))
        body["instances"] = draw(st.one_of(st.just(instances), st.lists(instance, max_size=5), json_values))
    if draw(st.booleans()):
        body["top_k"] = draw(integer_like)
    extra = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2))
    return draw(st.one_of(st.just({**extra, **body}), st.just({**extra, **body}), json_values))


v2_names = st.one_of(st.sampled_from(["image", "pixels", "tensor"]), st.text(max_size=8))
v2_datatypes = st.one_of(st.sampled_from(["BYTES", "UINT8", "FP32", "FP16", "INT64", "BOOL"]), st.text(max_size=6))
v2_shapes = st.one_of(
    st.lists(st.one_of(st.integers(-2, 10), st.sampled_from([MODEL.crop_size, 3])), max_size=5),
    st.lists(wire_ints, max_size=4),
    st.lists(
        st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.text(max_size=2)), max_size=3
    ),
    st.none(),
    st.text(max_size=3),
)
output_parameters = st.dictionaries(
    st.sampled_from(["classification", "class_count", "binary_data", "other"]), integer_like, max_size=3
)
requested_outputs = st.builds(
    RequestedOutput, st.one_of(st.sampled_from(list(codec.OUTPUT_DATATYPES)), st.text(max_size=6)), output_parameters
)


@st.composite
def v2_data(draw: st.DrawFn, shape: Any, datatype: str) -> Any:
    """Data that sometimes matches the declared shape, in the forms REST and gRPC deliver it."""
    try:
        count = int(np.prod([int(d) for d in shape])) if isinstance(shape, list) else 3
    except (TypeError, ValueError, OverflowError):
        count = 3
    count = max(0, min(count, 300)) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    count = max(count, 0)
    if datatype == "BYTES":
        element = st.one_of(st.builds(b64, image_bytes), image_bytes, st.text(max_size=8), json_scalars)
    elif datatype == "UINT8":
        element = st.one_of(st.integers(0, 255), st.integers(-300, 600), wire_floats, st.just("NaN"), st.booleans())
    else:
        element = st.one_of(wire_floats, wire_ints, st.sampled_from(["NaN", "-inf", "0.5"]), st.none())
    flat = draw(st.lists(element, min_size=count, max_size=count))
    # REST sends flat or nested lists; gRPC a flat list; the numpy path an ndarray.
    form = draw(st.sampled_from(["flat", "nested", "tuple", "json"]))
    if form == "nested" and flat:
        return [flat[i : i + 3] for i in range(0, len(flat), 3)]
    if form == "tuple":
        return tuple(flat)
    if form == "json":
        return draw(json_values)
    return flat


@st.composite
def raw_data(draw: st.DrawFn, shape: Any, datatype: str) -> bytes:
    """Binary tensor data: the right byte count (sometimes), or BYTES elements with honest or lying length prefixes."""
    if datatype == "BYTES":
        items = draw(st.lists(image_bytes, max_size=4))
        out = b"".join(bytes_element(i) for i in items)
        if draw(st.booleans()):
            out = out[: draw(st.integers(0, len(out)))] + draw(st.binary(max_size=8))
        return out
    try:
        count = int(np.prod([int(d) for d in shape])) if isinstance(shape, list) else 1
    except (TypeError, ValueError, OverflowError):
        count = 1
    size = max(0, min(count, 4096)) * (4 if datatype == "FP32" else 1) + draw(st.sampled_from([0, 0, -1, 3]))
    if draw(st.booleans()):
        # Valid float32 data including NaN / Inf bit patterns.
        values = draw(st.lists(st.floats(width=32), min_size=max(size // 4, 0), max_size=max(size // 4, 0)))
        return np.asarray(values, dtype=np.float32).tobytes()[: max(size, 0)]
    return draw(st.binary(min_size=max(size, 0), max_size=max(size, 0)))


@st.composite
def v2_requests(draw: st.DrawFn) -> InferRequest:
    """Half: anything request-shaped. Half: a well-formed request with one thing broken, so that
    the checks deep in the decoder (top_k, outputs, element counts) are reached too."""
    if draw(st.booleans()):
        return draw(broken_v2())
    inputs = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
        name, datatype, shape = draw(v2_names), draw(v2_datatypes), draw(v2_shapes)
        tensor = InferInput(name=name, shape=shape, datatype=datatype)
        if draw(st.booleans()):
            tensor._raw_data = draw(raw_data(shape, datatype.upper()))
        else:
            tensor.data = draw(v2_data(shape, datatype.upper()))
        inputs.append(tensor)
    parameters = draw(
        st.one_of(
            st.none(), st.dictionaries(st.sampled_from(["top_k", "binary_data_output", "x"]), integer_like, max_size=2)
        )
    )
    outputs = draw(st.one_of(st.none(), st.lists(requested_outputs, max_size=3)))
    return InferRequest(model_name="m", infer_inputs=inputs, parameters=parameters, request_outputs=outputs)


@st.composite
def broken_v2(draw: st.DrawFn) -> InferRequest:
    request, _ = draw(good_v2())
    tensor = request.inputs[0]
    what = draw(st.sampled_from(["top_k", "outputs", "shape", "datatype", "data", "raw"]))
    if what == "top_k":
        request.parameters = {"top_k": draw(integer_like)}
    elif what == "outputs":
        request.request_outputs = draw(st.lists(requested_outputs, min_size=1, max_size=3))
    elif what == "shape":
        tensor.shape = draw(v2_shapes)
    elif what == "datatype":
        tensor._datatype = draw(v2_datatypes)
    elif what == "data" and tensor._raw_data is None:
        flat = codec.tensors.flatten(tensor.data)
        if flat and draw(st.booleans()):
            flat[draw(st.integers(0, len(flat) - 1))] = draw(json_scalars)
        else:
            flat = flat[: draw(st.integers(0, len(flat)))] + draw(st.lists(json_scalars, max_size=2))
        tensor.data = flat
    elif tensor._raw_data is not None:
        raw = bytes(tensor._raw_data)
        cut = draw(st.integers(0, len(raw)))
        tensor._raw_data = raw[:cut] + draw(st.binary(max_size=8)) + (raw[cut:] if draw(st.booleans()) else b"")
    return request


# ----------------------------------------------------------------------------- the only exception is InvalidInput


# The v1 top_k is `_positive_int`'s first customer: Unicode "digits" such as "²" pass str.isdigit() but not int().
@FUZZ
@given(body=v1_bodies())
@example(body={"instances": [{"b64": b64(GOOD_IMAGES[0])}], "top_k": "3"})
def test_decode_v1_raises_only_invalid_input(body: Any) -> None:
    only_invalid_input(lambda: codec.decode_v1(body, MODEL, LIMITS))


@FUZZ
@given(request=v2_requests())
def test_decode_v2_raises_only_invalid_input(request: InferRequest) -> None:
    only_invalid_input(lambda: codec.decode_v2(request, MODEL, LIMITS))


@st.composite
def binary_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A v2 binary-extension body: a JSON header (often plausible, sometimes anything) + binary data,
    and an inference-header-content-length that may or may not tell the truth."""
    if draw(st.booleans()):
        # A valid pixels input, as JSON data or as binary: the header's other fields decide the outcome.
        pixels = draw(st.lists(st.integers(0, 255), min_size=3, max_size=3))
        spec: dict[str, Any] = {"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3]}
        if draw(st.booleans()):
            spec["data"], binary = pixels, b""
        else:
            binary = bytes(pixels)
            spec["parameters"] = {"binary_data_size": 3}
    else:
        spec = {"name": draw(v2_names), "datatype": draw(v2_datatypes), "shape": draw(v2_shapes)}
        binary = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            spec["parameters"] = {"binary_data_size": draw(st.one_of(st.just(len(binary)), integer_like))}
        else:
            spec["data"] = draw(json_values)
    header: Any = {"inputs": [spec]}
    if draw(st.booleans()):
        header["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(list(codec.OUTPUT_DATATYPES))},
                        # Not only objects: a string or list that happens to contain a parameter's name, too.
                        optional={
                            "parameters": st.one_of(
                                output_parameters,
                                json_values,
                                st.sampled_from(["classification", ["class_count"], "binary_data"]),
                            )
                        },
                    ),
                    max_size=2,
                ),
                json_values,
            )
        )
    if draw(st.booleans()):
        header["parameters"] = draw(
            st.one_of(st.dictionaries(st.sampled_from(["top_k", "x"]), integer_like, max_size=2), json_values)
        )
    if draw(st.booleans()):
        header["id"] = draw(json_values)
    if draw(st.integers(0, 19)) == 0:
        header = draw(json_values)
    head = json.dumps(header).encode()
    if draw(st.integers(0, 19)) == 0:
        head = draw(st.binary(max_size=32))
    # Mostly the true length, so that the rest of the body gets parsed.
    length = (
        str(len(head))
        if draw(st.integers(0, 3))
        else draw(st.one_of(st.integers(-5, len(head) + len(binary) + 5).map(str), st.text(max_size=6), digit_strings))
    )
    headers = {} if draw(st.integers(0, 19)) == 0 else {v2_binary.HEADER: length}
    return head + binary, headers


@FUZZ
@given(body_and_headers=binary_bodies())
def test_v2_binary_parse_and_decode_raise_only_invalid_input(body_and_headers: tuple[bytes, dict[str, str]]) -> None:
    body, headers = body_and_headers
    # What the server does with a binary body: parse, then decode the request it yields.
    only_invalid_input(lambda: codec.decode_v2(v2_binary.parse(body, headers, "m"), MODEL, LIMITS))


@FUZZ
@given(data=image_bytes)
def test_check_image_raises_only_invalid_input(data: bytes) -> None:
    fmt = only_invalid_input(
        lambda: check_image(data, max_pixels=LIMITS.max_image_pixels, max_aspect_ratio=LIMITS.max_aspect_ratio)
    )
    assert fmt in (None, "jpeg", "png", "webp")


# ----------------------------------------------------------------------------- known bugs, reproduced exactly


# Inputs the fuzzers above once found (each was a 500), kept as explicit, named reproducers.
@pytest.mark.parametrize("where", ["v1 top_k", "v2 top_k", "v2 class_count"])
def test_a_unicode_numeral_as_top_k_is_invalid_input(where: str) -> None:
    pixels = InferInput("pixels", [1, 1, 1, 3], "UINT8", data=[1, 2, 3])
    decoders = {
        "v1 top_k": lambda: codec.decode_v1({"instances": [{"b64": b64(GOOD_IMAGES[0])}], "top_k": "²"}, MODEL, LIMITS),
        "v2 top_k": lambda: codec.decode_v2(InferRequest("m", [pixels], parameters={"top_k": "²"}), MODEL, LIMITS),
        "v2 class_count": lambda: codec.decode_v2(
            InferRequest("m", [pixels], request_outputs=[RequestedOutput("probabilities", {"class_count": "²"})]),
            MODEL,
            LIMITS,
        ),
    }
    with pytest.raises(InvalidInput):
        decoders[where]()


@pytest.mark.parametrize("parameters", ["classification", ["class_count"]], ids=["string", "list"])
def test_binary_outputs_parameters_that_are_not_an_object_are_invalid_input(parameters: Any) -> None:
    head = json.dumps(
        {
            "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, 3]}],
            "outputs": [{"name": "probabilities", "parameters": parameters}],
        }
    ).encode()
    with pytest.raises(InvalidInput):
        codec.decode_v2(v2_binary.parse(head, {v2_binary.HEADER: str(len(head))}, "m"), MODEL, LIMITS)


# ----------------------------------------------------------------------------- well-formed requests decode


@st.composite
def good_v1(draw: st.DrawFn) -> tuple[dict, int]:
    n = draw(st.integers(1, LIMITS.max_images_per_request))
    s = MODEL.crop_size
    instances = draw(
        st.lists(
            st.one_of(
                st.builds(lambda d: {"b64": b64(d)}, st.sampled_from(GOOD_IMAGES)),
                st.builds(lambda d: {"image": {"b64": b64(d)}}, st.sampled_from(GOOD_IMAGES)),
                st.floats(-3, 3, allow_nan=False).map(lambda v: [[[v] * s] * s] * 3),
            ),
            min_size=n,
            max_size=n,
        )
    )
    body: dict[str, Any] = {"instances": instances}
    if draw(st.booleans()):
        body["top_k"] = draw(st.one_of(st.integers(1, MODEL.num_classes), st.integers(1, MODEL.num_classes).map(str)))
    return body, n


@FUZZ
@given(case=good_v1())
def test_a_well_formed_v1_request_decodes_to_one_image_per_instance(case: tuple[dict, int]) -> None:
    body, n = case
    decoded = codec.decode_v1(body, MODEL, LIMITS)
    assert len(decoded.images) == n
    assert 1 <= decoded.top_k <= MODEL.num_classes
    assert int(body.get("top_k", decoded.top_k)) == decoded.top_k


@st.composite
def good_v2(draw: st.DrawFn) -> tuple[InferRequest, int]:
    n = draw(st.integers(1, LIMITS.max_images_per_request))
    kind = draw(st.sampled_from(["image", "pixels", "tensor"]))
    raw = draw(st.booleans())
    if kind == "image":
        items = draw(st.lists(st.sampled_from(GOOD_IMAGES), min_size=n, max_size=n))
        shape = draw(st.sampled_from([[n], [n, 1]]))
        tensor = InferInput("image", shape, "BYTES")
        if raw:
            tensor._raw_data = b"".join(bytes_element(i) for i in items)
        else:
            tensor.data = draw(st.sampled_from([[b64(i) for i in items], items]))  # REST strings, gRPC bytes
    else:
        if kind == "pixels":
            h, w, c = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.sampled_from([1, 3, 4]))
            dims = [h, w, c]
            array = np.asarray(
                draw(st.lists(st.integers(0, 255), min_size=n * h * w * c, max_size=n * h * w * c)), dtype=np.uint8
            )
            datatype = "UINT8"
        else:
            dims = [3, MODEL.crop_size, MODEL.crop_size]
            array = np.full(n * 3 * MODEL.crop_size**2, draw(st.floats(-3, 3, width=32)), dtype=np.float32)
            datatype = "FP32"
        # [H, W, C] / [3, S, S] without the batch dimension is one image.
        shape = dims if n == 1 and draw(st.booleans()) else [n, *dims]
        tensor = InferInput(kind, shape, datatype)
        if raw:
            tensor._raw_data = array.tobytes()
        else:
            tensor.data = array.tolist()
    outputs = draw(
        st.one_of(
            st.none(),
            st.lists(
                st.builds(
                    RequestedOutput,
                    st.sampled_from(list(codec.OUTPUT_DATATYPES)),
                    st.fixed_dictionaries(
                        {}, optional={"class_count": st.integers(1, MODEL.num_classes), "binary_data": st.booleans()}
                    ),
                ),
                min_size=1,
                max_size=3,
                unique_by=lambda o: o.name,
            ),
        )
    )
    parameters = draw(st.one_of(st.none(), st.fixed_dictionaries({"top_k": st.integers(1, MODEL.num_classes)})))
    return InferRequest("m", [tensor], parameters=parameters, request_outputs=outputs), n


@FUZZ
@given(case=good_v2())
def test_a_well_formed_v2_request_decodes_to_one_image_per_element(case: tuple[InferRequest, int]) -> None:
    request, n = case
    decoded = codec.decode_v2(request, MODEL, LIMITS)
    assert len(decoded.images) == n
    for image in decoded.images:
        if isinstance(image, codec.PixelImage):
            assert image.pixels.dtype.is_floating_point is False and image.pixels.shape[0] == 3
        if isinstance(image, codec.PreprocessedImage):
            assert tuple(image.tensor.shape) == (3, MODEL.crop_size, MODEL.crop_size)
    assert [o.name for o in decoded.outputs] == (
        [o.name for o in request.request_outputs] if request.request_outputs else list(codec.OUTPUT_DATATYPES)
    )


@FUZZ
@given(data=st.sampled_from(GOOD_IMAGES))
def test_a_good_image_passes_check_image(data: bytes) -> None:
    assert check_image(data, max_pixels=LIMITS.max_image_pixels, max_aspect_ratio=LIMITS.max_aspect_ratio) in (
        "jpeg",
        "png",
        "webp",
    )


# ----------------------------------------------------------------------------- the JPEG header walk


@st.composite
def jpeg_files(draw) -> tuple[bytes, tuple[int, int]]:
    """Real encoder output of many kinds: sizes, grayscale/RGB/CMYK, progressive, restart
    intervals, optimised tables, subsampling, EXIF, ICC profile and comment segments."""
    width, height = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    mode = draw(st.sampled_from(["L", "RGB", "CMYK"]))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, len(mode)), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
    options: dict[str, Any] = {"quality": draw(st.integers(5, 100))}
    if draw(st.booleans()):
        options["progressive"] = True
    if draw(st.booleans()):
        options["optimize"] = True
    if draw(st.booleans()):
        options["restart_marker_blocks"] = draw(st.integers(1, 4))
    if mode == "RGB":
        options["subsampling"] = draw(st.sampled_from([0, 1, 2]))
    if draw(st.booleans()):
        options["exif"] = b"Exif\x00\x00" + bytes(draw(st.integers(0, 200)))
    if draw(st.booleans()):
        options["icc_profile"] = bytes(draw(st.integers(1, 3000)))
    if draw(st.booleans()):
        options["comment"] = b"x" * draw(st.integers(1, 300))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue(), (width, height)


@FUZZ
@given(case=jpeg_files())
def test_the_jpeg_header_walk_reads_the_size_the_encoder_wrote(case: tuple[bytes, tuple[int, int]]) -> None:
    data, size = case
    assert header_size(data, "jpeg") == size
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == size


@FUZZ
@given(case=jpeg_files(), cut=st.floats(0, 1))
def test_a_truncated_jpeg_header_gives_the_size_or_invalid_input(
    case: tuple[bytes, tuple[int, int]], cut: float
) -> None:
    data, size = case
    assert only_invalid_input(lambda: header_size(data[: int(len(data) * cut)], "jpeg")) in (size, None)
