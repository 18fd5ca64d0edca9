"""Run the built image the way the ServingRuntime runs it on Kubernetes, with docker or podman.

The pod's facts (user, read-only root, its emptyDir mounts, dropped capabilities) are read from the
ServingRuntime manifest in inferenceservices/, so the container here is the one the cluster would start.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
MODEL_MOUNT = "/mnt/models"
HTTP_PORT, GRPC_PORT = 8080, 8081


def engine_env() -> dict[str, str]:
    """The environment the engine runs in: the project's podman settings unless the caller set their own."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(REPO / "scripts" / "image" / "containers.conf"))
    return env


@dataclass(frozen=True)
class Engine:
    name: str  # "docker" or "podman"

    def run(self, *args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([self.name, *args], capture_output=True, text=True, timeout=timeout_s, env=engine_env())
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def has_image(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0


@dataclass(frozen=True)
class PodSpec:
    """What the ServingRuntime's container spec asks of the runtime."""

    user: str
    read_only_root: bool
    writable_paths: dict[str, str]  # mount path -> emptyDir sizeLimit
    drop_capabilities: tuple[str, ...]
    no_new_privileges: bool

    @classmethod
    def from_serving_runtime(cls) -> PodSpec:
        runtime = _serving_runtime()
        return cls.from_pod(runtime["spec"], runtime["spec"]["containers"][0])

    @classmethod
    def from_pod(cls, pod: dict, container: dict) -> PodSpec:
        """A pod spec (or a ServingRuntime's, which has the same fields) and one of its containers, whose
        securityContext overrides the pod's field by field, as in Kubernetes."""
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        sizes = {v["name"]: v.get("emptyDir", {}).get("sizeLimit", "") for v in pod.get("volumes", [])}
        return cls(
            user=f"{security['runAsUser']}:{security['runAsGroup']}",
            read_only_root=security.get("readOnlyRootFilesystem", False),
            writable_paths={m["mountPath"]: sizes.get(m["name"], "") for m in container.get("volumeMounts", [])},
            drop_capabilities=tuple(security.get("capabilities", {}).get("drop", ())),
            no_new_privileges=security.get("allowPrivilegeEscalation") is False,
        )

    def flags(self, engine: Engine) -> list[str]:
        flags = ["--user", self.user]
        if self.read_only_root:
            flags.append("--read-only")
            if engine.name == "podman":
                flags.append("--read-only-tmpfs=false")  # podman would add tmpfs on /tmp, /var/tmp, /run
        for path, size in self.writable_paths.items():
            # An emptyDir: empty, mode 0777, at most sizeLimit.
            options = "rw,mode=0777" + (f",size={engine_size(size)}" if size else "")
            flags += ["--tmpfs", f"{path}:{options}"]
        flags += [f"--cap-drop={cap}" for cap in self.drop_capabilities]
        if self.no_new_privileges:
            flags += ["--security-opt", "no-new-privileges"]
        return flags


# Run inside the container as its user: its uid and gid, and which of the directories it can write to.
_WRITABLE_PROBE = """import json, os, pathlib, sys
def writable(d):
    try:
        (pathlib.Path(d) / 'probe').write_text('x'); return True
    except OSError: return False
print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'writable': sorted(d for d in sys.argv[1:] if writable(d))}))
"""


def who_writes(exec_: Callable[..., subprocess.CompletedProcess], dirs: list[str]) -> dict:
    """`{"uid", "gid", "writable"}` as the container's process sees them (`writable` sorted)."""
    probe = exec_("python", "-c", _WRITABLE_PROBE, *dirs)
    assert probe.returncode == 0, probe.stderr
    return json.loads(probe.stdout)


def engine_size(quantity: str) -> str:
    """A Kubernetes binary quantity (16Gi) as docker and podman write sizes (16g)."""
    return quantity[:-1].lower() if quantity.endswith("i") else quantity


def _serving_runtime() -> dict:
    for path in sorted((REPO / "inferenceservices").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "ServingRuntime":
                return document
    raise FileNotFoundError("no ServingRuntime manifest under inferenceservices/")


@dataclass
class Container:
    engine: Engine
    name: str
    http_url: str
    grpc_target: str
    model_name: str
    stopped: bool = field(default=False)

    @classmethod
    def start(
        cls,
        engine: Engine,
        image: str,
        name: str,
        *flags: str,
        ports: tuple[int, int],
        publish: bool = True,
        args: tuple[str, ...] = (),
        model_name: str = "classifier",
    ) -> Container:
        """Starts the image's own entrypoint. `ports`: where the host reaches REST and gRPC; `publish` maps them
        to the container's 8080 and 8081 on 127.0.0.1 (off for a container on the host's network)."""
        published: list[str] = []
        if publish:
            published = ["-p", f"127.0.0.1:{ports[0]}:{HTTP_PORT}", "-p", f"127.0.0.1:{ports[1]}:{GRPC_PORT}"]
        engine.run("rm", "--force", name, check=False)
        engine.run("run", "--detach", "--name", name, *published, *flags, image, "--model_name", model_name, *args)
        return cls(engine, name, f"http://127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", model_name)

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.name} exited with {self.exit_code()} before ready:\n{self.logs()}")
            try:
                if httpx.get(f"{self.http_url}/v2/models/{self.model_name}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s:\n{self.logs()}")

    def inspect(self, template: str) -> str:
        return self.engine.run("inspect", "--format", template, self.name).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-6000:]

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return self.engine.run("exec", self.name, *command, check=False)

    def stop(self, timeout_s: int) -> None:
        """SIGTERM, then SIGKILL after timeout_s: what the kubelet does with terminationGracePeriodSeconds."""
        self.engine.run("stop", "--time", str(timeout_s), self.name, timeout_s=timeout_s + 60)
        self.stopped = True

    def remove(self) -> None:
        self.engine.run("rm", "--force", self.name, check=False)
