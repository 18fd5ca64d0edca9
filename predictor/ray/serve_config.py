"""The Serve config, checked strictly, and its local variant for `make serve-ray`.

Ray's `ServeDeploySchema` ignores keys it does not know, so `num_replica: 4` deploys one
replica without a word. `check` parses with Ray's schema and also refuses every key that
schema does not declare, then validates the application's `args` with `AppArgs`, which
refuses unknown keys itself.

    python -m predictor.ray.serve_config check CONFIG.yaml [CONFIG ...]
    python -m predictor.ray.serve_config local CONFIG.yaml --model_dir DIR --http_port P --grpc_port P
    python -m predictor.ray.serve_config check-rayservice RENDERED.yaml   # every RayService in it
    kubectl kustomize inferenceservices/ray | python -m predictor.ray.serve_config render - \
        --namespace NS --image IMAGE [--storage_uri URI]
"""

from __future__ import annotations

import argparse
import copy
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from ray.serve.schema import ServeDeploySchema

from .app import AppArgs

APP_IMPORT_PATH = "predictor.ray.app:build_app"


class ServeConfigError(ValueError):
    pass


def check(config: Any, *, source: str = "serve config") -> ServeDeploySchema:
    """Ray's schema, no unknown key anywhere, and valid `args` for this project's application."""
    if not isinstance(config, dict):
        raise ServeConfigError(f"{source}: expected a mapping, got {type(config).__name__}")
    problems = unknown_keys(ServeDeploySchema, config)
    if problems:
        raise ServeConfigError(f"{source}: unknown keys (misspelt?): {', '.join(problems)}")
    try:
        schema = ServeDeploySchema.model_validate(config)
    except ValidationError as e:
        raise ServeConfigError(f"{source}: {e}") from e
    for i, app in enumerate(schema.applications):
        if app.import_path != APP_IMPORT_PATH:
            continue
        try:
            AppArgs.model_validate(app.args or {})
        except ValidationError as e:
            raise ServeConfigError(f"{source}: applications[{i}].args: {e}") from e
    return schema


def unknown_keys(model: type[BaseModel], data: Any, where: str = "") -> list[str]:
    """Paths of keys in `data` that `model` (recursively) does not declare."""
    if not isinstance(data, dict):
        return []
    known: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        known[name] = field.annotation
        if field.alias:
            known[field.alias] = field.annotation
    problems: list[str] = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            problems.append(path)
            continue
        problems.extend(_unknown_in(known[key], value, path))
    return problems


def _unknown_in(annotation: Any, value: Any, path: str) -> list[str]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _is_model(a) or typing.get_origin(a) in (list, list)]
        return _unknown_in(models[0], value, path) if len(models) == 1 else []
    if origin in (list, list) and isinstance(value, list):
        (item,) = typing.get_args(annotation) or (Any,)
        return [p for i, v in enumerate(value) for p in _unknown_in(item, v, f"{path}[{i}]")]
    if _is_model(annotation):
        return unknown_keys(annotation, value, path)
    return []


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def serve_configs_of(documents: list[Any]) -> list[tuple[str, Any]]:
    """(name, parsed serveConfigV2) of every RayService among Kubernetes objects."""
    found = []
    for obj in documents:
        if isinstance(obj, dict) and obj.get("kind") == "RayService":
            name = obj.get("metadata", {}).get("name", "?")
            text = obj.get("spec", {}).get("serveConfigV2")
            if not isinstance(text, str):
                raise ServeConfigError(f"RayService {name}: spec.serveConfigV2 must be a YAML string")
            found.append((name, yaml.safe_load(text)))
    return found


