"""The README's quick start, run as written: every shell command and Python snippet against a real
server started by the quick start's own `make serve`, each answer compared with the one it shows.

How the quick start is read:
- a shell command is one or more lines (a trailing backslash or an open quote continues it); the
  comment lines right below it are its answer, JSON that must be contained in what it prints
  (objects may leave keys out; numbers agree to within `TOLERANCE`, inside strings too);
- in a Python snippet, the comment lines right below a `print(...)` are what it prints, as a
  Python literal, compared the same way;
- `make serve` is started once (with free loopback ports and the test's model directory) and every
  `localhost:8080` / `localhost:8081` points at it; `make test` is the suite this test is part of.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devtools.launcher import free_port
from devtools.photos import jpeg

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MODEL_NAME = "efficientnet-lite0"
HTTP_PORT, GRPC_PORT = 8080, 8081
TOLERANCE = 0.002  # the README rounds probabilities to 3 decimals
NOT_RUN = {"make test": "the suite this test belongs to"}
COMMAND_TIMEOUT_S = 120


@dataclass
class Example:
    kind: str  # "shell" or "python"
    code: str
    line: int  # in README.md, for messages
    answers: list[str] = field(default_factory=list)  # shell: one answer; python: one per print, in order


# ----------------------------------------------------------------------------- reading the README


def quick_start(readme: str) -> list[Example]:
    """The examples of the "## Quick start" section, up to its first sub-heading."""
    lines = readme.splitlines()
    start = lines.index("## Quick start")
    end = next(i for i in range(start + 1, len(lines)) if re.match(r"#{2,3} ", lines[i]))
    examples: list[Example] = []
    i = start
    while i < end:
        fence = re.fullmatch(r"```(\w+)", lines[i])
        if fence is None:
            i += 1
            continue
        close = lines.index("```", i + 1)
        body = lines[i + 1 : close]
        if fence.group(1) == "bash":
            examples += _shell_examples(body, first_line=i + 2)
        elif fence.group(1) == "python":
            examples.append(_python_example(body, first_line=i + 2))
        i = close + 1
    return examples


def _shell_examples(body: list[str], first_line: int) -> list[Example]:
    examples: list[Example] = []
    i = 0
    while i < len(body):
        line = body[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start, command = i, [line]
        while not _complete(command):
            i += 1
            command.append(body[i])
        i += 1
        answer = []
        while i < len(body) and body[i].startswith("#"):
            answer.append(body[i][1:])
            i += 1
        example = Example("shell", "\n".join(command), first_line + start)
        if answer:
            example.answers.append("\n".join(answer))
        examples.append(example)
    return examples


def _complete(lines: list[str]) -> bool:
    if lines[-1].endswith("\\"):
        return False
    try:
        shlex.split("\n".join(lines), comments=True)
    except ValueError:  # an open quote: the command goes on
        return False
    return True


def _python_example(body: list[str], first_line: int) -> Example:
    example = Example("python", "\n".join(body), first_line)
    for i, line in enumerate(body):
        if not line.strip().startswith("print("):
            continue
        answer = []
        for following in body[i + 1 :]:
            if not following.strip().startswith("#"):
                break
            answer.append(following.strip()[1:])
        example.answers.append("\n".join(answer))
    return example


# ----------------------------------------------------------------------------- comparing answers


def differences(expected: object, actual: object, where: str = "answer") -> list[str]:
    """How `actual` fails to contain `expected` (empty: it does)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        out = []
        for key, value in expected.items():
            if key not in actual:
                out.append(f"{where}: no key {key!r}")
            else:
                out += differences(value, actual[key], f"{where}.{key}")
        return out
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
            return [f"{where}: expected {expected!r}, got {actual!r}"]
        return [
            d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for d in differences(e, a, f"{where}[{i}]")
        ]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return [] if abs(expected - actual) <= TOLERANCE else [f"{where}: expected {expected}, got {actual}"]
    if isinstance(expected, (str, bytes)) and type(actual) is type(expected):
        return [] if _same_text(expected, actual) else [f"{where}: expected {expected!r}, got {actual!r}"]
    return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]


def _same_text(expected: str | bytes, actual: str | bytes) -> bool:
    decimal = r"(\d+\.\d+)" if isinstance(expected, str) else rb"(\d+\.\d+)"
    e, a = re.split(decimal, expected), re.split(decimal, actual)  # type: ignore[arg-type]
    if len(e) != len(a):
        return False
    # Odd parts are the decimals.
    return all(
        x == y if i % 2 == 0 else abs(float(x) - float(y)) <= TOLERANCE
        for i, (x, y) in enumerate(zip(e, a, strict=True))
    )


# ----------------------------------------------------------------------------- running it


@dataclass(frozen=True)
class Served:
    http_port: int
    grpc_port: int

    def point(self, code: str) -> str:
        """The example aimed at the test's server instead of the default ports."""
        return code.replace(f"localhost:{HTTP_PORT}", f"127.0.0.1:{self.http_port}").replace(
            f"localhost:{GRPC_PORT}", f"127.0.0.1:{self.grpc_port}"
        )


def run_quick_start(readme: str, served: Served, workdir: Path) -> list[str]:
    """Every example of the quick start, run; the problems, each naming the README line."""
    problems = []
    for example in quick_start(readme):
        if example.kind == "shell" and example.code.split("#")[0].strip() in ("make serve", *NOT_RUN):
            continue
        run = _run_shell if example.kind == "shell" else _run_python
        problems += [f"README.md:{example.line}: {p}" for p in run(example, served, workdir)]
    return problems


