"""The RayService's head and worker pods as KubeRay 1.7 starts them, run with docker or podman.

The pod templates, Ray start parameters and resources come from inferenceservices/ray/rayservice.yaml. What
KubeRay adds to them is written here from its source (ray-project/kuberay v1.7.0,
ray-operator/controllers/ray/):

- common/pod.go `BuildPod`: the Ray container's command becomes `/bin/bash -c -- "ulimit -n ...; ray start ..."`
  (utils/util.go `GetContainerCommand`: no login shell unless the operator sets ENABLE_LOGIN_SHELL), and an
  emptyDir in memory is mounted at /dev/shm for the object store, sized like the container's memory
  (`addEmptyDir`, `makeEmptyDirVolume`, `findMemoryReqOrLimit`);
- common/pod.go `setMissingRayStartParams`: the worker's --address, the head's --dashboard-host,
  --metrics-export-port=8080, --block and --dashboard-agent-listen-port=52365;
- common/pod.go `generateRayStartCommand` and `convertParamMap`: --num-cpus and --memory from the container's
  limits, --num-gpus from its nvidia.com/gpu limit (`addWellKnownAcceleratorResources`), flags sorted;
- common/pod.go `setContainerEnvVars`: the environment of a RayService's Ray containers;
- common/pod.go `initLivenessAndReadinessProbe`: for Ray 2.53 and later, HTTP GET /api/healthz on the dashboard
  agent's port; on a RayService worker, a readiness probe that runs wget against the raylet's agent and the Serve
  proxy (utils/constant.go `BaseWgetHealthCommand`);
- utils/dashboardclient/dashboard_httpclient.go: the RayService controller sends serveConfigV2 to the head's
  dashboard (`UpdateDeployments`: PUT /api/serve/applications/) and reads the applications' status from the
  same path (`GetMultiApplicationStatus`).

The two containers share a network of their own, as two pods share the cluster network; the host reaches only
the ports the tests use, on 127.0.0.1.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from devtools.launcher import free_port
from predictor.ray.config import CLASSIFIER_DEPLOYMENT
from predictor.ray.serve_config import check, localize

from ._engine import MODEL_MOUNT, REPO, Engine, PodSpec, engine_size

RAY_DIR = REPO / "inferenceservices" / "ray"
NETWORK = "predictor-ray-test"
# KubeRay's defaults (utils/constant.go).
GCS_PORT = 6379
DASHBOARD_PORT = 8265
AGENT_PORT = 52365
METRICS_PORT = 8080
NODE_HEALTH_PATH = "/api/healthz"
WGET_HEALTH = "wget --tries 1 -T {timeout_s} -q -O- http://localhost:{port}/{path} | grep success"


def rayservice() -> dict:
    return yaml.safe_load((RAY_DIR / "rayservice.yaml").read_text())


def serve_config() -> dict:
    """serve-config.yaml (the RayService's serveConfigV2) moved to this machine: the model read-only at
    /mnt/models instead of storage_uri, the CPU instead of a GPU, one classifier replica. Its proxies stay on
    every node and its ports stay those of the pods' `serve` and `serve-grpc` ports."""
    cluster = yaml.safe_load((RAY_DIR / "serve-config.yaml").read_text())
    config = localize(
        cluster,
        model_dir=MODEL_MOUNT,
        http_port=cluster["http_options"]["port"],
        grpc_port=cluster["grpc_options"]["port"],
        host=cluster["http_options"]["host"],
    )
    config["proxy_location"] = cluster["proxy_location"]
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            if deployment["name"] == CLASSIFIER_DEPLOYMENT:
                deployment["num_replicas"] = 1
    check(config, source="serve config of the image test")
    return config


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", quantity).groups()
    return int(float(number) * units.get(unit, 1))


def _cpus(quantity: str) -> int:
    # resource.Quantity.Value() rounds up: 500m is 1.
    return -(-int(quantity[:-1]) // 1000) if quantity.endswith("m") else int(float(quantity))


@dataclass(frozen=True)
class RayGroup:
    """The head group or one worker group of the RayService's cluster."""

    head: bool
    pod: dict
    ray_start_params: dict[str, str]

    @classmethod
    def of(cls, service: dict, group: str) -> RayGroup:
        cluster = service["spec"]["rayClusterConfig"]
        if group == "head":
            spec = cluster["headGroupSpec"]
        else:
            spec = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == group)
        pod = spec["template"]["spec"]
        params = {k: str(v) for k, v in (spec.get("rayStartParams") or {}).items()}
        return cls(group == "head", pod, params)

    @property
    def container(self) -> dict:
        return self.pod["containers"][0]

    @property
    def limits(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.container.get("resources", {}).get("limits", {}).items()}

    def port(self, name: str) -> int:
        return next(p["containerPort"] for p in self.container.get("ports", []) if p["name"] == name)

    def ray_start(self, head_host: str) -> str:
        """The `ray start` command KubeRay generates for this group. The GPU limit would become --num-gpus; the
        test's worker runs on this machine's CPU, so it is left out."""
        params = dict(self.ray_start_params)
        if self.head:
            params.setdefault("dashboard-host", "0.0.0.0")
        else:
            params.setdefault("address", f"{head_host}:{GCS_PORT}")
        params.setdefault("metrics-export-port", str(METRICS_PORT))
        params["block"] = "true"
        params.setdefault("dashboard-agent-listen-port", str(AGENT_PORT))
        requests = self.container.get("resources", {}).get("requests", {})
        if "num-cpus" not in params and (cpu := self.limits.get("cpu") or requests.get("cpu")):
            params["num-cpus"] = str(_cpus(str(cpu)))
        if "memory" not in params and (memory := self.limits.get("memory")):
            params["memory"] = str(_bytes(memory))
        flags = []
        for key in sorted(params):
            value = params[key]
            if value.lower() in ("true", "false"):
                flags += [f"--{key}"] if value.lower() == "true" else []
            else:
                flags.append(f"--{key}={value}")
        return " ".join(["ray start", *(["--head"] if self.head else []), *flags])

    def environment(self, head_host: str) -> dict[str, str]:
        """`setContainerEnvVars` for a RayService (the field references resolved as KubeRay's pod would)."""
        ip = "127.0.0.1" if self.head else head_host
        env = {
            "RAY_CLUSTER_NAME": "image-classifier",
            "RAY_CLUSTER_NAMESPACE": "ml-serving",
            "KUBERAY_GEN_RAY_START_CMD": self.ray_start(head_host),
            "RAY_PORT": str(GCS_PORT),
            "RAY_timeout_ms_task_wait_for_death_info": "0",
            "RAY_gcs_server_request_timeout_seconds": "5",
            "RAY_SERVE_KV_TIMEOUT_S": "5",
            "RAY_ADDRESS": f"{ip}:{GCS_PORT}",
            "RAY_USAGE_STATS_KUBERAY_IN_USE": "1",
            "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE": "1",
        }
        if not self.head:
            env |= {"FQ_RAY_IP": head_host, "RAY_IP": head_host}
        return env

    def readiness_command(self) -> str:
        """The readiness probe of a RayService worker (an exec probe: it needs wget and grep in the image)."""
        agent = WGET_HEALTH.format(timeout_s=2, port=AGENT_PORT, path="api/local_raylet_healthz")
        proxy = WGET_HEALTH.format(timeout_s=10, port=self.port("serve"), path="-/healthz")
        return f"{agent} && {proxy}"


@dataclass
class RayNode:
    engine: Engine
    name: str
    group: RayGroup
    published: dict[int, int]  # container port -> host port on 127.0.0.1

    def url(self, container_port: int) -> str:
        return f"http://127.0.0.1:{self.published[container_port]}"

    def target(self, container_port: int) -> str:
        return f"127.0.0.1:{self.published[container_port]}"

    def exec(self, *command: str):
        return self.engine.run("exec", self.name, *command, check=False)

    def running(self) -> bool:
        done = self.engine.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def logs(self) -> str:
        done = self.engine.run("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-4000:]

    def ip(self) -> str:
        template = f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}'
        return self.engine.run("inspect", "--format", template, self.name).stdout.strip()


def start_node(
    engine: Engine, image: str, group: RayGroup, name: str, head_host: str, *, ports: tuple[int, ...], extra=()
) -> RayNode:
    pod = PodSpec.from_pod(group.pod, group.container)
    published = {port: free_port() for port in ports}
    flags = [
        "--name",
        name,
        "--hostname",
        name,
        "--network",
        NETWORK,
        *pod.flags(engine),
        f"--shm-size={engine_size(group.limits['memory'])}",
        *[f"--publish=127.0.0.1:{host}:{port}" for port, host in published.items()],
        *[f"--env={key}={value}" for key, value in group.environment(head_host).items()],
        *extra,
    ]
    command = f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {group.ray_start(head_host)}"
    engine.run("rm", "--force", name, check=False)
    engine.run("run", "--detach", *flags, "--entrypoint", "/bin/bash", image, "-c", "--", command)
    return RayNode(engine, name, group, published)


@dataclass
class RayCluster:
    """A head and one worker of the RayService's `gpu` group, the Serve config deployed as KubeRay deploys it."""

    engine: Engine
    head: RayNode
    worker: RayNode
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, engine: Engine, image: str, model_dir: Path, timeout_s: float = 240) -> RayCluster:
        service = rayservice()
        head_group, worker_group = RayGroup.of(service, "head"), RayGroup.of(service, "gpu")
        engine.run("network", "rm", "--force", NETWORK, check=False)
        engine.run("network", "create", NETWORK)
        head_host = "predictor-ray-head"
        head = start_node(engine, image, head_group, head_host, head_host, ports=(DASHBOARD_PORT, AGENT_PORT))
        cluster = cls(engine, head, head)
        try:
            # KubeRay starts a worker only once the head's GCS answers (its wait-gcs-ready init container).
            cluster._wait(lambda: _get(head.url(DASHBOARD_PORT) + "/api/gcs_healthz") == "success", timeout_s)
            cluster.worker = start_node(
                engine,
                image,
                worker_group,
                "predictor-ray-worker",
                head_host,
                ports=(worker_group.port("serve"), worker_group.port("serve-grpc"), AGENT_PORT),
                extra=("--volume", f"{model_dir}:{MODEL_MOUNT}:ro"),
            )
        except Exception:
            cluster.remove()
            raise
        return cluster

    def deploy(self, config: dict[str, Any], timeout_s: float = 360) -> None:
        """PUT the config to the head's dashboard, then wait until every application is RUNNING and the worker
        passes its readiness probe (the kubelet's condition for sending it traffic)."""
        self.config = config
        url = self.head.url(DASHBOARD_PORT) + "/api/serve/applications/"
        self._wait(lambda: _put(url, config), timeout_s)
        names = [app["name"] for app in config["applications"]]

        def running() -> bool:
            statuses = {name: app["status"] for name, app in self.applications().items()}
            failed = {n: s for n, s in statuses.items() if s in ("DEPLOY_FAILED", "UNHEALTHY")}
            if failed:
                raise RuntimeError(f"applications failed: {self.applications()}")
            return all(statuses.get(name) == "RUNNING" for name in names)

        self._wait(running, timeout_s)
        self._wait(lambda: self.worker.exec("bash", "-c", self.worker.group.readiness_command()).returncode == 0, 60)

    def applications(self) -> dict[str, Any]:
        r = httpx.get(self.head.url(DASHBOARD_PORT) + "/api/serve/applications/", timeout=10)
        r.raise_for_status()
        return r.json().get("applications", {})

    def _wait(self, ready, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in {self.head.name: self.head, self.worker.name: self.worker}.values():
                if not node.running():
                    raise RuntimeError(f"{node.name} exited:\n{node.logs()}")
            try:
                if ready():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"not ready after {timeout_s} s\nhead:\n{self.head.logs()}\nworker:\n{self.worker.logs()}")

    def remove(self) -> None:
        # KubeRay's bash runs `ray start` as a child and, as PID 1, ignores SIGTERM: kill at once.
        now = ["--time", "0"] if self.engine.name == "podman" else []
        for node in (self.worker, self.head):
            self.engine.run("rm", "--force", *now, node.name, check=False)
        self.engine.run("network", "rm", "--force", NETWORK, check=False)


def _get(url: str) -> str:
    r = httpx.get(url, timeout=5)
    return r.text.strip() if r.status_code == 200 else ""


def _put(url: str, config: dict[str, Any]) -> bool:
    """True once the dashboard took the config; False while its Serve module is still starting."""
    r = httpx.put(url, json=config, timeout=30)
    if 400 <= r.status_code < 500:
        raise RuntimeError(f"the dashboard refused the Serve config: {r.status_code} {r.text}")
    return r.status_code == 200