def render(documents: list[Any], *, namespace: str, image: str, storage_uri: str | None) -> list[Any]:
    """The manifests as deploy-ray applies them: namespace, image, and the model's storage URI
    (in serveConfigV2, whose every copy is checked again afterwards)."""
    out = copy.deepcopy(documents)
    for obj in out:
        if not isinstance(obj, dict):
            continue
        obj.setdefault("metadata", {})["namespace"] = namespace
        if obj.get("kind") != "RayService":
            continue
        cluster = obj["spec"]["rayClusterConfig"]
        for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
            for container in group["template"]["spec"]["containers"]:
                container["image"] = image
        if storage_uri:
            config = yaml.safe_load(obj["spec"]["serveConfigV2"])
            for app in config.get("applications", []):
                if app.get("import_path") == APP_IMPORT_PATH:
                    app.setdefault("args", {})["storage_uri"] = storage_uri
            obj["spec"]["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)
    for name, config in serve_configs_of(out):
        check(config, source=f"RayService {name} serveConfigV2")
    return out


def localize(
    config: dict[str, Any], *, model_dir: str, http_port: int, grpc_port: int, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """The cluster config for one machine: this model directory, loopback ports, CPU, replicas
    sized to the cores, one proxy."""
    local = copy.deepcopy(config)
    local["proxy_location"] = "HeadOnly"
    local["http_options"] = {**local.get("http_options", {}), "host": host, "port": http_port}
    local["grpc_options"] = {**local.get("grpc_options", {}), "port": grpc_port}
    local.pop("logging_config", None)  # plain text on a terminal
    for app in local.get("applications", []):
        if app.get("import_path") != APP_IMPORT_PATH:
            continue
        args = app.setdefault("args", {})
        # Two CPU replicas and the ingress on two cores: Ray counts logical CPUs, and gives each
        # replica one intra-op thread for a fraction.
        args.update(model_dir=str(Path(model_dir).resolve()), storage_uri=None, device="auto", num_gpus=0, num_cpus=0.5)
        args.pop("precision", None)
        for deployment in app.get("deployments", []):
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = 1 if deployment.get("name") == "Ingress" else 2
    return local


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as readable `|` blocks."""


_BlockStrings.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m predictor.ray.serve_config", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="check Serve config files strictly")
    check_cmd.add_argument("paths", nargs="+")
    rs = sub.add_parser("check-rayservice", help="check the serveConfigV2 of every RayService in manifests")
    rs.add_argument("paths", nargs="+", help="YAML files, - for standard input")
    render_cmd = sub.add_parser("render", help="set namespace, image and storage URI in rendered manifests; check them")
    render_cmd.add_argument("path", help="YAML file, - for standard input")
    render_cmd.add_argument("--namespace", required=True)
    render_cmd.add_argument("--image", required=True)
    render_cmd.add_argument("--storage_uri", default="")
    local = sub.add_parser("local", help="print the config for this machine")
    local.add_argument("path")
    local.add_argument("--model_dir", required=True)
    local.add_argument("--http_port", type=int, default=8000)
    local.add_argument("--grpc_port", type=int, default=9000)
    local.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            for path in args.paths:
                check(yaml.safe_load(Path(path).read_text()), source=path)
                print(f"{path}: ok")
        elif args.command == "check-rayservice":
            for path in args.paths:
                text = sys.stdin.read() if path == "-" else Path(path).read_text()
                configs = serve_configs_of(list(yaml.safe_load_all(text)))
                if not configs:
                    raise ServeConfigError(f"{path}: no RayService found")
                for name, config in configs:
                    check(config, source=f"RayService {name} serveConfigV2")
                    print(f"RayService {name}: serveConfigV2 ok", file=sys.stderr)
        elif args.command == "render":
            text = sys.stdin.read() if args.path == "-" else Path(args.path).read_text()
            documents = [d for d in yaml.safe_load_all(text) if d]
            rendered = render(
                documents, namespace=args.namespace, image=args.image, storage_uri=args.storage_uri or None
            )
            yaml.dump_all(rendered, sys.stdout, Dumper=_BlockStrings, sort_keys=False)
        else:
            config = yaml.safe_load(Path(args.path).read_text())
            check(config, source=args.path)
            local_config = localize(
                config, model_dir=args.model_dir, http_port=args.http_port, grpc_port=args.grpc_port, host=args.host
            )
            check(local_config, source="local config")
            yaml.safe_dump(local_config, sys.stdout, sort_keys=False)
    except (OSError, yaml.YAMLError, ServeConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