def _environment() -> dict[str, str]:
    # The project's venv first: its python, grpcurl and friends are what the quick start means.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=workdir, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=_environment()
    )


def _run_shell(example: Example, served: Served, workdir: Path) -> list[str]:
    done = _run(["bash", "-c", served.point(example.code)], workdir)
    if done.returncode != 0:
        return [f"exited {done.returncode}: {done.stderr.strip()[-500:] or done.stdout.strip()[-500:]}"]
    if not example.answers:
        return []
    try:
        actual = json.loads(done.stdout)
    except ValueError:
        return [f"did not answer JSON: {done.stdout.strip()[:500]}"]
    problems = differences(json.loads(example.answers[0]), actual)
    return problems + [f"it answered {done.stdout.strip()[:500]}"] if problems else []


def _run_python(example: Example, served: Served, workdir: Path) -> list[str]:
    done = _run([sys.executable, "-c", served.point(example.code)], workdir)
    if done.returncode != 0:
        return [f"exited {done.returncode}: {done.stderr.strip()[-800:]}"]
    printed = done.stdout.splitlines()
    if len(printed) != len(example.answers):
        return [f"printed {len(printed)} lines, the README shows {len(example.answers)} answers: {printed}"]
    problems = []
    for expected, actual in zip(example.answers, printed, strict=True):
        try:
            problems += differences(ast.literal_eval(expected.strip()), ast.literal_eval(actual))
        except (ValueError, SyntaxError):
            problems.append(f"printed {actual!r}, the README shows {expected.strip()!r}")
    return problems


# ----------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Where the examples run: `cat.jpg` is a photo of a tabby cat (scikit-image's `chelsea`)."""
    directory = tmp_path_factory.mktemp("quick-start")
    (directory / "cat.jpg").write_bytes(jpeg("chelsea"))
    return directory


@pytest.fixture(scope="module")
def served(default_model_dir, tmp_path_factory):
    """The quick start's own `make serve`, on free loopback ports, serving the test's default model.

    Installing is `make test`'s job, done before this runs: `-o` keeps make from redoing it."""
    commands = [e.code.split("#")[0].strip() for e in quick_start(README.read_text()) if e.kind == "shell"]
    assert "make serve" in commands, commands
    venv = Path(sys.executable).parent.parent
    ports = Served(free_port(), free_port())
    log_path = tmp_path_factory.mktemp("make-serve") / "make-serve.log"
    make = [
        "make",
        "--no-print-directory",
        "-o",
        "install",
        "-o",
        f"{venv}/.installed",
        "serve",
        f"VENV={venv}",
        f"MODEL_DIR={default_model_dir}",
        f"HTTP_PORT={ports.http_port}",
        f"GRPC_PORT={ports.grpc_port}",
        "SERVE_ARGS=--bind_address 127.0.0.1",
    ]
    with open(log_path, "wb") as log:
        # Its own process group: make and the server it starts are stopped together.
        process = subprocess.Popen(make, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(process, ports, log_path)
        yield ports
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_ready(process: subprocess.Popen, ports: Served, log_path: Path, timeout_s: float = 180) -> None:
    url = f"http://127.0.0.1:{ports.http_port}/v2/models/{MODEL_NAME}/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"make serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"make serve not ready after {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")


def test_the_quick_start_shows_every_way_in():
    examples = quick_start(README.read_text())
    shell = [e.code.split("#")[0].strip() for e in examples if e.kind == "shell"]
    assert shell[:2] == ["make serve", "make test"]
    assert [c.split()[0] for c in shell[2:]] == ["curl", "curl", "grpcurl"]
    assert sum(e.kind == "python" for e in examples) == 2
    # Every example that is run shows its answer.
    assert all(
        e.answers and all(e.answers) for e in examples if e.code.split("#")[0].strip() not in ("make serve", *NOT_RUN)
    )


def test_the_quick_start_runs_as_written(served, workdir):
    assert run_quick_start(README.read_text(), served, workdir) == []


BROKEN = {
    # A command the server refuses: the v2 example with a wrong datatype.
    "refused request": (
        '\\"datatype\\": \\"BYTES\\", \\"shape\\": [1], \\"data\\"',
        '\\"datatype\\": \\"FP32\\", \\"shape\\": [1], \\"data\\"',
    ),
    # An answer that is not what comes back.
    "wrong answer": (
        '#                   "class_indices": [285, 282, 281]',
        '#                   "class_indices": [285, 281, 282]',
    ),
    # A snippet that fails: an output the model does not have.
    "failing snippet": ('InferRequestedOutput("probabilities"', 'InferRequestedOutput("probs"'),
    # A number that is off by more than rounding.
    "wrong score": ("b'0.365041:282:tiger cat'", "b'0.395041:282:tiger cat'"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_example_fails_the_check(served, workdir, case):
    old, new = BROKEN[case]
    readme = README.read_text()
    assert readme.count(old) == 1, f"the README no longer has {old!r}"
    broken = readme.replace(old, new)
    problems = run_quick_start(broken, served, workdir)
    assert problems, "the broken example passed"
    # Every problem is the broken example's: the last one that starts at or before the change.
    changed_line = broken[: broken.index(new)].count("\n") + 1
    starts = [e.line for e in quick_start(broken) if e.line <= changed_line]
    assert {int(p.split(":")[1]) for p in problems} == {max(starts)}, problems
